"""tierwise replay: trace loading, the three policies, the corpus and the issue's targets."""

from __future__ import annotations

import asyncio
import datetime as dt
import gzip
import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tests.sessions_corpus import CORPUS, claude_code_body, generate
from tierwise import config
from tierwise.errors import InputError
from tierwise.gateway.shape import analyse
from tierwise.ledger import open_store
from tierwise.router import Router
from tierwise.sessions.replay import (
    Replayer,
    ReplayReport,
    TraceRequest,
    expand,
    filler,
    load_requests,
    requests_from_ledger,
)
from tierwise.types import LedgerEntry, Usage


def settings(**overrides: Any) -> config.Settings:
    return config.load(environ={}, provider={"kind": "simulated"}, **overrides)


def replay(requests: list[TraceRequest], s: config.Settings | None = None) -> ReplayReport:
    s = s or settings()
    return asyncio.run(Replayer(s, decide=Router(s).decide).run(requests))


def write_lines(path: Path, lines: list[Any]) -> Path:
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def test_filler_is_deterministic_and_seeded() -> None:
    assert filler(100, 3) == filler(100, 3)
    assert filler(100, 3) != filler(100, 4)
    assert len(filler(12_345, 9)) == 12_345
    assert expand({"a": [{"$fill": 5, "seed": 1, "prefix": "<", "suffix": ">"}]}) == {
        "a": ["<" + filler(5, 1) + ">"]
    }
    with pytest.raises(ValueError, match="must be"):
        expand({"$fill": "5"})
    with pytest.raises(ValueError, match="length"):
        filler(-1, 0)


def test_compact_trace_lines_build_full_bodies(tmp_path: Path) -> None:
    trace = write_lines(
        tmp_path / "t.jsonl",
        [
            {"type": "envelope", "id": "env", "tools": [{"name": "Read", "input_schema": {}}]},
            {
                "type": "request",
                "session": "s1",
                "t": 0,
                "envelope": "env",
                "params": {"model": "auto", "max_tokens": 100},
                "system": [{"type": "text", "text": {"$fill": 50, "seed": 1}}],
                "keep": 0,
                "append": [{"role": "user", "content": [{"type": "text", "text": "Fix it"}]}],
                "mark_last": 1,
                "response": {"output_tokens": 40, "stop_reason": "tool_use"},
                "label": "sonnet",
            },
            {
                "type": "request",
                "session": "s1",
                "t": 5,
                "envelope": "env",
                "params": {"model": "auto", "max_tokens": 100},
                "keep": 1,
                "append": [
                    {
                        "role": "assistant",
                        "content": [{"type": "tool_use", "id": "t1", "name": "Read", "input": {}}],
                    },
                    {
                        "role": "user",
                        "content": [
                            {
                                "type": "tool_result",
                                "tool_use_id": "t1",
                                "content": {"$fill": 4000, "seed": 2},
                            }
                        ],
                    },
                ],
                "mark_last": 1,
                "response": {"output_tokens": 10},
            },
        ],
    )
    first, second = load_requests(trace)
    assert first.body is not None
    assert second.body is not None
    assert first.body["tools"] == [{"name": "Read", "input_schema": {}}]
    assert len(first.body["system"][0]["text"]) == 50
    assert first.body["messages"][0]["content"][-1]["cache_control"] == {"type": "ephemeral"}
    # the breakpoint moved: the kept message lost it, the new last block has it
    assert "cache_control" not in second.body["messages"][0]["content"][-1]
    assert second.body["messages"][-1]["content"][-1]["cache_control"] == {"type": "ephemeral"}
    assert len(second.body["messages"][-1]["content"][-1]["content"]) == 4000
    assert (first.shape.kind, second.shape.kind) == ("turn", "continuation")
    assert (first.session, first.output_tokens, first.label) == ("s1", 40, "sonnet")


def test_plain_request_lines_and_captured_usage(tmp_path: Path) -> None:
    body = claude_code_body("Fix the failing test")
    shape = analyse(body)
    real = int(shape.input_tokens * 1.2)
    trace = write_lines(
        tmp_path / "r.jsonl",
        [
            body,
            {
                "body": body,
                "t": 30,
                "headers": {"X-Tierwise-Session": "abc"},
                "response": {
                    "usage": {"input_tokens": real, "output_tokens": 77},
                    "stop_reason": "end_turn",
                },
            },
        ],
    )
    bare, wrapped = load_requests(trace, gap_s=7.0)
    assert bare.t == 0.0
    assert bare.session == "5f0c3a52-0000-4000-8000-000000000001"  # from metadata.user_id
    assert wrapped.t == 30.0
    assert wrapped.headers == {"x-tierwise-session": "abc"}
    assert wrapped.output_tokens == 77
    assert wrapped.token_scale == pytest.approx(1.2, rel=1e-3)
    assert bare.token_scale == 1.0
    gz = tmp_path / "r.jsonl.gz"
    gz.write_bytes(gzip.compress(trace.read_bytes()))
    assert len(load_requests(gz)) == 2


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "expected a JSON object"),
        ('{"foo": 1}', "expected a request body"),
        ('{"messages": []}', 'no "model"'),
        ('{"type": "request", "session": "s", "keep": 3, "append": []}', "keep=3"),
        ('{"type": "request", "session": "s", "envelope": "nope"}', "unknown envelope"),
        ('{"body": {"model": "auto", "messages": []}, "t": "soon"}', '"t" must be'),
    ],
)
def test_bad_trace_lines_name_the_file_and_line(tmp_path: Path, line: str, message: str) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"model": "auto", "messages": []}\n' + line + "\n")
    with pytest.raises(InputError, match=rf"bad\.jsonl:2: .*{message}"):
        load_requests(path)


def test_unreadable_inputs(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="cannot read"):
        load_requests(tmp_path / "missing.jsonl")
    broken = tmp_path / "broken.gz"
    broken.write_bytes(b"\x1f\x8b" + b"garbage")
    with pytest.raises(InputError, match="gzip"):
        load_requests(broken)


def test_the_committed_corpus_is_what_the_generator_writes() -> None:
    assert gzip.decompress(CORPUS.read_bytes()) == generate()


@pytest.fixture(scope="module")
def corpus() -> list[TraceRequest]:
    return load_requests(CORPUS)


@pytest.fixture(scope="module")
def full(corpus: list[TraceRequest]) -> ReplayReport:
    return replay(corpus)


def test_the_corpus_has_claude_codes_shapes(corpus: list[TraceRequest]) -> None:
    sessions = {r.session for r in corpus}
    assert len(sessions) >= 200
    firsts = [r for r in corpus if r.thread.endswith("/main") and r.shape.messages == 2]
    assert len(firsts) == len(sessions)
    for r in firsts:
        assert r.shape.agent == "claude-code"
        assert r.shape.tools == 24
        assert len(r.shape.cache.breakpoints) == 3
        assert r.body is not None
        size = len(json.dumps(r.body))
        assert 70_000 < size < 110_000  # ~80 KB, as Claude Code 2.1.197 sends
    kinds = {r.shape.kind for r in corpus}
    assert kinds == {"turn", "continuation"}
    titles = [r for r in corpus if r.thread.endswith("/title")]
    assert len(titles) == len(sessions)


def test_replay_policies_on_the_corpus(full: ReplayReport) -> None:
    p = full.policies
    top, per, env, ses = p["top"], p["per-request"], p["envelope"], p["session"]
    assert top.requests == per.requests == env.requests == ses.requests == full.requests
    assert set(top.by_tier) == {"opus"}
    assert top.cost_usd > per.cost_usd
    assert top.cost_usd > ses.cost_usd
    assert per.classifier_runs == full.requests
    assert ses.classifier_runs < full.requests / 3  # turns only
    # the invariant: no tier change on a continuation without a recorded rule
    assert ses.unexplained_changes == 0
    assert per.unexplained_changes > 0  # per-request routing does flip inside tool loops
    assert ses.rules["utility"] == len(full.sessions)  # every title request
    assert ses.cost_usd <= per.cost_usd
    data = full.as_json()
    assert [x["policy"] for x in data["policies"]] == ["top", "envelope", "per-request", "session"]


@pytest.mark.xfail(
    strict=True,
    reason="issue 13 target not met on this corpus: session routing costs ~84% of all-top "
    "(EVALUATION.md, 'Session routing'); the classifier's opus turns drive it",
)
def test_target_session_routing_at_most_half_of_all_top(full: ReplayReport) -> None:
    assert full.policies["session"].cost_usd <= full.top_cost / 2


def test_target_session_routing_never_costlier_than_per_request(full: ReplayReport) -> None:
    """Issue 13's per-session target, except where session routing escalated a tool loop for
    tool errors: a quality decision per-request routing never makes, whose benefit the replay
    cannot value (the trace is the same on every tier; EVALUATION.md)."""
    worse = full.session_worse()
    unexplained = [
        (name, str(ses - per), dict(full.loop_escalations.get(name) or {}))
        for name, ses, per in worse
        if (full.loop_escalations.get(name) or Counter())["tool-errors"] == 0
    ]
    assert unexplained == []
    assert len(worse) <= sum(1 for c in full.loop_escalations.values() if c.get("tool-errors"))
    listed = full.as_json()["sessions_session_costlier_than_per_request"]
    assert all(w["loop_escalations"].get("tool-errors") for w in listed)


def test_replay_from_the_ledger(tmp_path: Path) -> None:
    """Rows recorded with their session shape replay without any text."""
    s = settings(home=tmp_path)
    store = open_store(s)
    body = claude_code_body("Fix the failing test")
    shape = analyse(body)
    t0 = dt.datetime(2026, 11, 27, 12, tzinfo=dt.UTC)
    entries = []
    for i in range(3):
        record = shape.record()
        record["classified_tier"] = "sonnet" if i == 0 else None
        record["stop_reason"] = "tool_use"
        entries.append(
            LedgerEntry(
                request_id=f"r{i}",
                ts=t0 + dt.timedelta(seconds=10 * i),
                source="gateway",
                status="ok",
                requested_model="auto",
                tier="sonnet",
                model="claude-sonnet-4-6",
                usage=Usage(
                    input_tokens=10, cache_read_tokens=shape.input_tokens, output_tokens=90
                ),
                session_id="sess-1",
                session_rule="new-session" if i == 0 else "continuation",
                session_shape=record if i == 0 else {**record, "kind": "continuation"},
            )
        )
    entries.append(LedgerEntry(request_id="plain", ts=t0, source="gateway", status="ok"))
    store.insert(entries)
    try:
        requests = requests_from_ledger(store, since=t0 - dt.timedelta(days=1))
    finally:
        store.close()
    assert [r.session for r in requests] == ["sess-1"] * 3
    assert requests[0].recorded_tier == "sonnet"
    report = replay(requests, s)
    assert report.policies["envelope"].requests == 0  # no bodies, no envelope to read
    assert report.policies["session"].by_tier == {"sonnet": 3}
    assert report.policies["session"].classifier_runs == 1

"""``tierwise replay`` on traffic captured without tierwise: claude-trace logs, tierwise's own
recorder, pretty-printed JSON files and directories, and requests naming real models."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tests.sessions_corpus import claude_code_body
from tests.test_cli_replay import run
from tierwise import config
from tierwise.errors import InputError
from tierwise.gateway.sse import message_to_sse
from tierwise.router import Router
from tierwise.sessions.replay import Replayer, load_requests, replay_as_auto

FIXTURES = Path(__file__).parent / "data" / "claude_code"
T0 = 1_790_000_000.25
MAIN = "claude-opus-4-6"
SMALL = "claude-haiku-4-5-20251001"
API = "https://api.anthropic.com/v1/messages?beta=true"


def settings() -> config.Settings:
    return config.load(environ={}, provider={"kind": "simulated"})


def stream(usage: dict[str, int], stop: str, content: list[dict[str, Any]]) -> str:
    """A recorded Messages event stream, as the API sends it (the gateway's own encoder)."""
    message = {
        "id": "msg_01",
        "type": "message",
        "role": "assistant",
        "model": MAIN,
        "content": content,
        "stop_reason": stop,
        "stop_sequence": None,
        "usage": usage,
    }
    return message_to_sse(message).decode()


def pair(
    body: dict[str, Any] | None,
    t: float,
    response: dict[str, Any] | None,
    url: str = API,
    method: str = "POST",
) -> dict[str, Any]:
    """One line of claude-trace's log: request (seconds timestamp, headers, parsed body) and
    response (status, then ``body`` for JSON or ``body_raw`` for an event stream)."""
    return {
        "request": {
            "timestamp": t,
            "method": method,
            "url": url,
            "headers": {"x-api-key": "sk-ant-ap...abcd", "user-agent": "claude-cli/2.1.332"},
            "body": body,
        },
        "response": response,
        "logged_at": "2026-09-21T12:00:00.000Z",
    }


def session_log(tmp_path: Path) -> Path:
    """A Claude Code session captured talking to the API directly on its default model."""
    first = claude_code_body("Rename variable x to count in foo.py") | {"model": MAIN}
    use = {"type": "tool_use", "id": "toolu_1", "name": "Read", "input": {"file_path": "foo.py"}}
    result = {"type": "tool_result", "tool_use_id": "toolu_1", "content": "x = 1\n" * 400}
    second = first | {
        "messages": [
            *first["messages"],
            {"role": "assistant", "content": [use]},
            {"role": "user", "content": [result]},
        ]
    }
    side = {
        "model": SMALL,
        "max_tokens": 512,
        "metadata": first["metadata"],  # Claude Code sends it on every request
        "messages": [{"role": "user", "content": "Is this a new topic? foo.py rename"}],
    }
    first_usage = {
        "input_tokens": 12,
        "cache_creation_input_tokens": 30_000,
        "cache_read_input_tokens": 0,
        "output_tokens": 64,
    }
    lines = [
        pair(first, T0, {"status_code": 200, "body_raw": stream(first_usage, "tool_use", [use])}),
        pair(
            side,
            T0 + 1.5,
            {
                "status_code": 200,
                "body": {
                    "type": "message",
                    "content": [{"type": "text", "text": "no"}],
                    "stop_reason": "end_turn",
                    "usage": {"input_tokens": 40, "output_tokens": 2},
                },
            },
        ),
        pair(
            first,
            T0 + 2,
            {"status_code": 200, "body": {"input_tokens": 30_012}},
            url="https://api.anthropic.com/v1/messages/count_tokens",
        ),
        pair(
            None,
            T0 + 2.5,
            {"status_code": 200, "body": {}},
            method="GET",
            url="https://api.anthropic.com/api/oauth/usage",
        ),
        pair(
            second,
            T0 + 3,
            {
                "status_code": 529,
                "body": {
                    "type": "error",
                    "error": {"type": "overloaded_error", "message": "Overloaded"},
                },
            },
        ),
        pair(
            second,
            (T0 + 9) * 1000,  # milliseconds: read as such
            {
                "status_code": 200,
                "body_raw": stream(
                    {
                        "input_tokens": 3,
                        "cache_read_input_tokens": 30_000,
                        "cache_creation_input_tokens": 700,
                        "output_tokens": 20,
                    },
                    "end_turn",
                    [{"type": "text", "text": "Renamed."}],
                ),
            },
        ),
        pair(second, T0 + 20, None),  # cut off: no reply recorded
    ]
    path = tmp_path / ".claude-trace" / "log-2026-09-21-12-00-00.jsonl"
    path.parent.mkdir(parents=True)
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def test_a_claude_trace_log_reads_bodies_times_and_recorded_usage(tmp_path: Path) -> None:
    skipped: Counter[str] = Counter()
    requests = load_requests(session_log(tmp_path), skipped=skipped)
    assert skipped == {"not a Messages call": 2, "refused by the upstream (HTTP 529)": 1}
    first, side, second, cut = requests
    assert [r.model for r in requests] == [MAIN, SMALL, MAIN, MAIN]
    assert (first.t, side.t, second.t, cut.t) == pytest.approx((T0, T0 + 1.5, T0 + 9, T0 + 20))
    # the stream's message_start usage and final message_delta
    assert first.reported is not None and first.reported.total_input_tokens == 30_012
    assert (first.output_tokens, first.stop_reason) == (64, "tool_use")
    assert second.reported is not None and second.reported.cache_read_tokens == 30_000
    assert (second.output_tokens, second.stop_reason) == (20, "end_turn")
    # the JSON reply
    assert (side.output_tokens, side.stop_reason) == (2, "end_turn")
    assert cut.reported is None and cut.output_tokens == 0
    # one Claude Code session (metadata.user_id), a turn then its tool loop
    assert first.session == second.session == cut.session
    assert (first.shape.kind, second.shape.kind) == ("turn", "continuation")
    assert first.headers["user-agent"] == "claude-cli/2.1.332"


def test_a_trace_recorded_without_tierwise_replays_its_main_model_as_auto(
    tmp_path: Path,
) -> None:
    s = settings()
    requests = load_requests(session_log(tmp_path))
    routed = replay_as_auto(requests, s)
    assert routed == {MAIN: 3}
    assert [r.as_auto for r in requests] == [True, False, True, True]
    report = asyncio.run(Replayer(s, decide=Router(s).decide).run(requests))
    session = report.policies["session"]
    assert session.rules["new-session"] == 1
    assert session.rules["continuation"] == 2
    assert session.classifier_runs == 1
    # the rename goes below opus (the classifier's call, as when sent bare), the side request
    # stays on the small model it named: routing saves against all-opus
    assert session.by_tier["opus"] == 0
    assert session.by_tier[SMALL] == 1
    assert session.cost_usd < report.policies["top"].cost_usd


def test_as_recorded_and_explicit_globs(tmp_path: Path) -> None:
    s = settings()
    log = session_log(tmp_path)
    requests = load_requests(log)
    assert replay_as_auto(requests, s, ["claude-haiku-*"]) == {SMALL: 1}
    assert [r.as_auto for r in requests] == [False, True, False, False]
    recorded = load_requests(log)  # --as-recorded: replay_as_auto is not called
    report = asyncio.run(Replayer(s, decide=Router(s).decide).run(recorded))
    # nothing asked for auto: every request stays on the model it named, nothing classified
    assert report.policies["session"].classifier_runs == 0
    assert report.policies["per-request"].classifier_runs == 0


def test_a_trace_that_already_asks_for_auto_is_replayed_as_recorded(tmp_path: Path) -> None:
    requests = load_requests(FIXTURES / "2.1.332")  # recorded through tierwise: model "auto"
    assert replay_as_auto(requests, settings()) == Counter()
    assert not any(r.as_auto for r in requests)


def test_a_directory_of_pretty_printed_exchanges(tmp_path: Path) -> None:
    """tierwise's recorder writes one indented JSON file per request, headers as pairs."""
    requests = load_requests(FIXTURES / "2.1.332")
    assert len(requests) == 3
    assert all(r.headers.get("x-claude-code-session-id") for r in requests)
    assert len({r.session for r in requests}) == 2  # the plain prompt and the tool loop
    assert [r.shape.kind for r in requests] == ["turn", "turn", "continuation"]
    # a JSON array file of bodies reads the same way
    bodies = [
        claude_code_body("What is the capital of France?"),
        {"model": "auto", "messages": [{"role": "user", "content": "hi"}]},
    ]
    array = tmp_path / "bodies.json"
    array.write_text(json.dumps(bodies, indent=2))
    assert [r.model for r in load_requests(array)] == [bodies[0]["model"], "auto"]


@pytest.mark.parametrize(
    ("response", "message"),
    [
        (
            {"status_code": 200, "body_raw": "event: message_start\ndata: {oops\n\n"},
            r"log\.jsonl:1: response\.body_raw is not a valid Messages stream",
        ),
        ("nope", r"log\.jsonl:1: response is not a JSON object"),
    ],
)
def test_broken_captures_name_the_line(tmp_path: Path, response: Any, message: str) -> None:
    path = tmp_path / "log.jsonl"
    path.write_text(json.dumps(pair({"model": MAIN, "messages": []}, T0, response)) + "\n")
    with pytest.raises(InputError, match=message):
        load_requests(path)


def test_a_stream_that_ended_in_an_error_is_not_a_reply(tmp_path: Path) -> None:
    raw = stream({"input_tokens": 5, "output_tokens": 1}, "end_turn", [])
    cut = raw.split("event: message_delta")[0] + (
        'event: error\ndata: {"type": "error", "error": {"type": "overloaded_error", '
        '"message": "Overloaded"}}\n\n'
    )
    path = tmp_path / "log.jsonl"
    body = {"model": MAIN, "messages": [{"role": "user", "content": "hi"}]}
    path.write_text(json.dumps(pair(body, T0, {"status_code": 200, "body_raw": cut})) + "\n")
    skipped: Counter[str] = Counter()
    assert load_requests(path, skipped=skipped) == []
    assert skipped == {"refused by the upstream (stream error event)": 1}


def test_the_cli_replays_a_claude_trace_directory(tmp_path: Path) -> None:
    log = session_log(tmp_path)
    proc = run("replay", str(log.parent), "--json", home=tmp_path)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["replayed_as_auto"] == {MAIN: 3}
    assert data["skipped"] == {"not a Messages call": 2, "refused by the upstream (HTTP 529)": 1}
    assert data["requests"] == 4
    proc = run("replay", str(log.parent), home=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert f"replayed as 'auto': {MAIN} (3 requests)" in proc.stdout
    assert "left out of the trace: 2 not a Messages call, 1 refused" in proc.stdout
    proc = run("replay", str(log), "--as-recorded", "--json", home=tmp_path)
    assert json.loads(proc.stdout)["replayed_as_auto"] == {}
    proc = run("replay", str(log), "--as-recorded", "--auto", "x*", home=tmp_path)
    assert proc.returncode != 0 and "not both" in proc.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    proc = run("replay", str(empty), home=tmp_path)
    assert proc.returncode != 0 and "no trace files" in proc.stderr


def test_a_broken_json_document_is_named(tmp_path: Path) -> None:
    path = tmp_path / "one.json"
    path.write_text('{\n  "request": {\n')
    with pytest.raises(InputError, match=r"one\.json: not valid JSON"):
        load_requests(path)


def test_a_har_capture_reads_like_a_claude_trace_log(tmp_path: Path) -> None:
    """mitmproxy / browser devtools export HAR: bodies as text, headers as name/value
    objects, ISO start times, replies as text (base64 for the binary-safe exporters)."""
    log = load_requests(session_log(tmp_path))
    entries = []
    for line in session_log(tmp_path / "har").read_text().splitlines():
        ex = json.loads(line)
        req, resp = ex["request"], ex["response"]
        t = req["timestamp"] / (1000 if req["timestamp"] > 1e11 else 1)
        entry: dict[str, Any] = {
            "startedDateTime": dt.datetime.fromtimestamp(t, dt.UTC).isoformat(),
            "request": {
                "method": req["method"],
                "url": req["url"],
                "headers": [{"name": k, "value": v} for k, v in req["headers"].items()],
                "postData": {"mimeType": "application/json", "text": json.dumps(req["body"])},
            },
        }
        if resp is not None:
            text = resp.get("body_raw") or json.dumps(resp["body"])
            content = {"mimeType": "text/event-stream", "text": text}
            if "body" in resp:  # the JSON replies base64-encoded, as some exporters write
                content = {
                    "mimeType": "application/json",
                    "text": base64.b64encode(text.encode()).decode(),
                    "encoding": "base64",
                }
            entry["response"] = {"status": resp["status_code"], "content": content}
        entries.append(entry)
    har = tmp_path / "session.har"
    har.write_text(json.dumps({"log": {"version": "1.2", "entries": entries}}, indent=1))
    skipped: Counter[str] = Counter()
    requests = load_requests(har, skipped=skipped)
    assert skipped == {"not a Messages call": 2, "refused by the upstream (HTTP 529)": 1}
    assert [(r.model, r.output_tokens, r.stop_reason) for r in requests] == [
        (r.model, r.output_tokens, r.stop_reason) for r in log
    ]
    assert [r.t for r in requests] == pytest.approx([r.t for r in log], abs=1e-3)
    assert [r.session for r in requests] == [r.session for r in log]
    assert requests[0].headers["user-agent"] == "claude-cli/2.1.332"


def test_a_gzip_bomb_or_a_cut_gzip_is_an_error_not_a_hang(tmp_path: Path) -> None:
    """A trace file is bounded decompressed, not only on disk: reading stops at the limit."""
    import gzip as gz

    from tierwise.sessions import traces

    bomb = tmp_path / "bomb.jsonl.gz"
    bomb.write_bytes(gz.compress(b"\n" * 50_000_000))  # ~50 KB on disk
    with pytest.raises(InputError, match="larger than 1000000 bytes"):
        traces._read(bomb, limit=1_000_000)
    two = tmp_path / "two.jsonl.gz"
    two.write_bytes(gz.compress(b'{"a": 1}\n') + gz.compress(b'{"b": 2}\n'))
    assert traces._read(two) == b'{"a": 1}\n{"b": 2}\n'  # concatenated members
    cut = tmp_path / "cut.jsonl.gz"
    cut.write_bytes(gz.compress(b'{"a": 1}\n' * 1000)[:40])
    with pytest.raises(InputError, match="not a valid gzip file"):
        load_requests(cut)

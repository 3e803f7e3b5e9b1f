"""``tierwise replay`` on Claude Code's own session transcripts (``~/.claude/projects``).

The fixtures in tests/data/claude_code/transcripts/ are real: the Claude Code CLI (2.1.332, which
records each request it sends, and 2.1.197, which does not) ran one session through
``tierwise serve`` in front of the fake upstream (``python -m tests.clients.record_transcripts``),
and ``sent.json`` describes every model call the CLI made, as the gateway received it. The
requests rebuilt from each transcript are checked against those calls: the messages, envelope
and parameters the CLI sent (exactly for 2.1.332; as far as such a transcript holds them for
2.1.197), the usage, and the session rule and tier the gateway chose, which the replay's session
routing must choose again. tests/clients/test_claude_code.py does the same live, with the pinned
CLI."""

from __future__ import annotations

import asyncio
import copy
import gzip
import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tests.clients.transcript_session import pair_calls, rebuilt_request
from tests.test_cli_replay import run
from tierwise import config
from tierwise.router import Router
from tierwise.sessions import transcripts
from tierwise.sessions.replay import Replayer, TraceRequest, load_requests, replay_as_auto

FIXTURES = Path(__file__).parent / "data" / "claude_code" / "transcripts"
SESSION = "5f0c1b9e-2a8d-4c3e-9f7a-0d6e1c2b3a4f"


def settings() -> config.Settings:
    return config.load(environ={}, provider={"kind": "simulated"})


def match(version: str, key: str) -> tuple[list[dict[str, Any]], list[TraceRequest], Any]:
    """The calls the CLI made, the requests rebuilt from its transcript (paired with them),
    and the replay of those requests."""
    sent = json.loads((FIXTURES / version / "sent.json").read_text())
    skipped: Counter[str] = Counter()
    requests = load_requests(FIXTURES / version / "projects", skipped=skipped)
    assert skipped == Counter()
    s = settings()
    if version == "2.1.197":  # no request recorded: the models are the ones that answered
        replay_as_auto(requests, s, ["claude-*"])
    report = asyncio.run(Replayer(s, decide=Router(s).decide).run(requests))
    return sent, pair_calls(sent, requests, report.decisions, key), report


def test_a_transcript_with_recorded_requests_rebuilds_what_the_cli_sent() -> None:
    """Claude Code 2.1.332: every call rebuilt as sent (but the billing header, metadata and a
    text's string-or-block form); the session routed as the gateway routed it, including the
    sub-agent's thread, the compaction (rebuilt) and the conversation resumed after it, and
    the tool-errors escalation."""
    sent, requests, report = match("2.1.332", "exact")
    for call, req in zip(sent, requests, strict=True):
        assert req.body is not None
        rebuilt = rebuilt_request(req.body)
        if not call["compaction"]:
            assert (rebuilt["system"], rebuilt["tools"]) == (call["system"], call["tools"])
            assert rebuilt["params"] == call["params"]
        assert req.headers["x-claude-code-session-id"] == req.session
        assert "claude-code-20250219" in req.headers["anthropic-beta"]
    rules = [rule for _w, rule, _t in report.decisions]
    assert rules.count("new-session") == 2  # the main conversation and the sub-agent
    assert "tool-errors" in rules and "resume" not in rules
    after = rules[[c["compaction"] for c in sent].index(True) + 1]
    assert after.startswith("turn-")  # the prompt after the compaction, on its state
    assert len({r.session for r in requests}) == 1


def test_a_transcript_without_recorded_requests_rebuilds_the_conversation() -> None:
    """Claude Code 2.1.197 records no requests: each reply is a request on the conversation
    before it (the messages kept after the compaction's summary included), with a stand-in
    envelope sized from the recorded input."""
    _sent, requests, _report = match("2.1.197", "loose")
    for req in requests:
        assert req.body is not None and req.reported is not None
        assert req.shape.agent == "claude-code"
        assert req.rebuilt in (transcripts.FROM_CONVERSATION, transcripts.COMPACTION)
        # the stand-in envelope makes the estimate close to what was recorded
        assert abs(req.token_scale - 1) < 0.05, (req.where, req.token_scale)
    assert len({r.session for r in requests}) == len({r.session for r in requests if r.t}) == 1


def test_replay_reads_a_projects_directory_from_the_cli(tmp_path: Path) -> None:
    done = run("replay", str(FIXTURES / "2.1.332" / "projects"), "--json", home=tmp_path)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["sessions"] == 1 and report["skipped"] == {}
    assert report["rebuilt"] == {transcripts.COMPACTION: 1}
    assert report["requests"] == len(json.loads((FIXTURES / "2.1.332" / "sent.json").read_text()))


# -- the rules on small transcripts ---------------------------------------------------------
def line(kind: str, uuid: str, parent: str | None, **fields: Any) -> dict[str, Any]:
    return {
        "type": kind,
        "uuid": uuid,
        "parentUuid": parent,
        "sessionId": SESSION,
        "timestamp": f"2026-11-20T10:00:{int(uuid[1:]):02d}.000Z",
        "isSidechain": False,
        **fields,
    }


def reply(
    uuid: str, parent: str, msg: str, block: dict[str, Any], output: int, **extra: Any
) -> Any:
    usage = {"input_tokens": 3, "cache_creation_input_tokens": 4000, "output_tokens": output}
    message = {"id": msg, "role": "assistant", "model": "claude-opus-4-6", "content": [block]}
    return line("assistant", uuid, parent, message={**message, "usage": usage}, **extra)


def result(uuid: str, parent: str, call: str, text: str) -> dict[str, Any]:
    content = [{"type": "tool_result", "tool_use_id": call, "content": text}]
    return line("user", uuid, parent, message={"role": "user", "content": content})


def write(path: Path, records: list[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_one_reply_written_as_several_lines_is_one_request_with_the_final_usage(
    tmp_path: Path,
) -> None:
    records = [
        line("user", "u01", None, message={"role": "user", "content": "Fix the flaky test"}),
        reply("u02", "u01", "msg_a", {"type": "text", "text": "Looking."}, 1),
        reply("u03", "u02", "msg_a", {"type": "tool_use", "id": "t1", "name": "Bash"}, 57),
        result("u04", "u03", "t1", "ok"),
        reply("u05", "u04", "msg_b", {"type": "text", "text": "Fixed."}, 9),
        # an API error Claude Code wrote as the assistant: no model call
        line(
            "assistant",
            "u06",
            "u05",
            isApiErrorMessage=True,
            message={"role": "assistant", "model": "<synthetic>", "content": []},
        ),
        {"type": "summary", "summary": "Flaky test", "leafUuid": "u05"},
    ]
    path = write(tmp_path / "p" / f"{SESSION}.jsonl", records)
    skipped: Counter[str] = Counter()
    first, second = load_requests(path.parent, skipped=skipped)
    assert skipped == Counter({"refused or failed (an API error in the transcript)": 1})
    assert first.output_tokens == 57 and second.output_tokens == 9
    assert first.session == second.session == SESSION
    assert first.shape.kind == "turn" and second.shape.kind == "continuation"
    assert second.body is not None
    assistant = second.body["messages"][1]
    assert [b["type"] for b in assistant["content"]] == ["text", "tool_use"]  # one message
    assert second.body["messages"][-1]["content"][-1]["cache_control"] == {"type": "ephemeral"}
    assert first.model == "claude-opus-4-6"
    assert replay_as_auto([first, second], settings()) == Counter({"claude-opus-4-6": 2})


def recorded_transcript() -> list[dict[str, Any]]:
    prompt = {"role": "user", "content": [{"type": "text", "text": "Rename x to count"}]}
    answer = {"role": "assistant", "content": [{"type": "text", "text": "Done."}]}
    shape = {"system": [{"type": "text", "text": "You are Claude Code, Anthropic's official CLI"}]}
    params = {"model": "claude-opus-4-6", "max_tokens": 32000, "betas": ["claude-code-20250219"]}
    return [
        {"type": "api-request-shape", "sessionId": SESSION, "shapeHash": "s1", "shape": shape},
        {"type": "api-request-blob", "sessionId": SESSION, "hash": "h1", "message": prompt},
        {
            "type": "api-request",
            "sessionId": SESSION,
            "id": "r1",
            "timestamp": "2026-11-20T10:00:01.000Z",
            "params": params,
            "shapeHash": "s1",
            "keep": 0,
            "tail": ["h1"],
            "cacheControl": [
                {"path": ["messages", 0, "content", 0], "value": {"type": "ephemeral"}}
            ],
        },
        {
            "type": "api-request",
            "sessionId": SESSION,
            "id": "r2",
            "timestamp": "2026-11-20T10:00:05.000Z",
            "params": params,
            "shapeHash": "s1",
            "base": "r1",
            "keep": 1,
            "tail": [transcripts.digest(answer), "h1"],
            "cacheControl": [],
        },
        line("assistant", "u08", None, requestRef="r1", message={**answer, "model": "m"}),
        line("assistant", "u09", "u08", requestRef="r2", message={**answer, "model": "m"}),
    ]


def test_a_recorded_request_names_its_messages_by_hash(tmp_path: Path) -> None:
    path = write(tmp_path / f"{SESSION}.jsonl", recorded_transcript())
    first, second = load_requests(path)
    assert first.body is not None and second.body is not None
    assert first.body["messages"][0]["content"][0]["cache_control"] == {"type": "ephemeral"}
    assert second.body["messages"][0] == {
        "role": "user",
        "content": [{"type": "text", "text": "Rename x to count"}],
    }  # the breakpoint of the first request is not carried over
    assert second.body["messages"][1]["content"][0]["text"] == "Done."  # from the reply's line
    assert second.t - first.t == 4.0
    assert first.headers["anthropic-beta"] == "claude-code-20250219"


def test_a_recorded_attempt_with_no_reply_is_not_a_billed_request(tmp_path: Path) -> None:
    """Claude Code records every attempt of a request it retries; the ones that failed have
    no reply (after the last, it writes an API error line of its own)."""
    records = recorded_transcript()
    retried = [{**records[3], "id": f"r2-{n}"} for n in range(3)]
    error = line(
        "assistant",
        "u10",
        "u09",
        isApiErrorMessage=True,
        message={"role": "assistant", "model": "<synthetic>", "content": []},
    )
    records = [*records, *retried, error]
    skipped: Counter[str] = Counter()
    requests = load_requests(write(tmp_path / f"{SESSION}.jsonl", records), skipped=skipped)
    assert len(requests) == 2
    assert skipped == Counter({transcripts.NO_REPLY: 3})


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (lambda r: r[3].update(base="r0"), "its base request r0 is not in the transcript"),
        (lambda r: r[3].update(keep=5), "keep=5 but its base request had 1 messages"),
        (lambda r: r[3]["tail"].append("h9"), "message h9… is not in the transcript"),
        (lambda r: r[3].update(shapeHash="s9"), "its envelope (api-request-shape) is not"),
        (
            lambda r: r[3].update(cacheControl=[{"path": ["messages", 7], "value": {}}]),
            "a cache breakpoint at ['messages', 7], which the request does not have",
        ),
    ],
)
def test_a_recorded_request_the_transcript_cannot_rebuild_is_skipped_with_the_reason(
    tmp_path: Path, change: Any, reason: str
) -> None:
    records = recorded_transcript()
    change(records)
    skipped: Counter[str] = Counter()
    requests = load_requests(write(tmp_path / f"{SESSION}.jsonl", records), skipped=skipped)
    assert len(requests) == 1
    ((why, count),) = skipped.items()
    assert why.startswith(reason) and count == 1


def test_a_directory_of_transcripts_is_walked_with_its_sub_agents(tmp_path: Path) -> None:
    """~/.claude/projects/<project>/<session>.jsonl and <session>/subagents/agent-<id>.jsonl
    (gzip too); a sub-agent's .meta.json is not a trace."""
    main = recorded_transcript()
    sub = copy.deepcopy(main)
    for record in sub:
        record["agentId"] = "a1"
    sub[2]["id"], sub[3]["id"], sub[3]["base"] = "s-r1", "s-r2", "s-r1"
    sub[-2]["requestRef"], sub[-1]["requestRef"] = "s-r1", "s-r2"
    project = tmp_path / "projects" / "-home-u-repo"
    write(project / f"{SESSION}.jsonl", main)
    agent = write(project / SESSION / "subagents" / "agent-a1.jsonl", sub)
    agent.with_name("agent-a1.jsonl.gz").write_bytes(gzip.compress(agent.read_bytes()))
    agent.unlink()
    (agent.parent / "agent-a1.meta.json").write_text('{"agentType": "Explore"}')
    requests = load_requests(tmp_path / "projects")
    assert len(requests) == 4 and {r.session for r in requests} == {SESSION}
    assert sum("agent-a1.jsonl.gz" in r.where for r in requests) == 2


def test_malformed_transcript_lines_are_passed_over_not_a_crash(tmp_path: Path) -> None:
    """Lines whose fields have the wrong types (found by fuzzing the fixtures) are not model
    calls and not conversation: the rest of the transcript replays."""
    records = [
        line("user", "u01", None, message={"role": "user", "content": "Fix the flaky test"}),
        {**line("user", "u02", "u01", message="not a message"), "type": ["user"]},
        line("assistant", "u03", "u01", message="not a message"),
        reply("u04", "u01", "msg_a", {"type": "text", "text": "Looking."}, 5),
        {"type": "system", "subtype": "compact_boundary", "uuid": ["u05"], "sessionId": SESSION},
    ]
    (req,) = load_requests(write(tmp_path / f"{SESSION}.jsonl", records))
    assert req.body is not None and req.output_tokens == 5
    assert req.body["messages"][0]["content"][0]["text"] == "Fix the flaky test"


def test_an_earlier_transcripts_sidechain_is_the_sub_agents_own_thread(tmp_path: Path) -> None:
    """Claude Code 1.x wrote a sub-agent's lines into the session's own file (``isSidechain``),
    starting from the task the main loop gave it: its requests are a thread of their own in the
    session, under a sub-agent's stand-in prompt."""
    task = {"type": "tool_use", "id": "t1", "name": "Task", "input": {"prompt": "Find the bug"}}
    records = [
        line("user", "u01", None, message={"role": "user", "content": "Why does login fail?"}),
        reply("u02", "u01", "msg_a", task, 30),
        {
            **line("user", "u03", None, message={"role": "user", "content": "Find the bug"}),
            "isSidechain": True,
        },
        {
            **reply("u04", "u03", "msg_b", {"type": "text", "text": "In auth.py."}, 20),
            "isSidechain": True,
        },
        result("u05", "u02", "t1", "In auth.py."),
        reply("u06", "u05", "msg_c", {"type": "text", "text": "Fixed the token check."}, 40),
    ]
    main, sub, after = load_requests(write(tmp_path / f"{SESSION}.jsonl", records))
    assert main.thread == after.thread != sub.thread
    assert main.session == sub.session == after.session
    assert sub.body is not None and "agent for Claude Code" in sub.body["system"][0]["text"]
    assert after.shape.kind == "continuation"
    assert sub.shape.classify_input.prompt == "Find the bug"


def test_a_session_continued_across_an_update_replays_both_kinds_of_record(
    tmp_path: Path,
) -> None:
    """Claude Code updates itself; ``--continue`` after an update appends to the same file. The
    replies the earlier version wrote are rebuilt from the conversation, the later version's
    recorded requests exactly."""
    (earlier,) = (FIXTURES / "2.1.197" / "projects").glob("*/*.jsonl.gz")
    lines = [json.loads(x) for x in gzip.decompress(earlier.read_bytes()).splitlines() if x]
    session = lines[-1]["sessionId"]
    later = recorded_transcript()
    for record in later:
        record["sessionId"] = session
    alone = load_requests(write(tmp_path / "a" / "s.jsonl", lines))
    both = load_requests(write(tmp_path / "b" / "s.jsonl", lines + later))
    assert len(both) == len(alone) + 2
    assert [r.rebuilt for r in both[-2:]] == [None, None]  # recorded as sent
    assert {r.rebuilt for r in both[:-2]} == {transcripts.FROM_CONVERSATION, transcripts.COMPACTION}


def test_without_its_recorded_requests_a_new_transcript_rebuilds_from_the_conversation(
    tmp_path: Path,
) -> None:
    """The conversation path on 2.1.332's lines (its api-request records, and the references
    to them, taken out): the same calls, as far as the conversation holds them (parallel
    tool calls included), the `auto` each asked for (``requestedModel``), and the gateway's
    rule and tier for each."""
    projects = FIXTURES / "2.1.332" / "projects"
    recorded = ("api-request", "api-request-blob", "api-request-shape")
    for path in projects.rglob("*.jsonl.gz"):
        lines = [json.loads(x) for x in gzip.decompress(path.read_bytes()).splitlines() if x]
        kept = [
            {k: v for k, v in x.items() if k != "requestRef"}
            for x in lines
            if x.get("type") not in recorded
        ]
        write(tmp_path / path.relative_to(projects).with_suffix(""), kept)
    sent = json.loads((FIXTURES / "2.1.332" / "sent.json").read_text())
    requests = load_requests(tmp_path)
    assert {r.model for r in requests} == {"auto"}
    s = settings()
    report = asyncio.run(Replayer(s, decide=Router(s).decide).run(requests))
    pair_calls(sent, requests, report.decisions, "loose")


def test_the_history_a_forked_session_copies_is_not_replayed_again(tmp_path: Path) -> None:
    """``--fork-session`` starts the new session's file with a copy of the history, replies
    included (each still naming the request it answered, in the first session's file)."""
    (original,) = (FIXTURES / "2.1.332" / "projects").glob("*/*.jsonl.gz")
    lines = [json.loads(x) for x in gzip.decompress(original.read_bytes()).splitlines() if x]
    copied = [
        {**x, "sessionId": SESSION, "requestSessionId": x["sessionId"]}
        for x in lines
        if x.get("type") in ("user", "assistant")
    ]
    write(tmp_path / "a.jsonl", lines)
    alone = load_requests(tmp_path)
    write(tmp_path / f"{SESSION}.jsonl", copied)
    assert len(load_requests(tmp_path)) == len(alone)


def test_an_earlier_versions_fork_copies_replies_that_are_replayed_once(tmp_path: Path) -> None:
    """Before 2.1.3xx a fork's copy of the history differs from the original only in its
    sessionId: each reply (by message id) is rebuilt once, from the first file that has it."""
    (original,) = (FIXTURES / "2.1.197" / "projects").glob("*/*.jsonl.gz")
    lines = [json.loads(x) for x in gzip.decompress(original.read_bytes()).splitlines() if x]
    write(tmp_path / "a.jsonl", lines)
    alone = load_requests(tmp_path)
    copied = [{**x, "sessionId": SESSION} for x in lines if x.get("type") in ("user", "assistant")]
    write(tmp_path / "b.jsonl", copied)
    assert len(load_requests(tmp_path)) == len(alone)

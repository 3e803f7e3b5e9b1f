"""The Claude Code CLI's own session transcript, replayed: the pinned CLI runs one session
through ``tierwise serve`` (tests/clients/transcript_session.py), and ``tierwise replay`` of the
``~/.claude/projects`` it left rebuilds every model call the gateway received, exactly, with its
usage, and routes each as the gateway routed it. Skips without the CLI (fails under CI=true)."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Mapping
from typing import Any

from tests.clients.claude_rig import ClaudeCodeRig
from tests.clients.scripted_upstream import request_kind
from tests.clients.test_claude_code import answer_plainly
from tests.clients.transcript_session import pair_calls, respond, run_session, sent_request
from tierwise import config
from tierwise.router import Router
from tierwise.sessions import transcripts
from tierwise.sessions.replay import Replayer, TraceRequest, load_requests


def replay_and_pair(rig: ClaudeCodeRig, sent: list[dict[str, Any]]) -> list[TraceRequest]:
    """Replay the CLI's ~/.claude/projects (nothing left out) and pair each call the gateway
    received with the request rebuilt from it (exactly), routed as the gateway routed it."""
    skipped: Counter[str] = Counter()
    requests = load_requests(rig.home / ".claude" / "projects", skipped=skipped)
    assert skipped == Counter()
    settings = config.load(environ={}, provider={"kind": "simulated"})
    report = asyncio.run(Replayer(settings, decide=Router(settings).decide).run(requests))
    return pair_calls(sent, requests, report.decisions, "exact")


def test_the_sessions_transcript_replays_as_the_gateway_routed_it(
    claude_code: ClaudeCodeRig,
) -> None:
    rig = claude_code
    run_session(rig)
    calls = [
        e
        for run in rig.runs
        for e in run.messages
        if request_kind(json.loads(e.body)) != "structured"
    ]
    sent = [sent_request(e) for e in calls]
    rules = [c["rule"] for c in sent]
    # the gateway itself: one main thread and the sub-agent's; after /compact the prompt is a
    # turn on the compacted conversation's state (Claude Code keeps the last messages
    # verbatim after the summary), not a new session; the misused tool escalates the loop
    assert rules.count("new-session") == 2 and "tool-errors" in rules
    compaction = [c["compaction"] for c in sent].index(True)
    assert rules[compaction] == "continuation"
    assert rules[compaction + 1].startswith("turn-"), rules

    paired = replay_and_pair(rig, sent)
    assert {r.session for r in paired} == {calls[0].header("x-claude-code-session-id")}


def test_attempts_the_api_refused_are_not_replayed(claude_code: ClaudeCodeRig) -> None:
    """The upstream refuses one prompt (400): Claude Code records each attempt it makes, then
    an API error line of its own. None of them was billed, so none is replayed."""
    rig = claude_code

    def refuse(body: dict[str, Any]) -> Mapping[str, Any] | None:
        if "Refuse this." in json.dumps(body.get("messages")):
            return {"status": 400, "error_type": "invalid_request_error"}
        answer: Mapping[str, Any] | None = answer_plainly("ok")(body)
        return answer

    rig.upstream.respond = refuse
    rig.run("Hello there.")
    failed = rig.run("Refuse this.", "--continue", check=False)
    assert failed.returncode != 0
    attempts = [e for e in failed.messages if e.status == 400]
    assert attempts and all(e.status == 400 for e in failed.messages)
    skipped: Counter[str] = Counter()
    requests = load_requests(rig.home / ".claude" / "projects", skipped=skipped)
    assert skipped == Counter({transcripts.NO_REPLY: len(attempts)})
    assert len(requests) == len(rig.runs[0].messages)


def test_a_resumed_and_a_forked_session_replay_each_call_once(claude_code: ClaudeCodeRig) -> None:
    """``--resume ID`` goes on in the session's file; ``--resume ID --fork-session`` starts a
    new session whose file begins with a copy of the history, replies included: those were
    billed in the first session, so they are not replayed again. Each call the gateway
    received is rebuilt once, and routed as the gateway routed it."""
    rig = claude_code
    (rig.workdir / "notes.txt").write_text("The secret word is pelican.\n")
    rig.upstream.respond = lambda body: respond(body, str(rig.workdir))
    first = rig.run("Shout what notes.txt says.", "--allowedTools", "Bash")
    session = first.output["session_id"]
    rig.run("Compare both files.", "--resume", session, "--allowedTools", "Read")
    forked = rig.run("And 3+3? Answer with one number.", "--resume", session, "--fork-session")
    assert forked.output["session_id"] != session
    rig.run("Read notes.txt", "--continue", "--allowedTools", "Read")
    calls = [e for run in rig.runs for e in run.messages]
    sent = [sent_request(e) for e in calls]
    paired = replay_and_pair(rig, sent)
    assert {r.session for r in paired} == {session, forked.output["session_id"]}


def test_a_tool_loaded_by_tool_search_keeps_the_cache(claude_code: ClaudeCodeRig) -> None:
    """Claude Code 2.1.332 defers most tools behind its ToolSearch tool. The model loads one:
    the next request lists it (``defer_loading``) and references it in the tool result. The
    API keeps deferred tools out of the cached prefix, so that request reads everything the
    first one wrote; the transcript rebuilds both, routed as the gateway routed them."""
    rig = claude_code

    def load_a_tool(body: dict[str, Any]) -> Mapping[str, Any] | None:
        kind = request_kind(body)
        if kind == "main":
            search = {"name": "ToolSearch", "input": {"query": "select:NotebookEdit"}}
            return {"reply_text": "Searching.", "tool_use": search}
        if kind == "tool_result":
            return {"reply_text": "Loaded."}
        return None

    rig.upstream.respond = load_a_tool
    run = rig.run("Load the notebook tool.", "--allowedTools", "ToolSearch,NotebookEdit")
    first, second = (json.loads(e.body) for e in run.messages)
    listed = {t["name"]: t for t in second["tools"]}
    assert listed["NotebookEdit"].get("defer_loading") is True
    assert "NotebookEdit" not in {t["name"] for t in first["tools"]}
    wrote = sent_request(run.messages[0])["usage"]["cache_creation_input_tokens"]
    assert sent_request(run.messages[1])["usage"]["cache_read_input_tokens"] == wrote
    replay_and_pair(rig, [sent_request(e) for e in run.messages])

"""The Claude Code CLI's own session transcript, replayed: the pinned CLI runs one session
through ``tierwise serve`` (tests/clients/transcript_session.py), and ``tierwise replay`` of the
``~/.claude/projects`` it left rebuilds every model call the gateway received, exactly, with its
usage, and routes each as the gateway routed it. Skips without the CLI (fails under CI=true)."""

from __future__ import annotations

import asyncio
import json
from collections import Counter

from tests.clients.claude_rig import ClaudeCodeRig
from tests.clients.scripted_upstream import request_kind
from tests.clients.transcript_session import pair_calls, run_session, sent_request
from tierwise import config
from tierwise.router import Router
from tierwise.sessions.replay import Replayer, load_requests


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

    skipped: Counter[str] = Counter()
    requests = load_requests(rig.home / ".claude" / "projects", skipped=skipped)
    assert skipped == Counter()
    settings = config.load(environ={}, provider={"kind": "simulated"})
    report = asyncio.run(Replayer(settings, decide=Router(settings).decide).run(requests))
    paired = pair_calls(sent, requests, report.decisions, "exact")
    assert {r.session for r in paired} == {calls[0].header("x-claude-code-session-id")}

"""The Claude Code CLI (npm ``@anthropic-ai/claude-code``, pinned by .ci/install-claude-code)
against a real ``tierwise serve``, as a user points it at the gateway: ``ANTHROPIC_BASE_URL`` at
tierwise, a gateway key as ``ANTHROPIC_API_KEY`` (or ``ANTHROPIC_AUTH_TOKEN``), and
``ANTHROPIC_MODEL=auto``; ``claude -p`` in a temporary directory with a temporary ``$HOME``.

Asserted: the printed answer; every HTTP exchange the CLI had with the gateway (all 200); that
the gateway forwarded Claude Code's body unchanged but for the routed model (or said in
``x-tierwise-adapted`` what it changed); that the gateway key never reached the upstream; one
ledger row per model call with the tier, model, key, usage and the exact price of that usage; and
that the CLI tried to reach nothing but the gateway.

Without the CLI the tests skip with the reason (``make clients`` installs it), except under
``CI=true``, where they fail.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from tests.clients.claude_rig import KEY_NAME, ClaudeCodeRig, ClaudeRun
from tests.clients.recorder import Exchange
from tests.clients.scripted_upstream import (
    request_kind,
    schema_reply,
    tool_result_text,
    tool_results,
    user_text,
)
from tierwise.pricing import PriceCatalogue
from tierwise.types import LedgerEntry

# Fields tierwise may change in a body for the routed model (issue 12: request adaptation).
ADAPTABLE = {"thinking", "output_config", "temperature", "top_p", "top_k", "max_tokens"}


def sse_usage(exchange: Exchange) -> dict[str, int]:
    """input/output tokens as the gateway streamed them to the CLI (message_start's input,
    message_delta's final counts)."""
    usage: dict[str, int] = {}
    for line in exchange.response_body.decode().splitlines():
        if not line.startswith("data: "):
            continue
        event = json.loads(line[6:])
        if event.get("type") == "message_start":
            usage.update(event["message"]["usage"])
        elif event.get("type") == "message_delta":
            usage.update(event["usage"])
    keys = (
        "input_tokens",
        "output_tokens",
        "cache_read_input_tokens",
        "cache_creation_input_tokens",
    )
    return {k: int(usage.get(k) or 0) for k in keys}


def answer_plainly(text: str) -> Any:
    def respond(body: dict[str, Any]) -> Mapping[str, Any] | None:
        kind = request_kind(body)
        if kind == "structured":  # the session-title request: JSON that fits its schema
            return {"reply_text": schema_reply(body)}
        if kind == "main":
            return {"reply_text": text}
        return None  # side requests: the fake's default answer

    return respond


def _same_but_thinking(sent: list[Any], got: list[Any]) -> bool:
    """``got`` is ``sent`` with nothing changed but some thinking blocks left out."""
    if len(sent) != len(got):
        return False
    for a, b in zip(sent, got, strict=True):
        if a == b:
            continue
        if a.get("role") != b.get("role") or not isinstance(a.get("content"), list):
            return False
        kept = [
            block
            for block in a["content"]
            if block in b["content"] or block.get("type") not in ("thinking", "redacted_thinking")
        ]
        if kept != b["content"]:
            return False
    return True


def check_traffic(rig: ClaudeCodeRig, run: ClaudeRun) -> list[tuple[Exchange, LedgerEntry]]:
    """Everything the gateway did for one CLI run; returns (exchange, ledger row) per model call."""
    assert rig.sink.attempts == [], "Claude Code tried to reach something besides the gateway"
    assert rig.recorder.parse_errors == []
    assert [(e.method, e.target, e.status) for e in run.exchanges if e.status != 200] == []
    assert all(e.answered for e in run.exchanges)
    assert run.messages, "no /v1/messages request reached the gateway"
    assert rig.upstream.refused == []

    # What went upstream: Claude Code's body, routed, otherwise unchanged (unless declared).
    upstream = [r for r in rig.upstream.requests if r.path == "/v1/messages"]
    assert len(upstream) == len(run.messages)
    unmatched = list(upstream)
    for exchange in run.messages:
        sent = json.loads(exchange.body)
        assert sent["model"] == "auto"
        forwarded = next(
            r
            for r in unmatched
            if r.json_body and _same_but_thinking(sent["messages"], r.json_body["messages"])
        )
        unmatched.remove(forwarded)
        assert forwarded.json_body is not None
        got = forwarded.json_body
        assert got["model"] == exchange.response_header("x-tierwise-model")
        changed = {k for k in sent.keys() | got.keys() if sent.get(k) != got.get(k)}
        adapted = exchange.response_header("x-tierwise-adapted")
        if "messages" in changed:  # only on a model switch: the old model's thinking dropped
            assert adapted and "thinking block(s)" in adapted, adapted
            changed.discard("messages")
        assert changed - {"model"} <= (ADAPTABLE if adapted else set()), (changed, adapted)
        assert got["metadata"] == sent["metadata"]  # the session's identity goes through
        assert forwarded.header("anthropic-beta") == exchange.header("anthropic-beta")
        assert forwarded.header("x-api-key") == rig.upstream.api_key
        assert forwarded.header("authorization") is None
        assert not any(rig.gateway_key in value for value in forwarded.headers.values())

    # The ledger: one row per model call, found by the request id the gateway answered with.
    rows = {row.request_id: row for row in rig.ledger()}
    assert len(rows) == len(run.messages)
    prices = PriceCatalogue.default()
    tiers = rig.settings().tier_names
    pairs = []
    for exchange in run.messages:
        row = rows[exchange.response_header("x-tierwise-request-id") or ""]
        assert (row.api, row.status, row.source, row.key_name) == (
            "messages",
            "ok",
            "gateway",
            KEY_NAME,
        )
        assert row.requested_model == "auto" and row.tier in tiers
        assert row.tier == exchange.response_header("x-tierwise-tier")
        assert row.model is not None and row.model == exchange.response_header("x-tierwise-model")
        assert row.streaming is (json.loads(exchange.body).get("stream") is True)
        streamed = sse_usage(exchange)
        # Claude Code marks cache breakpoints: much of the input is a cache write or read.
        assert row.usage.input_tokens == streamed["input_tokens"]
        assert row.usage.cache_read_tokens == streamed["cache_read_input_tokens"]
        writes = row.usage.cache_write_5m_tokens + row.usage.cache_write_1h_tokens
        assert writes == streamed["cache_creation_input_tokens"]
        assert row.usage.total_input_tokens > 0
        assert row.usage.output_tokens == streamed["output_tokens"] > 0
        assert isinstance(row.cost_usd, Decimal) and row.cost_usd > 0
        assert row.cost_usd == prices.cost(row.usage, row.model).usd
        assert row.baseline_cost_usd is not None and row.saved_usd is not None
        assert row.prompt is None and row.reply is None  # not stored unless opted in
        pairs.append((exchange, row))
    return pairs


def test_plain_prompt(claude_code: ClaudeCodeRig) -> None:
    rig = claude_code
    rig.upstream.respond = answer_plainly("2 + 2 = 4")
    run = rig.run("What is 2+2? Answer with one number.")

    assert run.output["result"] == "2 + 2 = 4"
    assert run.output["is_error"] is False and run.output["num_turns"] == 1
    assert rig.upstream.kinds.count("main") == 1

    pairs = check_traffic(rig, run)
    main = [(e, row) for e, row in pairs if request_kind(json.loads(e.body)) == "main"]
    ((exchange, row),) = main
    body = json.loads(exchange.body)
    assert exchange.header("x-api-key") == rig.gateway_key
    assert body["stream"] is True and len(body["tools"]) >= 10
    assert "What is 2+2? Answer with one number." in json.dumps(body["messages"])
    # metadata.user_id is a JSON string naming Claude Code's session (the printed session_id).
    assert json.loads(body["metadata"]["user_id"])["session_id"] == run.output["session_id"]
    # What Claude Code counted is what the ledger recorded.
    assert run.output["usage"]["input_tokens"] == row.usage.input_tokens
    assert run.output["usage"]["output_tokens"] == row.usage.output_tokens


def shout_the_notes(body: dict[str, Any]) -> Mapping[str, Any] | None:
    """Main turn: ask for Bash to upper-case notes.txt into shout.txt and print it; the turn
    with the tool's result: answer with what the tool printed."""
    kind = request_kind(body)
    if kind == "main":
        command = "tr a-z A-Z < notes.txt > shout.txt && cat shout.txt"
        return {
            "reply_text": "I'll run a command.",
            "tool_use": {"name": "Bash", "input": {"command": command, "description": "Shout"}},
        }
    if kind == "tool_result":
        (result,) = tool_results(body)
        prefix = "The tool failed: " if result.get("is_error") else "The notes say: "
        return {"reply_text": prefix + tool_result_text(result).strip()}
    if kind == "structured":
        return {"reply_text": schema_reply(body)}
    return None


def test_tool_loop(claude_code: ClaudeCodeRig) -> None:
    rig = claude_code
    (rig.workdir / "notes.txt").write_text("The secret word is pelican.\n")
    rig.upstream.respond = shout_the_notes
    run = rig.run("Shout what notes.txt says.", "--allowedTools", "Bash", auth="bearer")

    # Claude Code really ran the command the (fake) model asked for, and sent back its output.
    assert (rig.workdir / "shout.txt").read_text() == "THE SECRET WORD IS PELICAN.\n"
    assert run.output["result"] == "The notes say: THE SECRET WORD IS PELICAN."
    assert run.output["num_turns"] == 2 and run.output["permission_denials"] == []
    assert [k for k in rig.upstream.kinds if k in ("main", "tool_result")] == [
        "main",
        "tool_result",
    ]

    pairs = check_traffic(rig, run)
    loop = [(e, r) for e, r in pairs if request_kind(json.loads(e.body)) in ("main", "tool_result")]
    assert len(loop) == 2
    for exchange, _row in loop:
        assert exchange.header("authorization") == f"Bearer {rig.gateway_key}"
    first, second = (json.loads(e.body) for e, _ in loop)
    assert "Bash" in [t["name"] for t in first["tools"]]
    # The second turn carries the assistant's tool_use (after its signed thinking, unchanged:
    # the fake upstream checks the signature) and the command's output as the tool_result.
    assistant = [m for m in second["messages"] if m["role"] == "assistant"][-1]
    (call,) = [b for b in assistant["content"] if b["type"] == "tool_use"]
    assert call["name"] == "Bash" and "shout.txt" in call["input"]["command"]
    (result,) = tool_results(second)
    assert result["tool_use_id"] == call["id"] and not result.get("is_error")
    assert "THE SECRET WORD IS PELICAN." in tool_result_text(result)


def test_tool_loop_without_permission_is_denied(claude_code: ClaudeCodeRig) -> None:
    """The control for the test above: without --allowedTools, -p mode refuses the command,
    so the permission flag (not luck) is what let it run there."""
    rig = claude_code
    (rig.workdir / "notes.txt").write_text("The secret word is pelican.\n")
    rig.upstream.respond = shout_the_notes
    run = rig.run("Shout what notes.txt says.")

    assert not (rig.workdir / "shout.txt").exists()
    assert [d["tool_name"] for d in run.output["permission_denials"]] == ["Bash"]
    assert str(run.output["result"]).startswith("The tool failed: ")
    check_traffic(rig, run)


def summarise_when_asked(body: dict[str, Any]) -> Mapping[str, Any] | None:
    """The compaction request gets a summary in Claude Code's format; anything else, as
    :func:`answer_plainly`."""
    if user_text(body).lstrip().startswith("CRITICAL: Respond with TEXT ONLY"):
        return {
            "reply_text": "<analysis>The user asked for sums.</analysis>\n"
            "<summary>1. Primary Request and Intent: add small numbers.</summary>"
        }
    reply: Mapping[str, Any] | None = answer_plainly("4")(body)
    return reply


def test_compaction_keeps_the_session_on_its_tier(claude_code: ClaudeCodeRig) -> None:
    """`/compact` in a continued session, then the next prompt: Claude Code's own summary
    request is a continuation on the session's tier (not the user's words, whatever its
    vocabulary), and the prompt after it is a turn in the same session, on the compacted
    thread's state (not a new session)."""
    rig = claude_code
    rig.upstream.respond = summarise_when_asked
    first = rig.run("What is 2+2? Answer with one number.")
    (asked,) = [e for e in first.messages if request_kind(json.loads(e.body)) == "main"]
    tier = asked.response_header("x-tierwise-tier")
    compact = rig.run("/compact", "--continue")
    summaries = [
        e for e in compact.messages if user_text(json.loads(e.body)).lstrip().startswith("CRITICAL")
    ]
    assert len(summaries) == 1, [user_text(json.loads(e.body))[:80] for e in compact.messages]
    (summary,) = summaries
    assert summary.response_header("x-tierwise-session-rule") == "continuation"
    assert summary.response_header("x-tierwise-tier") == tier
    after = rig.run("And 3+3? Answer with one number.", "--continue")
    (resumed,) = [e for e in after.messages if request_kind(json.loads(e.body)) == "main"]
    text = json.dumps(json.loads(resumed.body)["messages"][0])
    assert "This session is being continued from a previous conversation" in text
    assert resumed.response_header("x-tierwise-session-rule") in ("turn-keep", "turn-escalate")
    rows = {row.request_id: row for row in rig.ledger()}
    ids = [e.response_header("x-tierwise-request-id") or "" for e in (asked, summary, resumed)]
    assert len({rows[i].session_id for i in ids}) == 1  # one session throughout
    assert [rows[i].session_rule for i in ids][1] == "continuation"


def delegate_to_a_sub_agent(body: dict[str, Any]) -> Mapping[str, Any] | None:
    """The main loop's first turn asks for a sub-agent; every other request answers."""
    kind = request_kind(body)
    system = json.dumps(body.get("system"))
    sub_agent = "You are an agent for Claude Code" in system
    if kind == "main" and not sub_agent and "with a sub-agent" in user_text(body):
        names = [t.get("name") for t in body.get("tools") or []]
        tool = "Agent" if "Agent" in names else "Task"
        prompt = "Read notes.txt and report the secret word."
        return {
            "reply_text": "Delegating.",
            "tool_use": {
                "name": tool,
                "input": {"description": "Read notes", "prompt": prompt},
            },
        }
    if kind == "tool_result":
        (result,) = tool_results(body)
        return {"reply_text": "Noted: " + tool_result_text(result)[:200]}
    if kind == "structured":
        return {"reply_text": schema_reply(body)}
    if kind == "main":
        return {"reply_text": "The secret word is pelican."}
    return None


def test_a_sub_agent_is_its_own_thread_in_the_session(claude_code: ClaudeCodeRig) -> None:
    """Claude Code's sub-agent runs under the main loop's session id with its own system
    prompt and first turn: its first request is classified as a new thread of the same
    session, and the main loop's requests around it (the tool result, Claude Code's own
    notification that the sub-agent finished) keep the main turn's tier."""
    rig = claude_code
    (rig.workdir / "notes.txt").write_text("The secret word is pelican.\n")
    rig.upstream.respond = delegate_to_a_sub_agent
    run = rig.run("Look into notes.txt with a sub-agent.", "--allowedTools", "Agent,Task,Read")
    loop = [e for e in run.messages if request_kind(json.loads(e.body)) in ("main", "tool_result")]
    sub = [e for e in loop if "You are an agent for Claude Code" in json.dumps(json.loads(e.body))]
    main = [e for e in loop if e not in sub]
    assert sub and len(main) >= 2, [user_text(json.loads(e.body))[-60:] for e in loop]
    sessions = {e.response_header("x-tierwise-session") for e in loop}
    assert len(sessions) == 1  # one session: the main loop and its sub-agent
    assert sub[0].response_header("x-tierwise-session-rule") == "new-session"
    assert "Read notes.txt and report the secret word." in user_text(json.loads(sub[0].body))
    assert main[0].response_header("x-tierwise-session-rule") == "new-session"
    tier = main[0].response_header("x-tierwise-tier")
    for later in main[1:]:
        assert later.response_header("x-tierwise-session-rule") == "continuation"
        assert later.response_header("x-tierwise-tier") == tier
    check_traffic(rig, run)


def misuse_read_four_times(body: dict[str, Any]) -> Mapping[str, Any] | None:
    """The (fake) model calls Read with a wrong argument four times, then gives up."""
    kind = request_kind(body)
    if kind == "structured":
        return {"reply_text": schema_reply(body)}
    if kind not in ("main", "tool_result"):
        return None
    if len(tool_results(body)) == 0 and kind == "tool_result":
        return None
    failures = sum(
        1
        for m in body.get("messages") or []
        if m.get("role") == "user" and isinstance(m.get("content"), list)
        for b in m["content"]
        if isinstance(b, dict) and b.get("type") == "tool_result"
    )
    if failures < 4:
        return {"reply_text": "Reading.", "tool_use": {"name": "Read", "input": {"path": "x"}}}
    return {"reply_text": "I could not read it."}


def test_the_models_own_tool_errors_escalate_the_loop(claude_code: ClaudeCodeRig) -> None:
    """Claude Code answers a tool call with bad input with `<tool_use_error>`; after
    ``sessions.tool_error_streak`` (3) of them in a row the loop moves one tier up. The earlier
    model's signed thinking blocks are dropped on the way (declared in x-tierwise-adapted),
    and the strict upstream accepts the request on the new model."""
    rig = claude_code
    rig.upstream.respond = misuse_read_four_times
    run = rig.run("Read notes.txt", "--allowedTools", "Read")
    loop = [e for e in run.messages if request_kind(json.loads(e.body)) in ("main", "tool_result")]
    rules = [e.response_header("x-tierwise-session-rule") for e in loop]
    tiers = [e.response_header("x-tierwise-tier") for e in loop]
    assert rules == ["new-session", "continuation", "continuation", "tool-errors", "continuation"]
    for exchange in loop[1:]:
        (result,) = tool_results(json.loads(exchange.body))
        assert result.get("is_error") and "<tool_use_error>" in tool_result_text(result)
    names = rig.settings().tier_names
    assert names.index(str(tiers[3])) == names.index(str(tiers[0])) + 1
    assert tiers[4] == tiers[3]
    assert "thinking block(s)" in (loop[3].response_header("x-tierwise-adapted") or "")
    check_traffic(rig, run)

"""One Claude Code session that exercises what a transcript records, and how a request rebuilt
from a transcript is compared with what the CLI really sent.

The session (:func:`run_session`), six ``claude -p`` runs continuing one session through the
gateway: a Bash tool loop; two Read calls in one reply (their results in one message); a turn
that delegates to a sub-agent (its own transcript file) and Claude Code's notification when the
sub-agent finishes; ``/compact``; a prompt after the
compaction (the summary, the messages kept verbatim, then the prompt); a tool loop where the
model misuses Read until the loop escalates (``tool-errors``).

Used by tests/clients/test_claude_code.py (live, with the pinned CLI) and by
``python -m tests.clients.record_transcripts`` (the fixtures in
tests/data/claude_code/transcripts/, checked by tests/test_transcripts.py without the CLI).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from tests.clients.claude_rig import ClaudeCodeRig
from tests.clients.recorder import Exchange
from tests.clients.scripted_upstream import request_kind, tool_results, user_text
from tests.clients.test_claude_code import (
    delegate_to_a_sub_agent,
    misuse_read_four_times,
    shout_the_notes,
    sse_usage,
    summarise_when_asked,
)
from tierwise.sessions.replay import TraceRequest

COMPACT_PREFIX = "CRITICAL: Respond with TEXT ONLY"
SUB_AGENT = "You are an agent for Claude Code"


def read_both(body: dict[str, Any], workdir: str) -> Mapping[str, Any] | None:
    """Two Read calls in one reply (made in parallel), then an answer from both results."""
    if request_kind(body) == "tool_result":
        return {"reply_text": f"Read {len(tool_results(body))} files."}
    read = "Read"
    return {
        "reply_text": "Reading both.",
        "tool_use": {"name": read, "input": {"file_path": f"{workdir}/notes.txt"}},
        "also": [{"name": read, "input": {"file_path": f"{workdir}/shout.txt"}}],
    }


def respond(body: dict[str, Any], workdir: str = "") -> Mapping[str, Any] | None:
    """The fake model's answer for each request of the session."""
    text = user_text(body)
    last = json.dumps((body.get("messages") or [])[-2:])
    if text.lstrip().startswith(COMPACT_PREFIX):
        return summarise_when_asked(body)
    if "both files" in text or "Reading both." in last:
        return read_both(body, workdir)
    if "with a sub-agent" in text or SUB_AGENT in json.dumps(body.get("system")):
        return delegate_to_a_sub_agent(body)
    if text.rstrip().endswith("Read notes.txt") or "tool_use_error" in last:
        return misuse_read_four_times(body)
    if "Shout" in text or request_kind(body) == "tool_result":
        return shout_the_notes(body)
    return summarise_when_asked(body)


def run_session(rig: ClaudeCodeRig) -> None:
    (rig.workdir / "notes.txt").write_text("The secret word is pelican.\n")
    rig.upstream.respond = lambda body: respond(body, str(rig.workdir))
    rig.run("Shout what notes.txt says.", "--allowedTools", "Bash")
    rig.run("Compare both files.", "--continue", "--allowedTools", "Read")
    rig.run("Look into notes.txt with a sub-agent.", "--continue", "--allowedTools", "Agent,Read")
    rig.run("/compact", "--continue")
    rig.run("And 3+3? Answer with one number.", "--continue")
    rig.run("Read notes.txt", "--continue", "--allowedTools", "Read")


def is_compaction(body: Mapping[str, Any]) -> bool:
    return user_text(body).lstrip().startswith(COMPACT_PREFIX)


# -- comparing a rebuilt request with the one sent ------------------------------------------
def _blocks(content: Any) -> list[Any]:
    return [{"type": "text", "text": content}] if isinstance(content, str) else list(content or [])


def exact_messages(messages: list[Any]) -> list[Any]:
    """The messages as the API reads them: a text content as a string or as one text block is
    the same content."""
    return [{**m, "content": _blocks(m.get("content"))} for m in messages]


def loose_messages(messages: list[Any]) -> list[Any]:
    """What a transcript without recorded requests holds of the messages: no ``role:
    system`` messages, reminders (nor a task notification, which Claude Code sends inside
    one), thinking blocks or cache breakpoints, text without trailing whitespace, a run of user
    messages as one."""
    out: list[dict[str, Any]] = []
    for message in messages:
        if message.get("role") == "system":
            continue
        content = []
        for sent in _blocks(message.get("content")):
            if sent.get("type") in ("thinking", "redacted_thinking"):
                continue
            block = {k: v for k, v in sent.items() if k != "cache_control"}
            if block.get("type") == "text":
                text = str(block.get("text", "")).rstrip()
                if text.lstrip().startswith(("<system-reminder>", "<task-notification>")):
                    continue  # reminders, and a notification (sent inside a reminder)
                block["text"] = text
            content.append(block)
        if out and out[-1]["role"] == message["role"] == "user":
            out[-1]["content"].extend(content)
        else:
            out.append({"role": message["role"], "content": content})
    return out


def digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:16]


PARAMS = ("model", "max_tokens", "thinking", "output_config", "context_management", "stream")


def sent_request(exchange: Exchange) -> dict[str, Any]:
    """What the CLI sent, as a rebuilt request is compared with it: digests of the messages
    (exact and loose), of the system prompt without its first block (the per-session billing
    header a transcript does not record) and of the tools; the parameters; the gateway's
    routing; and the usage streamed back."""
    body = json.loads(exchange.body)
    system = body.get("system") or []
    if system and str(system[0].get("text", "")).startswith("x-anthropic-billing-header"):
        system = system[1:]
    return {
        "exact": digest(exact_messages(body["messages"])),
        "loose": digest(loose_messages(body["messages"])),
        "system": digest(system),
        "tools": digest(body.get("tools")),
        "params": {k: body.get(k) for k in PARAMS},
        "compaction": is_compaction(body),
        "rule": exchange.response_header("x-tierwise-session-rule"),
        "tier": exchange.response_header("x-tierwise-tier"),
        "usage": sse_usage(exchange),
    }


def rebuilt_request(body: dict[str, Any]) -> dict[str, Any]:
    """The same view of a request rebuilt from a transcript."""
    return {
        "exact": digest(exact_messages(body["messages"])),
        "loose": digest(loose_messages(body["messages"])),
        "system": digest(body.get("system") or []),
        "tools": digest(body.get("tools")),
        "params": {k: body.get(k) for k in PARAMS},
    }


def usage_of(req: TraceRequest) -> dict[str, int]:
    assert req.reported is not None
    u = req.reported
    return {
        "input_tokens": u.input_tokens,
        "output_tokens": u.output_tokens,
        "cache_read_input_tokens": u.cache_read_tokens,
        "cache_creation_input_tokens": u.cache_write_5m_tokens + u.cache_write_1h_tokens,
    }


def pair_calls(
    sent: list[dict[str, Any]],
    requests: list[TraceRequest],
    decisions: list[tuple[str, str, str]],
    key: str,
) -> list[TraceRequest]:
    """Each call the CLI made (:func:`sent_request`) paired with the one request rebuilt from
    its transcript: the same messages (``key``: "exact" or "loose"), the same usage, and the
    same session rule and tier in the replay as the gateway chose. The compaction's summary
    request, which a transcript does not record, with the one rebuilt from its record."""
    assert len(requests) == len(sent)
    chosen = {where: (rule, tier) for where, rule, tier in decisions}
    unmatched = list(requests)
    paired = []
    for call in sent:  # in the order the CLI sent them (a sub-agent runs alongside)
        if call["compaction"]:
            req = next(r for r in unmatched if r.shape.client_turn == "compact")
            assert req.shape.kind == "continuation" and "(compaction, rebuilt)" in req.where
        else:
            req = next(r for r in unmatched if r.body and rebuilt_request(r.body)[key] == call[key])
            assert usage_of(req) == call["usage"], req.where
        unmatched.remove(req)
        paired.append(req)
        assert chosen[req.where] == (call["rule"], call["tier"]), req.where
    return paired

"""Claude Code's own session transcripts, read as replay traces.

Claude Code keeps every session it runs in ``~/.claude/projects/<project>/<session id>.jsonl``,
and each sub-agent's conversation in ``<session id>/subagents/agent-<id>.jsonl``: one JSON
object per line, each with a ``type`` and the ``sessionId``. They are the session traces every
Claude Code user already has, so ``tierwise replay ~/.claude/projects`` replays them.

Each model call becomes one request line for :func:`tierwise.sessions.replay.load_requests`
(``{"body", "headers", "t", "session", "response"?}``), rebuilt one of two ways:

**Exactly**, from the requests Claude Code recorded (2.1.3xx writes one ``api-request`` line
per call it sends):

* ``params``: the model asked for, ``max_tokens``, ``thinking``, ``output_config``,
  ``context_management``, and ``betas`` (sent as the ``anthropic-beta`` header);
* ``shapeHash``: the envelope, an ``api-request-shape`` line holding ``system`` and ``tools``;
* ``base``, ``keep`` and ``tail``: the first ``keep`` messages of an earlier request of the
  file, then the ``tail`` messages, named by content hash (SHA-256 of the message as JSON
  with sorted keys). An ``api-request-blob`` line holds a message the conversation lines do
  not; the others are derived from those lines: a user line's message (a prompt also as one
  text block) and an assistant reply's content blocks, joined across its lines;
* ``cacheControl``: where the request's breakpoints are (``path`` into the body, ``value``).

Not recorded, so not rebuilt: the first system block (a billing header that changes every
session), ``metadata`` (the session id comes from the lines, sent as Claude Code's
``x-claude-code-session-id`` header) and ``stream`` (always true). The same content may differ
in form from what was sent: a message's text as a string or as one text block (the API reads
them alike). A request whose base, envelope or messages the file does not hold is skipped,
with the reason.

**From the conversation** (earlier versions, which record no requests; a session continued
after an update has both kinds of record): each reply of the model (the assistant lines
sharing a ``message.id``) is one request, whose messages are the conversation up to it: the
lines from the reply's parent back to the root (``parentUuid``), the messages a compaction
kept verbatim after its summary, user lines joined into one message while they follow each
other, and an assistant reply's lines into one. Thinking blocks are left out (those versions
do not send them back). The system prompt and tools are not in such a transcript. A stand-in system
prompt names Claude Code (its sub-agent, for a sidechain) and holds the unrecorded envelope's
size: the first reply's recorded input less its messages' estimate. The stand-in tools are
the ones the session used. The reminders Claude Code adds to a user turn are missing as well.
Token counts are calibrated per request from the recorded usage, as for any trace.

Replies: Claude Code writes one assistant line per content block, each repeating the usage,
with the final output count on the last. The reply's usage is that of its line with the most
output tokens, and the stop reason that of its last line. An API error (a ``<synthetic>``
reply) means the call was refused: it is skipped. So is a recorded request with no reply:
Claude Code records each attempt of a request it retries (the real CLI retried an
``invalid_request_error`` six times, each its own ``api-request`` line with no reply, then
wrote an "API Error" line of its own).

Resumed and forked sessions: ``--resume ID --fork-session`` starts the new session's file with
a copy of the history, replies included. A reply that names its request (``requestRef``,
2.1.3xx) is never rebuilt from the conversation, so the copy adds nothing. Before 2.1.3xx the
copy differs from the original only in its ``sessionId``: each reply (by message id) is rebuilt
once, from the first file of the trace that holds it, which may be the fork's.

Not in a transcript at all: the compaction's own summary request and the small fast model's
side requests (session titles, command checks). A replay of transcripts covers the main loop
and its sub-agents.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import orjson

from tierwise.gateway.shape import system_text
from tierwise.sessions.replay import MAX_FILL, filler, mark_last
from tierwise.sessions.traces import seconds

# Line types that only a Claude Code transcript has (with a sessionId): how a file is known.
_KNOWN = frozenset({"user", "assistant", "api-request", "api-request-blob", "api-request-shape"})
SYNTHETIC = "<synthetic>"
MAX_CHAIN = 200_000  # conversation lines followed back from one reply (a cycle guard)
MAX_USER_RUN = 16  # user lines that follow each other, tried as one message
_IDENTITY = "You are Claude Code, Anthropic's official CLI for Claude."
_SUB_AGENT_IDENTITY = "You are an agent for Claude Code, Anthropic's official CLI for Claude."
DEFAULT_MAX_TOKENS = 32_000
# How a request line was rebuilt, when not exactly as recorded (``"rebuilt"`` in the line)
FROM_CONVERSATION = "from the conversation, with a stand-in system prompt and tools"
COMPACTION = "a compaction's summary request, from the compaction's record"
_NOT_SENT = frozenset({"thinking", "redacted_thinking"})
NO_REPLY = "no reply in the transcript (an attempt that failed, or was cut off)"

Line = tuple[str, dict[str, Any] | str]  # (where, request line) or (where, why it is skipped)


def is_transcript(records: list[tuple[str, Any]]) -> bool:
    """Whether a file's records are a Claude Code session transcript."""
    return any(
        isinstance(obj, dict)
        and isinstance(obj.get("type"), str)
        and obj["type"] in _KNOWN
        and isinstance(obj.get("sessionId"), str)
        for _where, obj in records
    )


def requests(records: list[tuple[str, Any]], seen: set[str] | None = None) -> Iterator[Line]:
    """The request lines of one transcript file, in the order they were sent (or the reason
    each one is skipped), with each compaction's summary request rebuilt. ``seen``: the
    replies (message ids) already rebuilt from the conversation in other files of the same
    trace, so that the history a fork copied (before 2.1.3xx, with nothing that tells the copy
    from the original) is replayed once."""
    transcript = _Transcript(records)
    conversation = transcript.conversation(set() if seen is None else seen)
    made = sorted([*transcript.recorded(), *conversation], key=lambda c: c.pos)
    for call in transcript.with_compactions(made):
        yield call.where, call.line


@dataclass(slots=True)
class _Call:
    """One model call found in a transcript: where, its request line (or why it is skipped),
    the reply's message (to rebuild a compaction after it) and whether it is a sub-agent's."""

    pos: int
    where: str
    line: dict[str, Any] | str
    reply: dict[str, Any] | None = None
    sidechain: bool = False


def digest(message: Any) -> str:
    """How Claude Code names a message in ``tail``: SHA-256 of its JSON with sorted keys."""
    return hashlib.sha256(orjson.dumps(message, option=orjson.OPT_SORT_KEYS)).hexdigest()


class _Transcript:
    def __init__(self, records: list[tuple[str, Any]]) -> None:
        self.shapes: dict[str, dict[str, Any]] = {}
        self.blobs: dict[str, Any] = {}
        self.api_requests: list[tuple[int, str, dict[str, Any]]] = []
        self.lines: list[tuple[int, str, dict[str, Any]]] = []  # user and assistant lines
        self.boundaries: list[tuple[int, str, dict[str, Any]]] = []  # compactions
        self.by_uuid: dict[str, dict[str, Any]] = {}
        self.replies: dict[str, list[dict[str, Any]]] = defaultdict(list)  # by requestRef
        self._pool: dict[str, Any] | None = None
        # a compaction's summary line → the messages kept verbatim after it (head … tail)
        self.preserved: dict[str, dict[str, Any]] = {}
        # each reply's lines, and the user lines holding results of its tool calls, by the
        # reply (for the conversation path; see _siblings)
        self._reply_lines: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self._results: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self._answers: dict[int, str] = {}  # id() of a user line of results → the reply
        for pos, (where, obj) in enumerate(records):
            if not isinstance(obj, dict):
                continue
            kind = obj.get("type")
            uuid = obj.get("uuid")
            if isinstance(uuid, str):
                self.by_uuid[uuid] = obj
            if kind == "api-request-shape" and isinstance(obj.get("shape"), dict):
                self.shapes[str(obj.get("shapeHash"))] = obj["shape"]
            elif kind == "api-request-blob" and isinstance(obj.get("message"), dict):
                self.blobs[str(obj.get("hash"))] = obj["message"]
            elif kind == "api-request":
                self.api_requests.append((pos, where, obj))
            elif kind == "system" and obj.get("subtype") == "compact_boundary":
                if isinstance(uuid, str):
                    self.boundaries.append((pos, where, obj))
                meta = obj.get("compactMetadata")
                kept = meta.get("preservedSegment") if isinstance(meta, dict) else None
                if isinstance(kept, dict) and isinstance(kept.get("anchorUuid"), str):
                    self.preserved[kept["anchorUuid"]] = kept
            elif kind in ("user", "assistant") and isinstance(obj.get("message"), dict):
                self.lines.append((pos, where, obj))
                if kind == "assistant" and isinstance(obj.get("requestRef"), str):
                    self.replies[obj["requestRef"]].append(obj)
        self._index_replies()

    # -- exactly, from the recorded requests -----------------------------------------------
    def recorded(self) -> Iterator[_Call]:
        sent: dict[str, list[Any]] = {}
        for pos, line_at, request in self.api_requests:
            rid = str(request.get("id"))
            where = f"{line_at} (api-request {rid})"
            try:
                messages = self._messages(request, sent)
            except LookupError as exc:
                yield _Call(pos, where, str(exc))
                continue
            sent[rid] = messages
            envelope = self.shapes.get(str(request.get("shapeHash")))
            if envelope is None:
                yield _Call(pos, where, "its envelope (api-request-shape) is not in the transcript")
                continue
            params = request.get("params")
            params = dict(params) if isinstance(params, dict) else {}
            betas = params.pop("betas", None)
            body: dict[str, Any] = {**envelope, **params, "messages": messages, "stream": True}
            try:
                body = _with_cache_control(body, request.get("cacheControl"))
            except LookupError as exc:
                yield _Call(pos, where, str(exc))
                continue
            replies = self.replies.get(rid, [])
            if not replies:
                # Claude Code records a request before it is sent, and again for each attempt
                # it retries; an attempt that failed has no reply (the session ends with an
                # "API Error" line of Claude Code's own when they all did)
                yield _Call(pos, where, NO_REPLY)
                continue
            line = _line(body, _headers(request, betas), request, replies)
            sidechain = bool(request.get("agentId"))
            yield _Call(pos, where, line, _reply(replies), sidechain)

    def _messages(self, request: dict[str, Any], sent: dict[str, list[Any]]) -> list[Any]:
        base = request.get("base")
        keep = request.get("keep") or 0
        if not isinstance(keep, int) or isinstance(keep, bool) or keep < 0:
            raise LookupError(f"keep must be a count of messages, got {keep!r}")
        prior: list[Any] = []
        if base is not None:
            if str(base) not in sent:
                raise LookupError(f"its base request {base} is not in the transcript")
            prior = sent[str(base)]
        if keep > len(prior):
            raise LookupError(f"keep={keep} but its base request had {len(prior)} messages")
        tail = request.get("tail") or []
        if not isinstance(tail, list):
            raise LookupError("tail must be a list of message hashes")
        out = prior[:keep]
        for name in tail:
            message = self.blobs.get(str(name))
            if message is None:
                message = self.pool().get(str(name))
            if message is None:
                raise LookupError(f"message {str(name)[:16]}… is not in the transcript")
            out.append(message)
        return out

    def pool(self) -> dict[str, Any]:
        """The messages the conversation lines hold, by content hash."""
        if self._pool is not None:
            return self._pool
        pool: dict[str, Any] = {}
        for message in _line_messages(obj for _pos, _where, obj in self.lines):
            pool[digest(message)] = message
        self._pool = pool
        return pool

    # -- from the conversation lines -------------------------------------------------------
    def conversation(self, seen: set[str]) -> Iterator[_Call]:
        """The replies whose request is not recorded (all of them before 2.1.3xx; a session
        continued across an update has both kinds), each rebuilt from the conversation. A
        reply that names its request (``requestRef``) is not one of them, even when that
        request is in another file: ``--fork-session`` copies the history it forks, replies
        included, into the new session's file."""
        replies: dict[str, list[tuple[int, str, dict[str, Any]]]] = defaultdict(list)
        recorded = bool(self.api_requests)
        for pos, where, obj in self.lines:
            if obj.get("requestRef") is not None:
                # its request is recorded: in this file (see recorded()), or, for the history
                # a resumed or forked session copies, in the session that made it
                continue
            if obj.get("type") == "assistant" and not _synthetic(obj):
                key = _reply_key(obj)
                if key in seen and key not in replies:
                    continue  # a copy of a reply rebuilt from another file
                replies[key].append((pos, where, obj))
            elif obj.get("isApiErrorMessage") and not recorded:
                # (with recorded requests, the attempts it ends are skipped for no reply)
                yield _Call(pos, where, "refused or failed (an API error in the transcript)")
        seen.update(replies)
        tools = sorted(
            {
                str(block.get("name"))
                for group in replies.values()
                for _p, _w, obj in group
                for block in _blocks(obj["message"].get("content"))
                if block.get("type") == "tool_use" and block.get("name")
            }
        )
        stand_in: int | None = None
        for group in replies.values():
            pos, line_at, first = group[0]
            where = f"{line_at} (reply {first['message'].get('id') or first.get('uuid')})"
            chain = self._chain(first.get("parentUuid"))
            messages = _join([obj for obj in chain if obj.get("type") in ("user", "assistant")])
            lines = [obj for _p, _w, obj in group]
            if not messages:
                yield _Call(pos, where, "a reply with no conversation before it")
                continue
            model = first.get("requestedModel") or first["message"].get("model")
            sidechain = bool(first.get("isSidechain"))
            if stand_in is None:
                stand_in = _stand_in_size(messages, tools, lines)
            body: dict[str, Any] = {
                "model": model if isinstance(model, str) and model else "unknown",
                "max_tokens": DEFAULT_MAX_TOKENS,
                "stream": True,
                "system": _stand_in_system(sidechain, stand_in),
                "tools": [_stand_in_tool(name) for name in tools],
                "messages": mark_last(messages, 1),
            }
            request = {
                "sessionId": first.get("sessionId"),
                "timestamp": (chain[-1] if chain else first).get("timestamp"),
            }
            line = _line(body, _headers(request, None), request, lines)
            if isinstance(line, dict):
                line["rebuilt"] = FROM_CONVERSATION
            yield _Call(pos, where, line, _reply(lines), sidechain)

    def with_compactions(self, calls: list[_Call]) -> list[_Call]:
        """``calls`` and, for each compaction, its summary request, rebuilt (a transcript
        does not record it): the main conversation's last request before the compaction, its
        reply, and Claude Code's instruction to summarise; its input is the ``preTokens``
        the compaction recorded, its output estimated from the summary it wrote (the
        analysis written before the summary is not kept, so this is a floor)."""
        if not self.boundaries:
            return calls
        summaries = {
            obj.get("parentUuid"): obj
            for _p, _w, obj in self.lines
            if obj.get("isCompactSummary") and isinstance(obj.get("parentUuid"), str)
        }
        out = list(calls)
        for pos, where, boundary in self.boundaries:
            before = [
                c for c in calls if c.pos < pos and not c.sidechain and isinstance(c.line, dict)
            ]
            if not before:
                continue
            summary = summaries.get(str(boundary.get("uuid")))
            text = system_text(summary["message"].get("content")) if summary is not None else ""
            previous = before[-1]
            assert isinstance(previous.line, dict)  # as filtered above
            line = _compaction(previous.line, previous.reply, boundary, len(text) // 4)
            out.append(_Call(pos, f"{where} (compaction, rebuilt)", line))
        out.sort(key=lambda c: c.pos)
        return out

    def _chain(self, parent: Any) -> list[dict[str, Any]]:
        """The lines from ``parent`` back to the conversation's root, oldest first. After a
        compaction's summary come the messages it kept verbatim (``preservedSegment``). A
        reply that called tools in parallel is a branch per call (each result's parent is
        its own call), so the chain holds one branch: the reply's other lines and the other
        results are added where the reply and its results are (file order)."""
        out: list[dict[str, Any]] = []
        for obj in self._walk(parent):
            kept = self.preserved.get(str(obj.get("uuid")))
            if kept is not None:
                out.extend(self._walk(kept.get("tailUuid"), kept.get("headUuid")))
            out.append(obj)
        out.reverse()
        return self._siblings(out)

    def _siblings(self, chain: list[dict[str, Any]]) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        done: set[int] = set()
        for obj in chain:
            if id(obj) in done:
                continue
            group: list[dict[str, Any]] = [obj]
            if obj.get("type") == "assistant":
                group = self._reply_lines.get(_reply_key(obj), group)
            else:
                called = self._answers.get(id(obj))
                if called is not None:
                    group = self._results.get(called, group)
            for line in group:
                if id(line) not in done:
                    done.add(id(line))
                    out.append(line)
        return out

    def _index_replies(self) -> None:
        """Each reply's lines, and the user lines holding results of its tool calls."""
        calls: dict[str, str] = {}  # tool_use id → the reply that made the call
        for _pos, _where, obj in self.lines:
            content = _blocks(obj["message"].get("content"))
            if obj.get("type") == "assistant":
                key = _reply_key(obj)
                self._reply_lines[key].append(obj)
                for block in content:
                    if block.get("type") == "tool_use" and isinstance(block.get("id"), str):
                        calls[block["id"]] = key
                continue
            answered = {
                calls[str(b.get("tool_use_id"))]
                for b in content
                if b.get("type") == "tool_result" and str(b.get("tool_use_id")) in calls
            }
            if len(answered) == 1:
                (key,) = answered
                self._answers[id(obj)] = key
                self._results[key].append(obj)

    def _walk(self, start: Any, stop: Any = None) -> Iterator[dict[str, Any]]:
        """The lines from ``start`` back through their parents (newest first), to ``stop``
        or the root; a cycle or a missing line ends the walk."""
        seen: set[str] = set()
        while isinstance(start, str) and start not in seen and len(seen) < MAX_CHAIN:
            seen.add(start)
            obj = self.by_uuid.get(start)
            if obj is None:
                return
            yield obj
            if start == stop:
                return
            start = obj.get("parentUuid")


# -- helpers -------------------------------------------------------------------------------
def _line(
    body: dict[str, Any],
    headers: dict[str, str],
    request: dict[str, Any],
    replies: list[dict[str, Any]],
) -> dict[str, Any] | str:
    """A request line: the body, headers, time, session and the reply's usage."""
    line: dict[str, Any] = {"body": body, "headers": headers}
    t = seconds(request.get("timestamp"))
    if t is not None:
        line["t"] = t
    if isinstance(request.get("sessionId"), str):
        line["session"] = request["sessionId"]
    real = [r for r in replies if not _synthetic(r)]
    if replies and not real:
        return "refused or failed (an API error in the transcript)"
    usages = [u for u in (r["message"].get("usage") for r in real) if isinstance(u, dict)]
    if usages:
        usage = max(reversed(usages), key=lambda u: _int(u.get("output_tokens")))
        stops = [r["message"].get("stop_reason") for r in real]
        stop = next((s for s in reversed(stops) if s), None)
        line["response"] = {"usage": usage, "stop_reason": stop}
    return line


def _reply(lines: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The reply's message, its content blocks joined across its lines."""
    blocks = [b for r in lines if not _synthetic(r) for b in _blocks(r["message"].get("content"))]
    return {"role": "assistant", "content": blocks} if blocks else None


COMPACT_INSTRUCTION = (
    "CRITICAL: Respond with TEXT ONLY. Do NOT call any tools.\n\nYour task is to create a "
    "detailed summary of the conversation so far. (Claude Code's instruction to summarise, "
    "standing in for the one it sent: a transcript does not record it.)"
)


def _compaction(
    previous: dict[str, Any],
    reply: dict[str, Any] | None,
    boundary: dict[str, Any],
    output_tokens: int,
) -> dict[str, Any]:
    body = dict(previous["body"])
    instruction = {
        "role": "user",
        "content": [
            {"type": "text", "text": COMPACT_INSTRUCTION, "cache_control": {"type": "ephemeral"}}
        ],
    }
    body["messages"] = [*body["messages"], *([reply] if reply else []), instruction]
    meta = boundary.get("compactMetadata")
    meta = meta if isinstance(meta, dict) else {}
    line: dict[str, Any] = {"body": body, "headers": previous["headers"]}
    if "session" in previous:
        line["session"] = previous["session"]
    t = seconds(boundary.get("timestamp"))
    if t is not None:
        took = _int(meta.get("durationMs")) / 1000.0
        line["t"] = max(t - took, previous.get("t", t - took))
    usage: dict[str, int] = {"output_tokens": output_tokens}
    if _int(meta.get("preTokens")) > 0:
        usage["input_tokens"] = _int(meta.get("preTokens"))
    line["response"] = {"usage": usage, "stop_reason": "end_turn"}
    line["rebuilt"] = COMPACTION
    return line


def _reply_key(line: dict[str, Any]) -> str:
    """The reply an assistant line belongs to (Claude Code writes a line per content block)."""
    message = line["message"]
    return str(message.get("id") or line.get("requestId") or line.get("uuid"))


def _synthetic(line: dict[str, Any]) -> bool:
    message = line.get("message")
    model = message.get("model") if isinstance(message, dict) else None
    return model == SYNTHETIC or bool(line.get("isApiErrorMessage"))


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _blocks(content: Any) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    if isinstance(content, list):
        return [b for b in content if isinstance(b, dict)]
    return []


def _line_messages(lines: Iterator[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Each message the conversation lines hold, in every form Claude Code may have hashed:
    a user line's message (a prompt also as one text block); user lines that follow each
    other as one message (the results of tool calls made in parallel, one line each), for
    every run of up to ``MAX_USER_RUN`` of them; and an assistant reply with its content
    blocks joined across its lines."""
    replies: dict[str, list[Any]] = {}
    run: list[list[Any]] = []  # the content blocks of the user lines since the last reply
    for obj in lines:
        message = obj["message"]
        content = message.get("content")
        if obj.get("type") == "user":
            yield {"role": "user", "content": content}
            if isinstance(content, str):
                yield {"role": "user", "content": _blocks(content)}
            run = [*run[1 - MAX_USER_RUN :], _blocks(content)] if run else [_blocks(content)]
            for start in range(len(run) - 1):  # the runs that end with this line
                yield {"role": "user", "content": [b for part in run[start:] for b in part]}
        elif not _synthetic(obj) and isinstance(content, list):
            run = []
            replies.setdefault(str(message.get("id") or obj.get("uuid")), []).extend(content)
    for blocks in replies.values():
        yield {"role": "assistant", "content": blocks}


def _join(chain: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """API messages from conversation lines: a run of user lines is one user message, and the
    lines of one assistant reply are one assistant message (a repeated block once). Claude
    Code's own notes written as the assistant ("No response requested.") are sent; API errors
    and thinking blocks are not (the versions that record no requests do not send thinking
    back, and the API does not count an earlier turn's thinking as input)."""
    out: list[dict[str, Any]] = []
    last_reply: Any = None
    for obj in chain:
        message = obj.get("message")
        if obj.get("isApiErrorMessage") or not isinstance(message, dict):
            continue
        role = "assistant" if obj.get("type") == "assistant" else "user"
        blocks = [b for b in _blocks(message.get("content")) if b.get("type") not in _NOT_SENT]
        reply = message.get("id") if role == "assistant" else None
        same = out and out[-1]["role"] == role and (role == "user" or reply == last_reply)
        if same:
            content = out[-1]["content"]
            content.extend(b for b in blocks if role == "user" or b not in content)
        else:
            out.append({"role": role, "content": list(blocks)})
        last_reply = reply
    return out


def _stand_in_size(
    messages: list[dict[str, Any]], tools: list[str], replies: list[dict[str, Any]]
) -> int:
    """Characters of stand-in system prompt that make the first request's estimate (about 4
    characters a token) match the input it recorded."""
    usage = next((r["message"].get("usage") for r in replies if not _synthetic(r)), None)
    if not isinstance(usage, dict):
        return 0
    recorded = sum(
        _int(usage.get(k))
        for k in ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")
    )
    known = len(orjson.dumps(messages)) + sum(len(orjson.dumps(_stand_in_tool(t))) for t in tools)
    return max(0, min(MAX_FILL, recorded * 4 - known))


def _stand_in_system(sidechain: bool, size: int) -> list[dict[str, Any]]:
    """One system block: the agent's identity line (so the block is read as the agent's own
    prompt, not the caller's words) and filler of the unrecorded envelope's size."""
    identity = _SUB_AGENT_IDENTITY if sidechain else _IDENTITY
    text = f"{identity}\n{filler(max(0, size - len(identity) - 1), seed=0)}"
    return [{"type": "text", "text": text, "cache_control": {"type": "ephemeral"}}]


def _stand_in_tool(name: str) -> dict[str, Any]:
    return {"name": name, "description": "", "input_schema": {"type": "object"}}


def _headers(request: dict[str, Any], betas: Any) -> dict[str, str]:
    headers: dict[str, str] = {}
    session = request.get("sessionId")
    if isinstance(session, str) and session:
        headers["x-claude-code-session-id"] = session
    if isinstance(betas, list) and all(isinstance(b, str) for b in betas) and betas:
        headers["anthropic-beta"] = ",".join(betas)
    return headers


def _with_cache_control(body: dict[str, Any], controls: Any) -> dict[str, Any]:
    """``body`` with a ``cache_control`` at each recorded path, copying only what changes (the
    messages are shared with the other requests of the transcript). A text content written
    as a string becomes one text block to carry it, as Claude Code sends it."""
    if not controls:
        return body
    if not isinstance(controls, list):
        raise LookupError("cacheControl must be a list")
    out = dict(body)
    for control in controls:
        path = control.get("path") if isinstance(control, dict) else None
        if not isinstance(path, list) or not path:
            raise LookupError(f"a cache breakpoint without a path: {control!r}"[:200])
        node: Any = out
        for depth, key in enumerate(path):
            child = _child(node, key, path)
            if isinstance(child, str) and key == "content" and depth + 1 < len(path):
                child = [{"type": "text", "text": child}]
            elif isinstance(child, dict):
                child = dict(child)
            elif isinstance(child, list):
                child = list(child)
            else:
                raise LookupError(f"a cache breakpoint at {path}, which is not a block")
            node[key] = child
            node = child
        if not isinstance(node, dict):
            raise LookupError(f"a cache breakpoint at {path}, which is not a block")
        node["cache_control"] = control.get("value") or {"type": "ephemeral"}
    return out


def _child(node: Any, key: Any, path: list[Any]) -> Any:
    if isinstance(node, dict) and isinstance(key, str) and key in node:
        return node[key]
    if isinstance(node, list) and isinstance(key, int) and 0 <= key < len(node):
        return node[key]
    raise LookupError(f"a cache breakpoint at {path}, which the request does not have")

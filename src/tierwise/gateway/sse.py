"""Server-sent events: split a relayed stream into events, check what they say, and write
Messages streams.

:class:`EventSplitter` finds event boundaries in linear time (each byte is scanned once, the
pending buffer only grows by appends), supports the three line endings of the SSE spec
(``\n``, ``\r\n``, lone ``\r``), bounds a single event (and so the pending buffer), and
returns each event's name, data and exact raw bytes, so a relay can forward the upstream's
bytes unchanged, event by event. :class:`StreamTracker` checks each event strictly (anything a
client could not use is :class:`MalformedEvent`) and keeps what billing and the ledger need
(usage from ``message_start`` overridden by the final ``message_delta``, stop reason, whether
``message_stop`` or an ``error`` event arrived).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import orjson

from tierwise.gateway.buffers import FREE_EVENT_BYTES, HELD, BufferCapExceeded
from tierwise.gateway.validate import checked_usage, show

DEFAULT_MAX_EVENT_BYTES = 16 * 1024 * 1024


class MalformedEvent(ValueError):
    """The upstream sent an SSE event (or bytes) clients cannot use."""


class SSEEvent(NamedTuple):
    """One complete event. ``name``: its ``event:`` field (None without one); ``data``: its
    ``data:`` lines joined with ``\n``; ``raw``: the exact bytes it came in, from the end of
    the previous event through its blank line (comments and empty blocks before it included),
    so that concatenating every ``raw`` and :meth:`EventSplitter.finish` gives back the input.
    (An event whose blank line ends in a CR at the end of a chunk is returned at once; if an
    LF follows in the next chunk, it starts the next event's ``raw``.)"""

    name: str | None
    data: bytes
    raw: bytes


_LOOKBACK = 3  # an end is at most 4 bytes: resume a search this far before the new bytes
_SMALL = 64 * 1024  # a pending buffer up to this size is joined with the next chunk as bytes


_NEW = tuple.__new__  # builds an SSEEvent without NamedTuple's Python-level __new__
# Names the API sends, looked up instead of decoded (most events need no decoding at all).
_NAMES = {
    n.encode(): n
    for n in (
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
        "ping",
        "error",
    )
}


def _name(raw: bytes) -> str:
    name = _NAMES.get(raw)
    return name if name is not None else raw.decode("utf-8", "replace")


def _fields(block: bytes) -> tuple[str | None, bytes, bool]:
    """(event name, data, whether the block had any event/data field)."""
    # The usual shape, "event: NAME\ndata: JSON\n\n", without splitting lines.
    if block.startswith(b"event: ") and b"\r" not in block:
        nl = block.find(b"\n", 7)
        if block.startswith(b"data: ", nl + 1):
            end = block.find(b"\n", nl + 7)
            if end == len(block) - 2:
                return _name(block[7:nl]), block[nl + 7 : end], True
    name: str | None = None
    data: list[bytes] = []
    for line in block.splitlines():
        if not line or line[0] == 58:  # empty, or a ":" comment
            continue
        key, _, value = line.partition(b":")
        if value[:1] == b" ":
            value = value[1:]
        if key == b"data":
            data.append(value)
        elif key == b"event":
            name = _name(value)
        # id, retry and unknown fields do not matter to a relay
    if len(data) == 1:
        return name, data[0], True
    return name, b"\n".join(data), name is not None or bool(data)


class EventSplitter:
    """Incremental SSE framing, linear in the bytes fed.

    ``feed(chunk)`` returns the events completed by ``chunk``. An event (or the bytes pending
    for one) larger than ``max_event_bytes`` raises :class:`MalformedEvent`; the pending
    buffer therefore never exceeds it. Blocks with no ``event``/``data`` field (comments,
    extra blank lines) are not returned: their bytes start the next event's ``raw``.

    Pending bytes beyond :data:`~tierwise.gateway.buffers.FREE_EVENT_BYTES` count against the
    process-wide cap on upstream bytes held (``gateway.upstream_max_buffered_bytes``); over it,
    ``feed`` raises :class:`MalformedEvent` too."""

    __slots__ = ("_buf", "_charged", "_cr", "_scan", "max_event_bytes")

    def __init__(self, max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES) -> None:
        if max_event_bytes < 1:
            raise ValueError("max_event_bytes must be at least 1")
        self.max_event_bytes = max_event_bytes
        self._buf = bytearray()
        self._scan = 0  # where the next search for an event end starts, in _buf
        self._cr = False  # a CR was seen: line endings need the full search
        self._charged = 0  # pending bytes counted in buffers.HELD

    def __del__(self) -> None:
        if self._charged:
            HELD.give(self._charged)

    def _charge(self, pending: int) -> None:
        """Count ``pending`` bytes (beyond the free allowance) in the process-wide cap."""
        want = pending if pending > FREE_EVENT_BYTES else 0
        have = self._charged
        if want > have:
            try:
                HELD.take(want - have)
            except BufferCapExceeded as exc:
                raise MalformedEvent(f"an incomplete SSE event of {pending} bytes: {exc}") from exc
        elif want < have:
            HELD.give(have - want)
        self._charged = want

    @property
    def pending(self) -> int:
        """Bytes held that belong to no returned event yet."""
        return len(self._buf)

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        if not self._buf and chunk.startswith(b"event: ") and len(chunk) <= self.max_event_bytes:
            # The usual case: the chunk is exactly one "event: NAME␤data: JSON␤␤".
            if chunk.endswith(b"\n\n") and b"\r" not in chunk:
                nl = chunk.find(b"\n", 7)
                if (
                    chunk.startswith(b"data: ", nl + 1)
                    and chunk.find(b"\n", nl + 7) == len(chunk) - 2
                ):
                    return [_NEW(SSEEvent, (_name(chunk[7:nl]), chunk[nl + 7 : -2], chunk))]
            elif chunk.endswith(b"\r\n\r\n") and chunk.count(b"\r") == chunk.count(b"\n") == 3:
                nl = chunk.find(b"\r\n", 7)
                if chunk.startswith(b"data: ", nl + 2):
                    self._cr = True
                    return [_NEW(SSEEvent, (_name(chunk[7:nl]), chunk[nl + 8 : -4], chunk))]
        return self._split(chunk)

    def _split(self, chunk: bytes) -> list[SSEEvent]:
        """The general case: any number of events, partial ones, any line endings."""
        data, pos = self._join(chunk)
        events: list[SSEEvent] = []
        split = self._split_cr if self._cr else self._split_lf
        start, searched = split(data, pos, events)
        self._keep(data, start, searched)
        return events

    def _event(
        self,
        data: bytes | bytearray,
        start: int,
        block_start: int,
        end: int,
        events: list[SSEEvent],
    ) -> bool:
        """Parse the block ``data[block_start:end]``; append its event (raw from ``start``)
        and return True, or return False for a block without fields."""
        if end - start > self.max_event_bytes:
            raise MalformedEvent(self._too_big(end - start))
        block = data[block_start:end]
        if type(block) is not bytes:
            block = bytes(block)
        name, payload, has_fields = _fields(block)
        if not has_fields:
            return False
        if block_start != start:  # field-less blocks before it belong to its raw
            block = bytes(data[start:end])
        events.append(_NEW(SSEEvent, (name, payload, block)))
        return True

    def _split_lf(
        self, data: bytes | bytearray, pos: int, events: list[SSEEvent]
    ) -> tuple[int, int]:
        """Events of a stream with LF line endings only: (start of what is left, end of what
        was searched). The usual shape is cut in place, without a call per event."""
        start = block_start = 0
        limit = self.max_event_bytes
        text = data if type(data) is bytes else None  # the fast path slices bytes only
        while (end := data.find(b"\n\n", pos) + 2) > 1:
            # "event: NAME\ndata: JSON\n\n": the first LF after "data: " is the end's first.
            if text is not None and block_start == start and end - start <= limit:
                nl = text.find(b"\n", start + 7)
                if (
                    text.startswith(b"event: ", start)
                    and text.startswith(b"data: ", nl + 1)
                    and text.find(b"\n", nl + 1) == end - 2
                ):
                    name = _name(text[start + 7 : nl])
                    events.append(_NEW(SSEEvent, (name, text[nl + 7 : end - 2], text[start:end])))
                    start = block_start = pos = end
                    continue
            if self._event(data, start, block_start, end, events):
                start = end
            block_start = pos = end
        return start, block_start

    def _split_cr(
        self, data: bytes | bytearray, pos: int, events: list[SSEEvent]
    ) -> tuple[int, int]:
        """Events of a stream that has CRs (CRLF or lone CR line endings, or a mix)."""
        start = block_start = 0
        limit = self.max_event_bytes
        text = data if type(data) is bytes else None  # the fast path slices bytes only
        none = len(data)  # "not found" for the searches below
        nn = rr = nr = -1  # next "\n\n", "\r\r", "\n\r" at or after pos
        while True:
            # Every end of an event (two line endings in a row, CRLF being one) contains one
            # of these pairs, and each pair ends one; each is searched once per feed.
            if nn < pos:
                nn = data.find(b"\n\n", pos)
                nn = none if nn < 0 else nn
            if rr < pos:
                rr = data.find(b"\r\r", pos)
                rr = none if rr < 0 else rr
            if nr < pos:
                nr = data.find(b"\n\r", pos)
                nr = none if nr < 0 else nr
            end = min(nn, rr, nr)
            if end == none:
                break
            # after "\r\r" or "\n\r", an LF completes the second ending (CRLF)
            end += 3 if end != nn and data[end + 2 : end + 3] == b"\n" else 2
            # "event: NAME\r\ndata: JSON\r\n\r\n", with no other CR or LF inside.
            if text is not None and block_start == start and end - start <= limit:
                nl = text.find(b"\n", start + 7) - 1
                if (
                    text.startswith(b"event: ", start)
                    and text.startswith(b"\r\ndata: ", nl)
                    and text.find(b"\n", nl + 2) == end - 3
                    and text.startswith(b"\r\n\r\n", end - 4)
                    and text.find(b"\r", start, nl) < 0
                    and text.find(b"\r", nl + 2, end - 4) < 0
                ):
                    name = _name(text[start + 7 : nl])
                    events.append(_NEW(SSEEvent, (name, text[nl + 8 : end - 4], text[start:end])))
                    start = block_start = pos = end
                    continue
            if self._event(data, start, block_start, end, events):
                start = end
            block_start = pos = end
        return start, block_start

    def _join(self, chunk: bytes) -> tuple[bytes | bytearray, int]:
        """The bytes to search (what is pending, then ``chunk``) and where to start."""
        if not self._cr and b"\r" in chunk:
            self._cr = True
        buf = self._buf
        if not buf:
            return chunk, 0
        if len(buf) <= _SMALL:  # one copy to bytes, then slices need no second copy
            data = bytes(buf) + chunk
            buf.clear()
            return data, self._scan
        buf += chunk  # a long pending event grows in place: each byte is copied once
        return buf, self._scan

    def _keep(self, data: bytes | bytearray, start: int, searched: int) -> None:
        """Keep ``data[start:]`` as pending; the search resumes near its end."""
        left = len(data) - start
        if left > self.max_event_bytes:
            self._drop()
            raise MalformedEvent(self._too_big(left, pending=True))
        buf = self._buf
        if data is buf:
            if start:
                del buf[:start]
        elif left:
            buf += data[start:]
        if left > FREE_EVENT_BYTES or self._charged:
            try:
                self._charge(left)
            except MalformedEvent:
                self._drop()
                raise
        self._scan = max(len(buf) - _LOOKBACK, searched - start, 0)

    def _drop(self) -> None:
        """Let the pending bytes go (the stream is failing: an exception's traceback may keep
        this splitter alive for a while, its buffer need not be)."""
        self._buf.clear()
        self._scan = 0
        self._charge(0)

    def _too_big(self, size: int, pending: bool = False) -> str:
        what = "an incomplete SSE event" if pending else "an SSE event"
        return f"{what} is larger than the {self.max_event_bytes}-byte limit ({size} bytes)"

    def finish(self) -> bytes:
        """The bytes held at the end of the stream (an incomplete event, or comments), and a
        fresh start. An incomplete event is not an event (the SSE spec drops it)."""
        rest = bytes(self._buf)
        self._buf = bytearray()
        self._scan = 0
        if self._charged:
            self._charge(0)
        return rest


class SSEParser:
    """``(name, data)`` pairs of complete events (the former interface, kept for callers
    that do not forward raw bytes; :class:`EventSplitter` does the work)."""

    def __init__(self, max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES) -> None:
        self._splitter = EventSplitter(max_event_bytes)

    def feed(self, chunk: bytes) -> list[tuple[str | None, bytes]]:
        return [(e.name, e.data) for e in self._splitter.feed(chunk)]

    @property
    def pending(self) -> int:
        return self._splitter.pending


_USAGE_KEYS = (
    "input_tokens",
    "output_tokens",
    "cache_creation_input_tokens",
    "cache_read_input_tokens",
    "cache_creation",
    "output_tokens_details",
    "server_tool_use",
)
_KNOWN = frozenset(
    {
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
        "error",
        "ping",
    }
)
# Delta types whose payload field clients read, and its type.
_DELTA_FIELDS: dict[str, tuple[str, type]] = {
    "text_delta": ("text", str),
    "input_json_delta": ("partial_json", str),
    "thinking_delta": ("thinking", str),
    "signature_delta": ("signature", str),
    "citations_delta": ("citation", dict),
}


_NAME_SHAPE = re.compile(r"[A-Za-z0-9_.-]{1,40}")


def _shown_name(name: str) -> str:
    """An event name as shown in messages: only a plain short name is quoted."""
    return repr(name) if _NAME_SHAPE.fullmatch(name) else "an event with an odd name"


def _index(obj: dict[str, Any], name: str) -> int:
    index = obj.get("index")
    if type(index) is not int or index < 0:
        raise MalformedEvent(f"{name} index is {show(index)}, not a non-negative integer")
    return index


@dataclass
class StreamTracker:
    """What a Messages stream said about itself, read on the side, checked strictly."""

    usage: dict[str, Any] = field(default_factory=dict)
    model: str | None = None
    message_id: str | None = None
    stop_reason: str | None = None
    complete: bool = False  # message_stop seen
    error: dict[str, Any] | None = None  # the error event's "error" object
    started: bool = False  # message_start seen
    blocks: int = 0  # content blocks started
    open_blocks: set[int] = field(default_factory=set)  # started and not stopped

    def observe(self, name: str | None, data: bytes) -> dict[str, Any] | None:
        """Check one event, update from it, and return its JSON object (None for a ``ping``
        and for an unknown event with no data, which clients skip).

        Raises :class:`MalformedEvent` for an event a client could not use: no ``event:``
        line; data that is not a JSON object; a ``type`` that does not match the name; usage
        counts that are not non-negative integers; a ``content_block_*`` index that is not a
        non-negative integer, not the next block (start) or not an open block (delta, stop);
        a block or delta without a string ``type``; a ``message_start`` that is not first or
        comes twice; any event after ``message_stop``. Unknown event names are allowed (the
        API may add some) if their data is a JSON object of the same ``type``."""
        if name is None:
            raise MalformedEvent("an event without an event: line")
        if self.complete:
            raise MalformedEvent(f"{_shown_name(name)} event after message_stop")
        if name == "ping":
            return None
        try:
            obj = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            if not data and name not in _KNOWN:
                return None
            raise MalformedEvent(f"{_shown_name(name)} event data is not JSON") from exc
        if not isinstance(obj, dict) or obj.get("type") != name:
            raise MalformedEvent(f"{_shown_name(name)} event data does not carry that type")
        check = _CHECKS.get(name)
        if check is not None:
            check(self, obj, data)
        return obj

    def _need_start(self, name: str) -> None:
        if not self.started:
            raise MalformedEvent(f"{name} before message_start")

    def _message_start(self, obj: dict[str, Any], data: bytes) -> None:
        if self.started:
            raise MalformedEvent("a second message_start")
        if self.blocks:
            raise MalformedEvent("message_start after content")
        message = obj.get("message")
        if not isinstance(message, dict):
            raise MalformedEvent(f"message_start message is {show(message)}, not an object")
        for key in ("id", "model"):
            if not isinstance(message.get(key), str):
                raise MalformedEvent(f"message_start message.{key} is not a string")
        if not isinstance(message.get("content"), list):
            raise MalformedEvent("message_start message.content is not a list")
        usage, problem = checked_usage(
            message.get("usage"),
            data,
            lambda exact: exact["message"].get("usage"),
            ("input_tokens", "output_tokens"),
        )
        if problem is not None:
            raise MalformedEvent(f"message_start {problem}")
        self.started = True
        self.model = message["model"]
        self.message_id = message["id"]
        self._merge(usage)

    def _block_start(self, obj: dict[str, Any], data: bytes) -> None:
        self._need_start("content_block_start")
        index = _index(obj, "content_block_start")
        if index < self.blocks:
            raise MalformedEvent(f"content block {index} started twice")
        if index > self.blocks:
            raise MalformedEvent(f"content_block_start for block {index}, expected {self.blocks}")
        block = obj.get("content_block")
        if not isinstance(block, dict) or not isinstance(block.get("type"), str):
            raise MalformedEvent("content_block_start content_block has no string type")
        self.blocks += 1
        self.open_blocks.add(index)

    def _block_delta(self, obj: dict[str, Any], data: bytes) -> None:
        index = obj.get("index")
        if index not in self.open_blocks or type(index) is not int:  # the open ones are ints
            index = _index(obj, "content_block_delta")
            raise MalformedEvent(f"content_block_delta for block {index}, which is not open")
        delta = obj.get("delta")
        if type(delta) is not dict:
            raise MalformedEvent("content_block_delta delta is not an object")
        kind = delta.get("type")
        expected = _DELTA_FIELDS.get(kind)  # type: ignore[arg-type]
        if expected is not None:
            if not isinstance(delta.get(expected[0]), expected[1]):
                raise MalformedEvent(f"{kind} {expected[0]} is {show(delta.get(expected[0]))}")
        elif not isinstance(kind, str):
            raise MalformedEvent("content_block_delta delta has no string type")

    def _block_stop(self, obj: dict[str, Any], data: bytes) -> None:
        index = _index(obj, "content_block_stop")
        if index not in self.open_blocks:
            raise MalformedEvent(f"content_block_stop for block {index}, which is not open")
        self.open_blocks.discard(index)

    def _message_delta(self, obj: dict[str, Any], data: bytes) -> None:
        self._need_start("message_delta")
        delta = obj.get("delta")
        if not isinstance(delta, dict):
            raise MalformedEvent("message_delta delta is not an object")
        stop = delta.get("stop_reason", self.stop_reason)
        if stop is not None and not isinstance(stop, str):
            raise MalformedEvent(f"message_delta stop_reason is {show(stop)}, not a string")
        usage, problem = checked_usage(
            obj.get("usage"), data, lambda exact: exact.get("usage"), ("output_tokens",)
        )
        if problem is not None:
            raise MalformedEvent(f"message_delta {problem}")
        self._merge(usage)
        self.stop_reason = stop

    def _message_stop(self, obj: dict[str, Any], data: bytes) -> None:
        self._need_start("message_stop")
        self.complete = True

    def _error(self, obj: dict[str, Any], data: bytes) -> None:
        err = obj.get("error")
        if isinstance(err, dict) and isinstance(err.get("type"), str):
            self.error = err
        else:
            self.error = {"type": "api_error", "message": "upstream error event without a type"}

    def _merge(self, usage: dict[str, Any]) -> None:
        for key in _USAGE_KEYS:
            value = usage.get(key)
            if value is not None:
                self.usage[key] = value


_CHECKS: dict[str, Callable[[StreamTracker, dict[str, Any], bytes], None]] = {
    "message_start": StreamTracker._message_start,
    "content_block_start": StreamTracker._block_start,
    "content_block_delta": StreamTracker._block_delta,
    "content_block_stop": StreamTracker._block_stop,
    "message_delta": StreamTracker._message_delta,
    "message_stop": StreamTracker._message_stop,
    "error": StreamTracker._error,
}


def sse_event(name: str, payload: dict[str, Any]) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n"


def error_event(error_type: str, message: str) -> bytes:
    return sse_event("error", {"type": "error", "error": {"type": error_type, "message": message}})


def message_to_sse(message: dict[str, Any]) -> bytes:
    """A complete Messages stream for a finished ``message`` (used by the simulator)."""
    usage = dict(message.get("usage") or {})
    start_usage = {k: v for k, v in usage.items() if k != "output_tokens"} | {"output_tokens": 1}
    head = {
        **message,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": start_usage,
    }
    parts = [sse_event("message_start", {"type": "message_start", "message": head})]
    for index, block in enumerate(message.get("content") or []):
        kind = block.get("type")
        if kind == "text":
            start_block: dict[str, Any] = {"type": "text", "text": ""}
            deltas = [{"type": "text_delta", "text": block.get("text", "")}]
        elif kind == "thinking":
            start_block = {"type": "thinking", "thinking": "", "signature": ""}
            deltas = [
                {"type": "thinking_delta", "thinking": block.get("thinking", "")},
                {"type": "signature_delta", "signature": block.get("signature", "")},
            ]
        elif kind == "tool_use":
            start_block = {**block, "input": {}}
            deltas = [
                {
                    "type": "input_json_delta",
                    "partial_json": orjson.dumps(block.get("input", {})).decode(),
                }
            ]
        else:
            start_block, deltas = block, []
        parts.append(
            sse_event(
                "content_block_start",
                {"type": "content_block_start", "index": index, "content_block": start_block},
            )
        )
        for delta in deltas:
            parts.append(
                sse_event(
                    "content_block_delta",
                    {"type": "content_block_delta", "index": index, "delta": delta},
                )
            )
        parts.append(
            sse_event("content_block_stop", {"type": "content_block_stop", "index": index})
        )
    parts.append(
        sse_event(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {
                    "stop_reason": message.get("stop_reason"),
                    "stop_sequence": message.get("stop_sequence"),
                },
                "usage": usage,
            },
        )
    )
    parts.append(sse_event("message_stop", {"type": "message_stop"}))
    return b"".join(parts)

"""Server-sent events: read usage on the side of a relayed stream, and write Messages streams.

The relay never rewrites the upstream's bytes; :class:`SSEParser` works on its own copy to
find event boundaries, and :class:`StreamTracker` keeps what billing and the ledger need
(usage from ``message_start`` overridden by the final ``message_delta``, stop reason, whether
``message_stop`` or an ``error`` event arrived).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple

import orjson


class Event(NamedTuple):
    """One complete SSE event: its name (None without an ``event:`` line), its data, and its
    raw bytes as received (blank line included), for byte-exact relaying."""

    name: str | None
    data: bytes
    raw: bytes


class SSEParser:
    """Incremental SSE framing: feed bytes, get the complete :class:`Event` objects."""

    def __init__(self) -> None:
        self._buf = b""

    def feed(self, chunk: bytes) -> list[Event]:
        buf = self._buf + chunk
        if b"\r" in buf:
            # Normalise CRLF/CR, but keep a trailing CR: its LF may be in the next chunk.
            keep_cr = buf.endswith(b"\r")
            body = buf[:-1] if keep_cr else buf
            buf = body.replace(b"\r\n", b"\n").replace(b"\r", b"\n") + (b"\r" if keep_cr else b"")
        events: list[Event] = []
        while True:
            end = buf.find(b"\n\n")
            if end < 0:
                break
            raw, buf = buf[:end], buf[end + 2 :]
            name: str | None = None
            data: list[bytes] = []
            for line in raw.split(b"\n"):
                if line.startswith(b"data:"):
                    value = line[5:]
                    data.append(value[1:] if value.startswith(b" ") else value)
                elif line.startswith(b"event:"):
                    name = line[6:].strip().decode("utf-8", "replace")
            if name is not None or data:
                events.append(Event(name, b"\n".join(data), raw + b"\n\n"))
        self._buf = buf
        return events

    @property
    def pending(self) -> bytes:
        return self._buf


_USAGE_KEYS = (
    "input_tokens",
    "output_tokens",
    "cache_creation_input_tokens",
    "cache_read_input_tokens",
    "cache_creation",
    "output_tokens_details",
    "server_tool_use",
)


class MalformedEvent(ValueError):
    """The upstream sent an SSE event clients cannot parse."""


@dataclass
class StreamTracker:
    """What a Messages stream said about itself, read on the side."""

    usage: dict[str, Any] = field(default_factory=dict)
    model: str | None = None
    message_id: str | None = None
    stop_reason: str | None = None
    complete: bool = False  # message_stop seen
    error: dict[str, Any] | None = None  # the error event's "error" object
    started: bool = False  # message_start seen

    def observe(self, name: str | None, data: bytes) -> dict[str, Any] | None:
        """Update from one event and return its JSON object.

        Raises :class:`MalformedEvent` for an event a client could not read (no ``event:``
        line, data that is not a JSON object, or a ``type`` that does not match the name):
        relaying it would make the client fail or silently drop content.
        """
        if name == "ping":
            return None
        if name is None:
            raise MalformedEvent("an event without an event: line")
        try:
            obj = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise MalformedEvent(f"{name} event data is not JSON") from exc
        if not isinstance(obj, dict) or obj.get("type") != name:
            raise MalformedEvent(f"{name} event data does not carry type {name!r}")
        if name == "message_start":
            message = obj.get("message") or {}
            self.started = True
            self.model = message.get("model")
            self.message_id = message.get("id")
            self._merge(message.get("usage") or {})
        elif name == "message_delta":
            self._merge(obj.get("usage") or {})
            delta = obj.get("delta") or {}
            self.stop_reason = delta.get("stop_reason", self.stop_reason)
        elif name == "message_stop":
            self.complete = True
        elif name == "error":
            err = obj.get("error")
            self.error = (
                err if isinstance(err, dict) else {"type": "api_error", "message": str(obj)}
            )
        return obj

    def _merge(self, usage: dict[str, Any]) -> None:
        for key in _USAGE_KEYS:
            if key in usage and usage[key] is not None:
                self.usage[key] = usage[key]


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

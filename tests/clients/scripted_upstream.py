"""The project's fake Anthropic upstream, answering each request by what it *is* rather than by a
queue: real clients such as the Claude Code CLI send several kinds of request (the main loop with
two dozen tools, tool results, side requests without tools), concurrently and in an order the test
does not control, so a FIFO of scripts would hand the wrong answer to the wrong request.

``ScriptedUpstream`` is a ``FakeAnthropic`` (same validation, same wire format, same recorded
requests) whose app is wrapped: before a ``POST /v1/messages`` reaches the fake, ``respond(body)``
picks the answer for *that* body and queues it as a one-shot script under a lock that is held until
the fake has claimed it, so concurrent requests cannot take each other's answer.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Mapping, MutableMapping
from typing import Any

from tests.fakes.anthropic_server import FakeAnthropic

Responder = Callable[[dict[str, Any]], Mapping[str, Any] | None]
"""body -> keyword arguments for ``FakeAnthropic.script`` (None: the fake's default answer)."""


def last_turn(body: Mapping[str, Any]) -> dict[str, Any] | None:
    """The last user turn (Claude Code 2.1.3xx puts a ``role: system`` message after it)."""
    users = [m for m in body.get("messages") or [] if isinstance(m, dict) and m["role"] == "user"]
    return users[-1] if users else None


def blocks(message: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    if message is None:
        return []
    content = message.get("content")
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    return [b for b in content or [] if isinstance(b, dict)]


def tool_results(body: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The tool_result blocks of the last user turn (empty unless a tool loop is under way)."""
    return [b for b in blocks(last_turn(body)) if b.get("type") == "tool_result"]


def tool_result_text(result: Mapping[str, Any]) -> str:
    content = result.get("content")
    if isinstance(content, str):
        return content
    return "\n".join(str(b.get("text", "")) for b in content or [] if isinstance(b, dict))


def user_text(body: Mapping[str, Any]) -> str:
    """All text of the last user turn (system reminders included)."""
    texts = [b.get("text", "") for b in blocks(last_turn(body)) if b.get("type") == "text"]
    return "\n".join(str(t) for t in texts)


def request_kind(body: Mapping[str, Any]) -> str:
    """What a Messages request is for, as far as a client test cares.

    ``tool_result``: the last user turn returns tool results; ``main``: a turn that offers
    tools; ``structured``: no tools, a JSON schema output format (Claude Code's title request);
    ``side``: anything else without tools (quota probes, summaries).
    """
    if tool_results(body):
        return "tool_result"
    if body.get("tools"):
        return "main"
    output_config = body.get("output_config")
    if isinstance(output_config, dict) and isinstance(output_config.get("format"), dict):
        return "structured"
    return "side"


def schema_reply(body: Mapping[str, Any]) -> str:
    """A JSON text that satisfies the request's ``output_config.format`` schema's required
    string properties (e.g. Claude Code's ``{"title": ...}``)."""
    output_config = body.get("output_config")
    fmt = output_config.get("format") if isinstance(output_config, dict) else None
    schema = fmt.get("schema") if isinstance(fmt, dict) else None
    properties = schema.get("properties", {}) if isinstance(schema, dict) else {}
    reply: dict[str, Any] = {}
    for name, spec in properties.items():
        kind = spec.get("type") if isinstance(spec, dict) else None
        reply[name] = {"boolean": False, "integer": 0, "number": 0, "array": [], "object": {}}.get(
            str(kind), f"Fake {name}"
        )
    return json.dumps(reply)


class ScriptedUpstream(FakeAnthropic):
    """A FakeAnthropic whose answers are chosen per request by ``respond``; see the module doc."""

    def __init__(self, respond: Responder | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.respond: Responder | None = respond
        self.kinds: list[str] = []  # request_kind of every POST /v1/messages, in arrival order
        self.refused: list[dict[str, Any]] = []  # bodies the fake's validation rejected
        inner = self.app
        lock: asyncio.Lock | None = None

        async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
            nonlocal lock
            if scope["type"] != "http" or scope["path"] != "/v1/messages":
                await inner(scope, receive, send)
                return
            if lock is None:
                lock = asyncio.Lock()  # created on the server's own event loop
            raw = b""
            more = True
            while more:
                message = await receive()
                raw += message.get("body", b"")
                more = message.get("more_body", False)
            try:
                body = json.loads(raw)
            except ValueError:
                body = None
            replayed = False

            async def replay() -> dict[str, Any]:
                nonlocal replayed
                if not replayed:
                    replayed = True
                    return {"type": "http.request", "body": raw, "more_body": False}
                message: dict[str, Any] = await receive()
                return message

            if not isinstance(body, dict) or self.respond is None:
                await inner(scope, replay, send)
                return
            self.kinds.append(request_kind(body))
            answer = self.respond(body)
            if answer is None:
                await inner(scope, replay, send)
                return
            await lock.acquire()
            released = False

            async def send_then_release(message: MutableMapping[str, Any]) -> None:
                nonlocal released
                if not released:  # the fake has claimed its script by the time it answers
                    released = True
                    if self.pending_scripts:  # not claimed: the fake refused the request
                        self.refused.append(body)
                        with self._lock:
                            self._scripts.clear()
                    lock.release()
                await send(message)

            try:
                self.script(model_glob="*", times=1, **answer)
                await inner(scope, replay, send_then_release)
            finally:
                if not released:
                    released = True
                    lock.release()

        self.app = app  # type: ignore[assignment]

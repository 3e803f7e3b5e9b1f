"""Relaying an upstream SSE stream to the client, with the request's life closed however the
stream ends.

:class:`StreamRelay` reads the upstream's events, checks each (a client must be able to parse
what it gets), tracks usage on the side, and writes the dialect's bytes: the upstream's own
bytes, event by event, for the Messages API; ``chat.completion.chunk`` lines for OpenAI. It
ends with the dialect's explicit error whenever the upstream stream ends without
``message_stop``, breaks, stalls, runs past the request's deadline, or sends more output than
``max_tokens`` allows.

:class:`RelayResponse` runs a relay as a Starlette response and, when the response ends for any
reason (completed, client gone, cancelled, failed), calls :meth:`StreamRelay.finish`: the
upstream connection is closed and the request's life is closed exactly once with what the
stream said about itself (usage, stop reason, how it ended).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Mapping
from typing import Any, TypeVar

from starlette.requests import Request
from starlette.responses import StreamingResponse

from tierwise.accounting import BadUsage, measure_usage
from tierwise.adapt import ThinkingOrigins
from tierwise.gateway.attempts import Attempt
from tierwise.gateway.sse import Event, MalformedEvent, SSEParser, StreamTracker
from tierwise.gateway.upstream import UpstreamError
from tierwise.lifecycle import RequestLife

# Output a stream may carry per token of max_tokens before it is cut as impossible: a token is
# at most a few dozen characters; an upstream streaming far more than max_tokens could hold is
# lying or broken, and would run past the request's budget hold.
MAX_CHARS_PER_TOKEN = 32
_SLACK_CHARS = 4_096
_USAGE_EVENTS = frozenset({"message_start", "message_delta"})


class StreamRelay:
    """One upstream stream relayed to one client. Subclasses write the dialect."""

    def __init__(
        self,
        life: RequestLife,
        attempt: Attempt,
        *,
        max_tokens: int,
        deadline: float,
        origins: ThinkingOrigins | None = None,
        on_complete: Callable[[StreamTracker], Awaitable[None]] | None = None,
    ) -> None:
        self.life = life
        self.origins = origins
        self.on_complete = on_complete
        self.attempt = attempt
        self.tracker = StreamTracker()
        self.deadline = deadline  # time.perf_counter() instant
        self.max_chars = max_tokens * MAX_CHARS_PER_TOKEN + _SLACK_CHARS
        self.chars = 0
        # How it ended: None = complete; an error type otherwise. Until the relay says
        # otherwise, a stream that stopped early stopped because the client went away.
        self.outcome: str | None = "client_disconnected"

    # -- dialect hooks --------------------------------------------------------------------
    def convert(self, event: Event, obj: dict[str, Any] | None) -> bytes:
        raise NotImplementedError

    def error(self, kind: str, message: str) -> bytes:
        raise NotImplementedError

    # -- the relay ------------------------------------------------------------------------
    def _output_chars(self, obj: Mapping[str, Any]) -> int:
        delta = obj.get("delta")
        if not isinstance(delta, Mapping):
            return 0
        for field in ("text", "partial_json", "thinking", "signature"):
            value = delta.get(field)
            if isinstance(value, str):
                return len(value)
        return 0

    def _check(self, event: Event) -> tuple[dict[str, Any] | None, bytes | None]:
        """(the event's object, or the error bytes that end the stream)."""
        try:
            obj = self.tracker.observe(event.name, event.data)
            if obj is not None and event.name in _USAGE_EVENTS:
                usage = (obj.get("message") or {}) if event.name == "message_start" else obj
                measure_usage(usage.get("usage") if isinstance(usage, dict) else None)
        except (MalformedEvent, BadUsage) as exc:
            self.outcome = "malformed_stream"
            return None, self.error("api_error", f"upstream sent a malformed event: {exc}")
        if obj is not None and event.name == "content_block_delta":
            self.chars += self._output_chars(obj)
            delta = obj.get("delta")
            if self.origins is not None and isinstance(delta, dict):
                signature = delta.get("signature")
                if delta.get("type") == "signature_delta" and isinstance(signature, str):
                    block = {"type": "thinking", "signature": signature}
                    self.origins.record([block], self.tracker.model or self.attempt.target.model)
            if self.chars > self.max_chars:
                self.outcome = "output_overrun"
                message = "upstream sent more output than max_tokens allows; the stream was cut"
                return None, self.error("api_error", message)
        return obj, None

    async def run(self) -> AsyncIterator[bytes]:
        chunks = self.attempt.reply.chunks
        assert chunks is not None
        parser = SSEParser()
        tracker = self.tracker
        try:
            async for chunk in chunks:
                out: list[bytes] = []
                for event in parser.feed(chunk):
                    obj, fatal = self._check(event)
                    if fatal is not None:
                        yield b"".join([*out, fatal])
                        return
                    out.append(self.convert(event, obj))
                    if tracker.error is not None:
                        break
                if out:
                    yield b"".join(out)
                if tracker.error is not None or tracker.complete:
                    break
                if time.perf_counter() > self.deadline:
                    yield self.error("timeout_error", "the request's deadline passed mid-stream")
                    self.outcome = "timeout_error"
                    return
        except UpstreamError as exc:
            self.outcome = exc.kind
            yield self.error(
                "timeout_error" if exc.kind == "timeout_error" else "api_error",
                f"upstream stream failed: {exc}",
            )
            return
        if tracker.error is not None:
            self.outcome = str(tracker.error.get("type") or "api_error")
        elif not tracker.complete:
            self.outcome = "incomplete_stream"
            yield self.error("api_error", "upstream stream ended before message_stop")
        else:
            self.outcome = None
            if self.on_complete is not None:
                await self.on_complete(tracker)

    def finish(self, exc: BaseException | None = None) -> None:
        """Close the upstream connection and the request's life (idempotent)."""
        self.attempt.reply.close()
        if self.life.closed:
            return
        tracker = self.tracker
        outcome = self.outcome
        self.life.ended(
            status="ok" if outcome is None else "error",
            target=self.attempt.target,
            raw_usage=tracker.usage or None,
            model=tracker.model,
            error_type=outcome,
            http_status=200,
            fallbacks=self.attempt.fallbacks,
            upstream_ms=self.attempt.upstream_ms,
            stop_reason=tracker.stop_reason,
            billed=tracker.started,
        )
        self.life.close(None if outcome is not None or exc is None else exc)


class RelayResponse(StreamingResponse):
    """A streaming response whose relay is finished however the response ends."""

    def __init__(self, relay: StreamRelay, *, headers: Mapping[str, str]) -> None:
        self.relay = relay
        super().__init__(
            relay.run(), media_type="text/event-stream; charset=utf-8", headers=dict(headers)
        )

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        error: BaseException | None = None
        try:
            await super().__call__(scope, receive, send)
        except BaseException as exc:
            error = exc
            raise
        finally:
            self.relay.finish(error)
            iterator: Any = self.body_iterator
            with contextlib.suppress(Exception):
                await iterator.aclose()


T = TypeVar("T")


async def unless_disconnected(request: Request, work: Coroutine[Any, Any, T]) -> T:
    """Run ``work`` (the upstream call) but cancel it if the client goes away first.

    Raises :class:`ClientDisconnected` in that case, so the request is recorded as such and
    the upstream connection is closed instead of finishing a reply nobody will read.
    """
    loop = asyncio.get_running_loop()
    task = loop.create_task(work)

    async def disconnected() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    watcher = loop.create_task(disconnected())
    # What asyncio.wait(FIRST_COMPLETED) does, without its per-call sets and bookkeeping
    # (profiled at ~4 % of the gateway's CPU per request).
    first: asyncio.Future[None] = loop.create_future()

    def wake(_: object) -> None:
        if not first.done():
            first.set_result(None)

    task.add_done_callback(wake)
    watcher.add_done_callback(wake)
    try:
        await first
    finally:
        watcher.cancel()
        if not task.done():
            task.cancel()
    if task.done() and not task.cancelled():
        return task.result()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    raise ClientDisconnected("client disconnected")


class ClientDisconnected(Exception):
    """The client closed the connection before its reply was ready."""

    status = 499
    error_type = "client_disconnected"

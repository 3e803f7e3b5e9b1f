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

from tierwise.accounting import BadUsage, measure_usage, usage_to_api
from tierwise.adapt import ThinkingOrigins
from tierwise.gateway.attempts import Attempt
from tierwise.gateway.sse import EventSplitter, MalformedEvent, SSEEvent, StreamTracker
from tierwise.gateway.upstream import UpstreamError
from tierwise.lifecycle import RequestLife

# Output a stream may carry per token of max_tokens before it is cut as impossible: a token is
# at most a few dozen characters; an upstream streaming far more than max_tokens could hold is
# lying or broken, and would run past the request's budget hold.
MAX_CHARS_PER_TOKEN = 32
_SLACK_CHARS = 4_096
_USAGE_EVENTS = frozenset({"message_start", "message_delta"})
# Stream endings that mean the upstream's data cannot be trusted: its usage is unknown.
_BAD_DATA = frozenset({"malformed_stream", "output_overrun"})


class StreamRelay:
    """One upstream stream relayed to one client. Subclasses write the dialect."""

    def __init__(
        self,
        life: RequestLife,
        attempt: Attempt,
        *,
        max_tokens: int,
        deadline: float,
        max_event_bytes: int = 16 * 1024 * 1024,
        origins: ThinkingOrigins | None = None,
        on_complete: Callable[[StreamTracker], Awaitable[None]] | None = None,
    ) -> None:
        self.life = life
        # The answer's text, kept only when the request is captured (shadow evaluation).
        self.text: list[str] | None = [] if life.capturing else None
        self.max_event_bytes = max_event_bytes
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
    def convert(self, event: SSEEvent, obj: dict[str, Any] | None) -> bytes:
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

    def _check(self, event: SSEEvent) -> tuple[dict[str, Any] | None, bytes | None]:
        """(the event's object, or the error bytes that end the stream)."""
        try:
            obj = self.tracker.observe(event.name, event.data)
            if obj is not None and event.name in _USAGE_EVENTS:
                measure_usage(self.tracker.usage)  # the merged counts, kept exact
        except (MalformedEvent, BadUsage) as exc:
            self.outcome = "malformed_stream"
            return None, self.error("api_error", f"upstream sent a malformed event: {exc}")
        if obj is not None and event.name == "content_block_delta":
            self.chars += self._output_chars(obj)
            delta = obj.get("delta")
            if self.text is not None and isinstance(delta, dict):
                text = delta.get("text")
                if delta.get("type") == "text_delta" and isinstance(text, str):
                    self.text.append(text)
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

    def _relay(self, events: list[SSEEvent]) -> tuple[bytes, bool]:
        """The client's bytes for ``events``, and whether the stream must end here (an
        unusable event, or the upstream's error event)."""
        out: list[bytes] = []
        for event in events:
            obj, fatal = self._check(event)
            if fatal is not None:
                out.append(fatal)
                return b"".join(out), True
            out.append(self.convert(event, obj))
            if self.tracker.error is not None:
                return b"".join(out), True
        return b"".join(out), False

    async def run(self) -> AsyncIterator[bytes]:
        chunks = self.attempt.reply.chunks
        assert chunks is not None
        splitter = EventSplitter(self.max_event_bytes)
        tracker = self.tracker
        try:
            async for chunk in chunks:
                try:
                    events = splitter.feed(chunk)
                except MalformedEvent as exc:  # an event over the size limit
                    self.outcome = "malformed_stream"
                    yield self.error("api_error", f"upstream sent a malformed event: {exc}")
                    return
                out, stop = self._relay(events)
                if out:
                    yield out
                if stop and tracker.error is None:
                    return  # _check set the outcome and wrote the error
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

    def client_usage(self) -> dict[str, Any]:
        """The stream's usage as a translated dialect reports it to its client: checked and
        clamped to what the request could consume, as the ledger records it (an upstream's
        10**30 tokens is not passed on, and never breaks the JSON of the reply)."""
        try:
            return usage_to_api(measure_usage(self.tracker.usage, self.life.bounds).usage)
        except BadUsage:
            return {}

    def _usage(self, outcome: str | None) -> dict[str, Any] | None:
        """The usage to bill. Complete: what the stream reported. Bad upstream data (an
        unusable event, more output than max_tokens allows): unknown (None), so the whole
        hold is charged. Ended early otherwise (cut, stalled, deadline, client gone): what was
        reported, with the output at least what was relayed (a character is never less than a
        third of a token's worth in the estimate), since the final count never came."""
        tracker = self.tracker
        if outcome is None:
            return tracker.usage or None
        if outcome in _BAD_DATA or not tracker.started:
            return None
        usage = dict(tracker.usage)
        relayed = -(-self.chars // 3)
        reported = usage.get("output_tokens")
        if not isinstance(reported, int) or isinstance(reported, bool) or reported < relayed:
            usage["output_tokens"] = relayed
        return usage

    def finish(self, exc: BaseException | None = None) -> None:
        """Close the upstream connection and the request's life (idempotent)."""
        self.attempt.reply.close()
        if self.life.closed:
            return
        tracker = self.tracker
        outcome = self.outcome
        if self.text is not None:
            self.life.answer_text = "".join(self.text)
        self.life.ended(
            status="ok" if outcome is None else "error",
            target=self.attempt.target,
            raw_usage=self._usage(outcome),
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

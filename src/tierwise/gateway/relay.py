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

Two ways to move the bytes, with the same checks and the same endings:

- **push** (an uncompressed stream from the HTTP upstream, :class:`UpstreamStream`): the
  upstream connection hands each piece to the relay from its own ``data_received``; the relay
  splits and checks the events and writes what one socket read brought in one write to the
  client, straight to its transport when the server offers ``tierwise.direct_body``
  (``tierwise serve``, :class:`~tierwise.gateway.connections.DirectBody`), else through ASGI
  ``send`` from the response's task, all that is pending at each wake-up in one message. No
  task wake-up, async generator or timer per event (the stall timeout and the deadline are one
  watchdog per stream). Flow control: a client that reads slowly pauses the upstream reads.
- **pull** (anything else: the simulator, a compressed stream): :meth:`StreamRelay.run`, an
  async generator read by Starlette's ``StreamingResponse``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Mapping
from typing import Any, Protocol, TypeVar

from starlette.requests import Request
from starlette.responses import StreamingResponse

from tierwise.accounting import BadUsage, measure_usage, usage_to_api
from tierwise.adapt import ThinkingOrigins
from tierwise.gateway.attempts import Attempt
from tierwise.gateway.sse import EventSplitter, MalformedEvent, SSEEvent, StreamTracker
from tierwise.gateway.upstream import UpstreamError, UpstreamStream
from tierwise.lifecycle import RequestLife

log = logging.getLogger("tierwise.gateway")

# Output a stream may carry per token of max_tokens before it is cut as impossible: a token is
# at most a few dozen characters; an upstream streaming far more than max_tokens could hold is
# lying or broken, and would run past the request's budget hold.
MAX_CHARS_PER_TOKEN = 32
_SLACK_CHARS = 4_096
_USAGE_EVENTS = frozenset({"message_start", "message_delta"})
# Stream endings that mean the upstream's data cannot be trusted: its usage is unknown.
_BAD_DATA = frozenset({"malformed_stream", "output_overrun"})
# Push through ASGI send: bytes pending for the client before the upstream reads pause.
_PENDING_HIGH = 256 * 1024
# Direct writes gathered at most this many relays at a time (see _Writes).
_WRITES_BATCH = 32
# The scope extension through which a server offers direct body writes (DirectWriter;
# tierwise serve's protocol, gateway/connections.py).
DIRECT_BODY = "tierwise.direct_body"
# A callable registering a callback for the client's connection being lost; it returns the
# function that unregisters it, or None when the connection is already gone.
ON_DISCONNECT = "tierwise.on_disconnect"


class BodyListener(Protocol):
    """What a :class:`DirectWriter` tells its writer about the client connection."""

    def client_paused(self) -> None: ...

    def client_resumed(self) -> None: ...

    def client_gone(self) -> None: ...


class DirectWriter(Protocol):
    """Body writes of a started, chunked response straight to the client's transport."""

    def start(self, listener: BodyListener) -> bool:
        """Take over the body writes (False: this response cannot be written directly)."""
        ...

    def write(self, data: bytes) -> bool:
        """One piece of the body; False when the client is gone."""
        ...

    def stop(self) -> None:
        """Writes end; the response goes on through ASGI ``send``."""
        ...


class _Writes:
    """The client writes of every direct relay on one event loop, made together once the
    loop's current batch of reads is handled (one ``call_soon`` per batch, not per event).

    Measured on loopback: a write that wakes a sleeping reader costs ~16-22 µs of CPU, a write
    right after another ~7 µs; writes made back to back let the client's process wake once
    per batch. Nothing waits for more data: the bytes leave in the same loop iteration, and
    in a burst of reads at most :data:`_WRITES_BATCH` relays wait for each other."""

    __slots__ = ("loop", "relays")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.relays: list[StreamRelay] = []

    def add(self, relay: StreamRelay) -> None:
        relays = self.relays
        if not relays:
            self.loop.call_soon(self.run)
        relays.append(relay)
        if len(relays) >= _WRITES_BATCH:  # a burst of reads: the first ones leave now
            self.run()

    def run(self) -> None:
        relays, self.relays = self.relays, []
        for relay in relays:
            relay._write_queued()


_WRITES: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Writes] = weakref.WeakKeyDictionary()


def _writes(loop: asyncio.AbstractEventLoop) -> _Writes:
    writes = _WRITES.get(loop)
    if writes is None:
        writes = _WRITES[loop] = _Writes(loop)
    return writes


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
        self._splitter = EventSplitter(max_event_bytes)
        self._out: list[bytes] = []  # the client's bytes not written yet
        self._pending = 0  # their size (push through ASGI send)
        self._fatal = False  # the relay itself ended the stream (and wrote why)
        # push mode
        self._ended = False  # nothing more is taken from the upstream
        self._wake: asyncio.Future[None] | None = None
        self._stream: UpstreamStream | None = None
        self._direct: DirectWriter | None = None
        self._writes: _Writes | None = None
        self._queued = False  # waiting in _writes
        self._held = False  # upstream reads paused for the client

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
        name = event.name
        try:
            obj = self.tracker.observe(name, event.data)
            if obj is not None and name in _USAGE_EVENTS:
                measure_usage(self.tracker.usage)  # the merged counts, kept exact
        except (MalformedEvent, BadUsage) as exc:
            self.outcome = "malformed_stream"
            return None, self.error("api_error", f"upstream sent a malformed event: {exc}")
        if obj is not None and name == "content_block_delta":
            delta = obj.get("delta")
            if self.text is None and type(delta) is dict and delta.get("type") == "text_delta":
                # The usual event, checked by the tracker (delta.text is a string): its length
                # is what _output_chars finds first; nothing to capture, no signature.
                self.chars += len(delta["text"])
                if self.chars > self.max_chars:
                    self.outcome = "output_overrun"
                    message = "upstream sent more output than max_tokens allows; the stream was cut"
                    return None, self.error("api_error", message)
                return obj, None
            self.chars += self._output_chars(obj)
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

    def _feed(self, chunk: bytes) -> bool:
        """Split, check and convert one upstream piece (the client's bytes go to ``_out``).
        True when the stream ends here: complete, the upstream's error event, or an ending the
        relay decided (a malformed event, too much output, the deadline: ``_fatal``)."""
        try:
            events = self._splitter.feed(chunk)
        except MalformedEvent as exc:  # an event over the size limit
            self.outcome = "malformed_stream"
            self._fatal = True
            self._out.append(self.error("api_error", f"upstream sent a malformed event: {exc}"))
            return True
        tracker = self.tracker
        if events:
            out, stop = self._relay(events)
            if out:
                self._out.append(out)
                self._pending += len(out)
            if stop and tracker.error is None:
                self._fatal = True  # _check set the outcome and wrote the error
                return True
            if tracker.error is not None or tracker.complete:
                return True
        if time.perf_counter() > self.deadline:
            message = "the request's deadline passed mid-stream"
            self._out.append(self.error("timeout_error", message))
            self.outcome = "timeout_error"
            self._fatal = True
            return True
        return False

    def _conclude(self, error: UpstreamError | None) -> None:
        """How the stream ended, once the upstream part is over (``error``: why it broke)."""
        if self._fatal:
            return
        tracker = self.tracker
        if tracker.error is not None:
            self.outcome = str(tracker.error.get("type") or "api_error")
        elif tracker.complete:
            self.outcome = None
        elif error is not None:
            self.outcome = error.kind
            self._out.append(
                self.error(
                    "timeout_error" if error.kind == "timeout_error" else "api_error",
                    f"upstream stream failed: {error}",
                )
            )
        else:
            self.outcome = "incomplete_stream"
            self._out.append(self.error("api_error", "upstream stream ended before message_stop"))

    def _take(self) -> bytes:
        out = self._out
        if not out:
            return b""
        data = out[0] if len(out) == 1 else b"".join(out)
        out.clear()
        self._pending = 0
        return data

    # -- pull ---------------------------------------------------------------------------
    async def run(self) -> AsyncIterator[bytes]:
        """The client's bytes, pulling the upstream's (any async iterator of chunks)."""
        chunks = self.attempt.reply.chunks
        assert chunks is not None
        error: UpstreamError | None = None
        try:
            async for chunk in chunks:
                ended = self._feed(chunk)
                out = self._take()
                if out:
                    yield out
                if ended:
                    break
        except UpstreamError as exc:
            error = exc
        self._conclude(error)
        out = self._take()
        if out:
            yield out
        if self.outcome is None and self.on_complete is not None:
            await self.on_complete(self.tracker)

    # -- push -----------------------------------------------------------------------------
    async def push(
        self,
        stream: UpstreamStream,
        scope: Any,
        receive: Callable[[], Awaitable[Any]],
        send: Callable[[Any], Awaitable[None]],
        start: Mapping[str, Any],
    ) -> None:
        """Relay ``stream`` in push mode (see the module), from ``http.response.start`` to the
        last ``http.response.body``."""
        await send(start)
        self._stream = stream
        extensions = scope.get("extensions") or {}
        direct: DirectWriter | None = extensions.get(DIRECT_BODY)
        if direct is not None and direct.start(self):
            self._direct = direct
            self._writes = _writes(asyncio.get_running_loop())
            try:
                stream.push(self)
                while not self._ended:
                    await self._sleep()
            finally:
                self._direct = None
                direct.stop()
            tail = self._take()
        else:
            tail = await self._push_asgi(stream, receive, send)
        if self.outcome is None and self.on_complete is not None:
            if tail:  # the client has the whole stream before it is recorded
                await send({"type": "http.response.body", "body": tail, "more_body": True})
                tail = b""
            await self.on_complete(self.tracker)
        await send({"type": "http.response.body", "body": tail, "more_body": False})

    async def _sleep(self) -> None:
        wake = self._wake = asyncio.get_running_loop().create_future()
        try:
            await wake
        finally:
            self._wake = None

    def _signal(self) -> None:
        wake = self._wake
        if wake is not None and not wake.done():
            wake.set_result(None)

    async def _push_asgi(
        self,
        stream: UpstreamStream,
        receive: Callable[[], Awaitable[Any]],
        send: Callable[[Any], Awaitable[None]],
    ) -> bytes:
        """Push with writes through ASGI ``send`` (a server without ``direct_body``): all that
        is pending at each wake-up in one message. Returns the bytes left for the last one."""

        async def watch() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            self.client_gone()

        watcher = asyncio.get_running_loop().create_task(watch())
        try:
            stream.push(self)
            while True:
                if self._out and not self._ended:
                    await send(
                        {"type": "http.response.body", "body": self._take(), "more_body": True}
                    )
                    if self._held:
                        self._held = False
                        stream.resume()
                    continue
                if self._ended:
                    return self._take()
                await self._sleep()
        finally:
            watcher.cancel()

    # -- http1 body sink (called from the upstream connection's data_received) ----------
    def on_data(self, chunk: bytes) -> None:
        if self._ended:
            return
        try:
            ended = self._feed(chunk)
        except Exception as exc:  # a bug here must not pass for the upstream's fault
            log.exception("stream relay failed on an upstream event")
            self.outcome = "internal_error"
            self._fatal = True
            self._out.append(self.error("api_error", f"internal error in the relay: {exc}"))
            ended = True
        if ended:
            self._conclude(None)
            self._end()

    def on_flush(self) -> None:
        if not self._out or self._ended:
            return
        if self._direct is not None:
            if not self._queued and self._writes is not None:
                self._queued = True
                self._writes.add(self)
        else:
            if self._pending > _PENDING_HIGH and not self._held and self._stream is not None:
                self._held = True
                self._stream.pause()
            self._signal()

    def _write_queued(self) -> None:
        self._queued = False
        direct = self._direct
        if direct is not None and self._out and not self._ended and not direct.write(self._take()):
            self.client_gone()

    def on_end(self, error: UpstreamError | None) -> None:
        if self._ended:
            return
        self._conclude(error)
        self._end()

    def _end(self) -> None:
        """The upstream part is over: write what is left (direct) and wake the response."""
        self._ended = True
        direct = self._direct
        if direct is not None and self._out:
            direct.write(self._take())  # a client gone by now misses only the ending
        self._signal()

    # -- client (BodyListener) ------------------------------------------------------------
    def client_paused(self) -> None:
        if self._stream is not None and not self._held:
            self._held = True
            self._stream.pause()

    def client_resumed(self) -> None:
        if self._stream is not None and self._held:
            self._held = False
            self._stream.resume()

    def client_gone(self) -> None:
        if self._ended:
            return
        self._ended = True  # the outcome stays client_disconnected
        self._out.clear()
        self._pending = 0
        self._signal()

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
        relay = self.relay
        try:
            stream = relay.attempt.reply.chunks
            if isinstance(stream, UpstreamStream):
                start = {
                    "type": "http.response.start",
                    "status": self.status_code,
                    "headers": self.raw_headers,
                }
                await relay.push(stream, scope, receive, send, start)
            else:
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

    Under ``tierwise serve`` the server tells when the connection is lost
    (``tierwise.on_disconnect``): ``work`` runs in the request's own task, cancelled from
    that callback, with no task and no ``receive()`` wait per request. Elsewhere, a task
    watches ``receive()`` for ``http.disconnect``.
    """
    watch = (request.scope.get("extensions") or {}).get(ON_DISCONNECT)
    if watch is not None:
        return await _unless_lost(watch, work)
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


async def _unless_lost(
    watch: Callable[[Callable[[], None]], Any], work: Coroutine[Any, Any, T]
) -> T:
    task = asyncio.current_task()
    assert task is not None
    lost = False

    def on_lost() -> None:
        nonlocal lost
        if not lost:
            lost = True
            task.cancel()

    unwatch = watch(on_lost)
    if unwatch is None:  # the connection is already gone
        work.close()
        raise ClientDisconnected("client disconnected")
    try:
        return await work
    except asyncio.CancelledError:
        if not lost:
            raise
        task.uncancel()
        raise ClientDisconnected("client disconnected") from None
    finally:
        unwatch()


class ClientDisconnected(Exception):
    """The client closed the connection before its reply was ready."""

    status = 499
    error_type = "client_disconnected"

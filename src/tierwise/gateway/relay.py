"""Relaying an upstream SSE stream: whole events only, usage read on the side, and an explicit
``error`` event whenever the upstream stream ends without ``message_stop``."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any, TypeVar

from starlette.requests import Request

from tierwise.gateway.sse import MalformedEvent, SSEParser, StreamTracker, error_event
from tierwise.gateway.upstream import UpstreamError


def reframe(name: str | None, data: bytes) -> bytes:
    head = b"event: " + name.encode() + b"\n" if name else b""
    return head + b"data: " + data + b"\n\n"


def _last_boundary(data: bytes) -> int:
    """End of the last complete event in ``data`` (0 when there is none)."""
    cut = 0
    for sep in (b"\n\n", b"\r\n\r\n", b"\r\r"):
        i = data.rfind(sep)
        if i >= 0:
            cut = max(cut, i + len(sep))
    return cut


async def complete_events(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """Re-chunk a byte stream on event boundaries; a trailing partial event is never emitted."""
    held = b""
    async for chunk in chunks:
        data = held + chunk if held else chunk
        cut = _last_boundary(data)
        if cut:
            yield data[:cut]
        held = data[cut:]


async def relay_anthropic(
    chunks: AsyncIterator[bytes],
    tracker: StreamTracker,
    on_end: Callable[[str | None], None],
) -> AsyncIterator[bytes]:
    """Yield the upstream's bytes unchanged (whole events), tracking usage.

    ``on_end`` gets None when the stream completed with ``message_stop``, else the error type
    that ended it; it runs exactly once, also when the client goes away (cancellation).
    """
    parser = SSEParser()
    outcome: str | None = "client_disconnected"
    try:
        try:
            async for block in complete_events(chunks):
                events = parser.feed(block)
                for i, (name, data) in enumerate(events):
                    try:
                        tracker.observe(name, data)
                    except MalformedEvent as exc:
                        # Relay the good events before it (re-framed), then end with an error.
                        yield b"".join(reframe(n, d) for n, d in events[:i])
                        outcome = "malformed_stream"
                        yield error_event("api_error", f"upstream sent a malformed event: {exc}")
                        return
                yield block
        except UpstreamError as exc:
            outcome = exc.kind
            yield error_event(
                "api_error" if exc.kind != "timeout_error" else "timeout_error",
                f"upstream stream failed: {exc}",
            )
            return
        if tracker.error is not None:
            outcome = str(tracker.error.get("type") or "api_error")
        elif not tracker.complete:
            outcome = "incomplete_stream"
            yield error_event("api_error", "upstream stream ended before message_stop")
        else:
            outcome = None
    finally:
        on_end(outcome)


T = TypeVar("T")


async def unless_disconnected(request: Request, work: Coroutine[Any, Any, T]) -> T:
    """Run ``work`` (the upstream call) but cancel it if the client goes away first.

    Raises :class:`ClientDisconnected` in that case, so the caller records it and the
    upstream connection is closed instead of finishing a reply nobody will read.
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
    if task.done():
        return task.result()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    raise ClientDisconnected


class ClientDisconnected(Exception):
    """The client closed the connection before its reply was ready."""

    admission: Any = None

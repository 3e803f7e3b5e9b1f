"""Upstream attempts: retries (honouring ``retry-after``, capped), fallbacks along the planned
targets, cooldowns for models that keep failing, and a probe that reads the start of a stream
before anything reaches the client, so a stream that fails at once is retried like any other
failure.

Only a ``200`` is a success for a Messages call. A retryable status (408, 409, 429, 5xx, 529)
or no answer at all (connection error, timeout) is worth another attempt; any other status is
the upstream's final answer and goes back to the client as it is.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass

from tierwise.gateway.sse import EventSplitter, MalformedEvent, StreamTracker
from tierwise.gateway.upstream import Upstream, UpstreamError, UpstreamReply, UpstreamStream
from tierwise.lifecycle import Target

RETRYABLE_STATUSES = frozenset({408, 409, 429, 500, 502, 503, 504, 529})


@dataclass
class Attempt:
    """The upstream reply the client gets (a success, or the error that ended the attempts)."""

    reply: UpstreamReply
    target: Target
    fallbacks: list[str]
    upstream_ms: float


@dataclass(frozen=True, slots=True)
class Failure:
    """A failed attempt worth retrying: the upstream's error reply, or no reply at all."""

    label: str  # status code or error kind, as shown in x-tierwise-fallbacks
    reply: UpstreamReply | None
    error: UpstreamError | None
    retry_headers: Mapping[str, str] | None = None


class Exhausted(Exception):
    """No upstream ever answered (connection errors, timeouts) within the deadline."""

    def __init__(self, kind: str, message: str, fallbacks: list[str], target: Target) -> None:
        super().__init__(message)
        self.kind = kind
        self.fallbacks = fallbacks
        self.target = target


class Cooldowns:
    """Consecutive failures per model; a model past the limit is avoided for a while."""

    def __init__(self, after: int, seconds: float) -> None:
        self.after = after
        self.seconds = seconds
        self._fails: dict[str, int] = {}
        self._until: dict[str, float] = {}

    def cooled(self, model: str) -> bool:
        until = self._until.get(model)
        return until is not None and until > time.monotonic()

    def failed(self, model: str) -> None:
        if len(self._fails) > 10_000:  # bounded under many pass-through model ids
            self._fails.clear()
            self._until.clear()
        count = self._fails.get(model, 0) + 1
        self._fails[model] = count
        if count >= self.after:
            self._until[model] = time.monotonic() + self.seconds

    def succeeded(self, model: str) -> None:
        self._fails.pop(model, None)
        self._until.pop(model, None)


def retry_delay(headers: Mapping[str, str] | None, attempt: int, cap_s: float) -> float:
    """``retry-after-ms`` / ``retry-after`` (seconds) if sent, capped; else jittered backoff."""
    if headers:
        for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
            value = headers.get(name)
            if value:
                try:
                    seconds = float(value[:32]) * scale
                except ValueError:
                    continue
                if math.isnan(seconds):
                    continue
                return float(min(max(seconds, 0.0), cap_s))
    return min(0.25 * 2.0**attempt, 2.0, cap_s) * (1 - 0.25 * random.random())


async def _chain(head: list[bytes], rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    for chunk in head:
        yield chunk
    async for chunk in rest:
        yield chunk


async def probe(
    reply: UpstreamReply, timeout_s: float, max_event_bytes: int = 16 * 1024 * 1024
) -> str | None:
    """Read a stream until its first content (or its end) before anything goes to the client.
    Returns why it failed, or None (the bytes read are put back in front of the rest)."""
    assert reply.chunks is not None
    source = reply.chunks.__aiter__()
    splitter, tracker = EventSplitter(max_event_bytes), StreamTracker()
    seen: list[bytes] = []
    try:
        async with asyncio.timeout(timeout_s):
            while True:
                chunk = await anext(source)
                seen.append(chunk)
                for event in splitter.feed(chunk):
                    tracker.observe(event.name, event.data)
                    if tracker.error is not None:
                        reply.close()
                        kind = tracker.error.get("type")
                        return f"error event at the start of the stream: {kind}"
                    if event.name in ("content_block_delta", "message_stop"):
                        if isinstance(source, UpstreamStream):
                            source.unread(seen)  # and it can still be pushed to the relay
                            reply.chunks = source
                        else:
                            reply.chunks = _chain(seen, source)
                        return None
    except StopAsyncIteration:
        reason = "stream ended before any content"
    except MalformedEvent as exc:
        reason = f"malformed event at the start of the stream: {exc}"
    except UpstreamError as exc:
        reason = f"stream broke before any content: {exc}"
    except TimeoutError:
        reason = f"no content within {timeout_s:g}s"
    reply.close()
    return reason


class Caller:
    """Sends one request along its targets: each up to ``max_attempts`` times, within the
    request's deadline."""

    def __init__(
        self,
        upstream: Upstream,
        cooldowns: Cooldowns,
        *,
        max_attempts: int,
        attempt_timeout_s: float,
        retry_after_cap_s: float,
        max_event_bytes: int = 16 * 1024 * 1024,
    ) -> None:
        self.upstream = upstream
        self.max_event_bytes = max_event_bytes
        self.cooldowns = cooldowns
        self.max_attempts = max_attempts
        self.attempt_timeout_s = attempt_timeout_s
        self.retry_after_cap_s = retry_after_cap_s

    async def call(
        self,
        targets: list[Target],
        payload_for: Callable[[Target], bytes],
        headers: Mapping[str, str],
        *,
        path: str,
        stream: bool,
        deadline: float,
    ) -> Attempt:
        """The reply the client gets: a success, a non-retryable upstream error, or the last
        upstream error once everything is exhausted. Raises :class:`Exhausted` when no
        upstream ever answered. ``deadline`` is a ``time.perf_counter()`` instant."""
        started = time.perf_counter()
        fallbacks: list[str] = []
        last: Failure | None = None
        target = targets[0]
        for target in targets:
            payload = payload_for(target)
            for attempt in range(self.max_attempts):
                remaining = deadline - time.perf_counter()
                if remaining <= 0:
                    last = Failure(
                        "timeout_error", None, UpstreamError("timeout_error", "deadline exceeded")
                    )
                    break
                timeout_s = min(remaining, self.attempt_timeout_s)
                result = await self._attempt(path, payload, headers, stream, timeout_s, deadline)
                if isinstance(result, UpstreamReply):
                    if result.status == 200:
                        self.cooldowns.succeeded(target.model)
                    return Attempt(
                        result, target, fallbacks, (time.perf_counter() - started) * 1000
                    )
                last = result
                self.cooldowns.failed(target.model)
                if attempt + 1 < self.max_attempts:
                    delay = retry_delay(result.retry_headers, attempt, self.retry_after_cap_s)
                    if delay >= deadline - time.perf_counter():
                        break
                    await asyncio.sleep(delay)
            fallbacks.append(f"{target.label}:{last.label if last else 'timeout_error'}")
        ms = (time.perf_counter() - started) * 1000
        if last is not None and last.reply is not None:
            return Attempt(last.reply, target, fallbacks, ms)
        kind = last.error.kind if last and last.error else "timeout_error"
        raise Exhausted(
            kind,
            f"upstream unavailable after {len(fallbacks)} tier(s) "
            f"({', '.join(fallbacks)}): {last.error if last else 'deadline exceeded'}",
            fallbacks,
            target,
        )

    async def _attempt(
        self,
        path: str,
        payload: bytes,
        headers: Mapping[str, str],
        stream: bool,
        timeout_s: float,
        deadline: float,
    ) -> UpstreamReply | Failure:
        """One upstream attempt: the final reply, or a failure worth another attempt."""
        try:
            reply = await self.upstream.post(
                path,
                payload,
                headers,
                stream=stream,
                timeout_s=timeout_s,
                deadline=time.monotonic() + max(deadline - time.perf_counter(), 0.0),
            )
        except UpstreamError as exc:
            return Failure(exc.kind, None, exc)
        if reply.status == 200:
            if stream and reply.chunks is not None:
                problem = await probe(reply, timeout_s, self.max_event_bytes)
                if problem is not None:
                    # Nothing reached the client yet: an ordinary failed attempt.
                    return Failure("stream_error", None, UpstreamError("stream_error", problem))
            return reply
        if reply.status in RETRYABLE_STATUSES and reply.headers.get("x-should-retry") != "false":
            reply.close()
            return Failure(str(reply.status), reply, None, reply.headers)
        return reply

"""Session state and where it lives: process memory (bounded, LRU) or Redis (shared).

A *thread* is one conversation inside a session: Claude Code's main loop and each sub-agent it
starts share a session id but not a prompt cache, so each has its own :class:`ThreadState`,
stored under its :attr:`~tierwise.sessions.identity.SessionKey.storage_key`.

:class:`MemoryStore` is the default: a dict in this process, at most ``max_threads`` entries,
least recently used evicted first, each expiring ``ttl`` seconds after its last use. Every
call takes microseconds and does no I/O.

:class:`RedisStore` shares state between gateway replicas. It uses the asyncio client
(``redis.asyncio``) with socket timeouts and an overall per-call deadline, so a slow Redis
never blocks the event loop for longer than ``timeout_s``. Any failure raises
:class:`StoreError`, and the caller routes that request per request, recording why. After a
failure, Redis is not tried again for ``retry_after_s``: a Redis outage costs each request
nothing, instead of one timeout each.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson

from tierwise.sessions.cachesim import ModelCache

STATE_VERSION = 1
MAX_STATE_BYTES = 64 * 1024  # a state read back larger than this is refused, never parsed


class StoreError(Exception):
    """The session store could not be read or written (the request is routed without it)."""


@dataclass(slots=True)
class ThreadState:
    """What tierwise remembers of one conversation thread between its requests."""

    tier: str | None = None  # the tier the thread is on (None before its first answer)
    turn_tier: str | None = None  # what the classifier chose at the current turn's start
    confidence: float | None = None  # the classifier's confidence at that turn
    turns: int = 0  # turns started (requests of kind "turn")
    requests: int = 0  # main requests (utility side requests excluded)
    turn_requests: int = 0  # requests in the current turn so far
    done_turn_requests: int = 0  # requests in completed turns (for requests per turn)
    done_turns: int = 0
    last_stop: str | None = None  # stop_reason of the previous reply
    last_input_tokens: int = 0
    escalated: str | None = None  # escalation rule already applied in this turn
    errors_seen: int = 0  # tool-error streak length that last triggered an escalation
    floor_level: int = 1  # the context-size floor level the classifier last saw in this turn
    growth_tokens: float = 0.0  # moving average of input growth per request
    output_tokens: float = 0.0  # moving average of output tokens per request
    token_scale: float = 1.0  # real tokens / estimated tokens, from the upstream's usage
    last_seen: float = 0.0
    created: float = 0.0
    caches: dict[str, ModelCache] = field(default_factory=dict)  # what the served models hold
    baseline: ModelCache | None = None  # the baseline model's own simulated history

    def cache(self, model: str) -> ModelCache:
        cache = self.caches.get(model)
        if cache is None:
            cache = self.caches[model] = ModelCache(model)
        return cache

    def baseline_cache(self, model: str) -> ModelCache:
        """The cache the baseline model would hold had it served every request of the thread
        (kept apart from :meth:`cache`: the served models' caches decide switches)."""
        if self.baseline is None or self.baseline.model != model:
            self.baseline = ModelCache(model)
        return self.baseline

    def requests_per_turn(self, prior: float, weight: float = 1.0) -> float:
        """Mean requests per completed turn, pulled toward ``prior`` with ``weight`` turns."""
        return (self.done_turn_requests + prior * weight) / (self.done_turns + weight)

    # -- serialisation --------------------------------------------------------------------
    def to_json(self) -> bytes:
        data = {
            "v": STATE_VERSION,
            "tier": self.tier,
            "turn_tier": self.turn_tier,
            "confidence": self.confidence,
            "turns": self.turns,
            "requests": self.requests,
            "turn_requests": self.turn_requests,
            "done_turn_requests": self.done_turn_requests,
            "done_turns": self.done_turns,
            "last_stop": self.last_stop,
            "last_input_tokens": self.last_input_tokens,
            "escalated": self.escalated,
            "errors_seen": self.errors_seen,
            "floor_level": self.floor_level,
            "growth_tokens": round(self.growth_tokens, 1),
            "output_tokens": round(self.output_tokens, 1),
            "token_scale": round(self.token_scale, 4),
            "last_seen": round(self.last_seen, 3),
            "created": round(self.created, 3),
            "caches": {m: c.as_json() for m, c in self.caches.items()},
            "baseline": None
            if self.baseline is None
            else [self.baseline.model, self.baseline.as_json()],
        }
        return orjson.dumps(data)

    @classmethod
    def from_json(cls, raw: bytes | str) -> ThreadState:
        """Parse a stored state; raises StoreError naming what is wrong."""
        if len(raw) > MAX_STATE_BYTES:
            raise StoreError(f"stored session state is {len(raw)} bytes (limit {MAX_STATE_BYTES})")
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise StoreError(f"stored session state is not JSON: {exc}") from exc
        if not isinstance(data, dict) or data.get("v") != STATE_VERSION:
            raise StoreError("stored session state has an unknown format version")
        caches = data.get("caches") or {}
        if not isinstance(caches, dict):
            raise StoreError("stored session state is malformed: caches is not an object")
        baseline = data.get("baseline")
        if baseline is not None and not (
            isinstance(baseline, list) and len(baseline) == 2 and isinstance(baseline[0], str)
        ):
            raise StoreError("stored session state is malformed: baseline is not [model, cache]")
        try:
            return cls(
                tier=_opt_str(data.get("tier")),
                turn_tier=_opt_str(data.get("turn_tier")),
                confidence=None if data.get("confidence") is None else float(data["confidence"]),
                turns=int(data.get("turns", 0)),
                requests=int(data.get("requests", 0)),
                turn_requests=int(data.get("turn_requests", 0)),
                done_turn_requests=int(data.get("done_turn_requests", 0)),
                done_turns=int(data.get("done_turns", 0)),
                last_stop=_opt_str(data.get("last_stop")),
                last_input_tokens=int(data.get("last_input_tokens", 0)),
                escalated=_opt_str(data.get("escalated")),
                errors_seen=int(data.get("errors_seen", 0)),
                floor_level=int(data.get("floor_level", 1)),
                growth_tokens=float(data.get("growth_tokens", 0.0)),
                output_tokens=float(data.get("output_tokens", 0.0)),
                token_scale=float(data.get("token_scale", 1.0)),
                last_seen=float(data.get("last_seen", 0.0)),
                created=float(data.get("created", 0.0)),
                caches={
                    str(m): ModelCache.from_json(str(m), c) for m, c in list(caches.items())[:8]
                },
                baseline=None
                if baseline is None
                else ModelCache.from_json(baseline[0], baseline[1]),
            )
        except (TypeError, ValueError, AttributeError) as exc:
            raise StoreError(f"stored session state is malformed: {exc}") from exc

    def copy(self) -> ThreadState:
        return ThreadState.from_json(self.to_json())


def _opt_str(value: Any) -> str | None:
    return None if value is None else str(value)


class SessionStore(Protocol):
    """Where thread states live. ``get``/``put`` raise :class:`StoreError` on failure."""

    name: str

    async def get(self, key: str) -> ThreadState | None: ...

    async def put(self, key: str, state: ThreadState, ttl_s: float) -> None: ...

    async def aclose(self) -> None: ...


class MemoryStore:
    """Thread states in this process: bounded count, LRU eviction, idle expiry."""

    name = "memory"

    def __init__(
        self, max_threads: int = 10_000, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if max_threads < 1:
            raise ValueError("max_threads must be >= 1")
        self.max_threads = max_threads
        self._clock = clock
        self._items: OrderedDict[str, tuple[float, ThreadState]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._items)

    def get_now(self, key: str) -> ThreadState | None:
        item = self._items.get(key)
        if item is None:
            return None
        expires, state = item
        if expires <= self._clock():
            del self._items[key]
            return None
        self._items.move_to_end(key)
        return state.copy()

    def put_now(self, key: str, state: ThreadState, ttl_s: float) -> None:
        self._items[key] = (self._clock() + ttl_s, state.copy())
        self._items.move_to_end(key)
        while len(self._items) > self.max_threads:
            self._items.popitem(last=False)

    async def get(self, key: str) -> ThreadState | None:
        return self.get_now(key)

    async def put(self, key: str, state: ThreadState, ttl_s: float) -> None:
        self.put_now(key, state, ttl_s)

    async def aclose(self) -> None:
        self._items.clear()


class RedisStore:
    """Thread states in Redis, as compact JSON with a TTL (shared by gateway replicas)."""

    name = "redis"

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "tierwise:",
        timeout_s: float = 0.05,
        retry_after_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        client: Any = None,
    ) -> None:
        import redis.asyncio as aioredis

        self.prefix = f"{prefix}session:"
        self.timeout_s = timeout_s
        self.retry_after_s = retry_after_s
        self._clock = clock
        self._down_until = 0.0
        self._down_reason = ""
        self._redis: Any = client or aioredis.Redis.from_url(
            url,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            retry_on_timeout=False,
            health_check_interval=0,
        )

    def _check_up(self) -> None:
        if self._clock() < self._down_until:
            raise StoreError(f"redis unavailable ({self._down_reason}); not retried yet")

    def _failed(self, exc: BaseException, what: str) -> StoreError:
        self._down_until = self._clock() + self.retry_after_s
        self._down_reason = f"{what} failed: {type(exc).__name__}: {exc}"[:200]
        return StoreError(self._down_reason)

    async def get(self, key: str) -> ThreadState | None:
        self._check_up()
        import redis

        try:
            async with asyncio.timeout(self.timeout_s):
                raw = await self._redis.get(self.prefix + key)
        except (TimeoutError, redis.RedisError, OSError) as exc:
            raise self._failed(exc, "GET") from exc
        if raw is None:
            return None
        return ThreadState.from_json(raw)

    async def put(self, key: str, state: ThreadState, ttl_s: float) -> None:
        self._check_up()
        import redis

        payload = state.to_json()
        try:
            async with asyncio.timeout(self.timeout_s):
                await self._redis.set(self.prefix + key, payload, px=max(1, int(ttl_s * 1000)))
        except (TimeoutError, redis.RedisError, OSError) as exc:
            raise self._failed(exc, "SET") from exc

    async def aclose(self) -> None:
        await self._redis.aclose()

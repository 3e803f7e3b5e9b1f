"""Per-model prompt caching for the fake upstream, as the prompt-caching page describes it.

A request's prompt is the sequence tools → system → messages (blocks in order). Each
``cache_control`` breakpoint (and the automatic one a top-level ``cache_control`` puts on the last
cacheable block) marks a prefix to cache. For each breakpoint the cache looks for an entry of the
same model at that breakpoint or at any of the 19 block boundaries before it (a 20-block
lookback); the longest prefix found is *read*, and its entry's lifetime is refreshed. Every
breakpoint after the read point is *written* (5 minutes, or 1 hour with ``ttl: "1h"``), unless its
prefix is shorter than the model's minimum cacheable length, in which case it is not cached at
all. Usage then reports ``cache_read_input_tokens`` (the prefix read),
``cache_creation_input_tokens`` (the tokens from the read point to the last cached breakpoint,
split by TTL in ``cache_creation``) and ``input_tokens`` (everything after that). An entry
belongs to the model that wrote it: the same prefix sent to another model is a miss. Lifetimes
run from the start of the request on an injectable clock, so tests can expire entries without
waiting.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from tests.fakes.strict_rules import block_tokens, cache_breakpoints, prompt_blocks

LOOKBACK_BLOCKS = 20
TTL_SECONDS = {"5m": 300.0, "1h": 3600.0}
MAX_ENTRIES = 10_000


class ManualClock:
    """A clock for tests: ``clock()`` is the current time, ``advance(s)`` moves it forward."""

    def __init__(self, start: float = 1_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass(frozen=True, slots=True)
class CacheUsage:
    input_tokens: int
    cache_read_input_tokens: int
    ephemeral_5m_input_tokens: int
    ephemeral_1h_input_tokens: int

    @property
    def cache_creation_input_tokens(self) -> int:
        return self.ephemeral_5m_input_tokens + self.ephemeral_1h_input_tokens


def _digests(body: Mapping[str, Any]) -> tuple[list[str], list[int]]:
    """Running prefix digests and cumulative token counts, one per prompt block."""
    hasher = hashlib.sha256()
    digests: list[str] = []
    cumulative: list[int] = []
    total = 0
    for role, block in prompt_blocks(body):
        bare = block
        if isinstance(block, dict) and "cache_control" in block:
            bare = {k: v for k, v in block.items() if k != "cache_control"}
        hasher.update(role.encode() + b"\x00")
        hasher.update(json.dumps(bare, sort_keys=True, separators=(",", ":")).encode() + b"\x01")
        digests.append(hasher.copy().hexdigest())
        total += block_tokens(bare)
        cumulative.append(total)
    return digests, cumulative


class PromptCache:
    """The cache entries of one fake upstream, keyed by (model, prefix digest)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._lock = threading.Lock()
        self._entries: dict[tuple[str, str], tuple[float, str]] = {}  # → (expires at, ttl)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)

    def apply(self, body: Mapping[str, Any], model: str, min_tokens: int) -> CacheUsage:
        """Read and write the cache for one accepted request; return its input-side usage."""
        digests, cumulative = _digests(body)
        total = cumulative[-1] if cumulative else 0
        points = [(i, ttl) for i, ttl in cache_breakpoints(body) if cumulative[i] >= min_tokens]
        now = self.clock()
        with self._lock:
            read_at = -1
            for index, _ttl in points:
                for position in range(index, max(-1, index - LOOKBACK_BLOCKS), -1):
                    entry = self._entries.get((model, digests[position]))
                    if entry is not None and entry[0] > now:
                        read_at = max(read_at, position)
                        break
            if read_at >= 0:
                _expires, ttl = self._entries[(model, digests[read_at])]
                self._entries[(model, digests[read_at])] = (now + TTL_SECONDS[ttl], ttl)
            written = {"5m": 0, "1h": 0}
            start = cumulative[read_at] if read_at >= 0 else 0
            for index, ttl in points:
                if index <= read_at:
                    continue
                written[ttl] += cumulative[index] - start
                start = cumulative[index]
                self._entries[(model, digests[index])] = (now + TTL_SECONDS[ttl], ttl)
            if len(self._entries) > MAX_ENTRIES:
                self._evict(now)
        read = cumulative[read_at] if read_at >= 0 else 0
        return CacheUsage(
            input_tokens=max(0, total - read - written["5m"] - written["1h"]),
            cache_read_input_tokens=read,
            ephemeral_5m_input_tokens=written["5m"],
            ephemeral_1h_input_tokens=written["1h"],
        )

    def _evict(self, now: float) -> None:
        live = {k: v for k, v in self._entries.items() if v[0] > now}
        if len(live) > MAX_ENTRIES:  # still too many: keep the ones that live longest
            kept = sorted(live.items(), key=lambda kv: kv[1][0])[-MAX_ENTRIES:]
            live = dict(kept)
        self._entries = live

"""A per-model prompt-cache simulator: what a model would read from and write to its cache.

The rules simulated (shared/docs/anthropic-wire.md §7.2 and §10):

- A cache entry belongs to one model and one exact prefix (tools → system → messages, up to a
  ``cache_control`` breakpoint). A prefix cached on Opus is a miss on Haiku.
- On a request, the longest live cached prefix is read: the API looks for hits at each
  breakpoint and at the ``LOOKBACK_BLOCKS`` block boundaries before it. Reading refreshes that
  entry's lifetime.
- Everything from the end of the read prefix up to the last breakpoint is written, and each
  breakpoint becomes an entry with its TTL (5 minutes, or 1 hour with ``ttl: "1h"``).
  Lifetimes count from the start of the request. A segment is billed at the TTL of the
  breakpoint that closes it.
- A breakpoint whose prefix is shorter than the model's minimum cacheable length is not
  cached. Its tokens are written with the next breakpoint that qualifies, or stay uncached
  input.
- Input after the last breakpoint is uncached input.

Each :class:`ModelCache` keeps at most ``max_entries`` entries (the oldest expiry goes first),
so a session's simulated state stays a few hundred bytes.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from typing import Any

from tierwise.gateway.shape import CacheProfile
from tierwise.types import Usage

# Minimum cacheable prompt, from the prompt-caching page (anthropic-wire.md §7.2).
# Matched in order, by model id glob; an unknown model gets the most common value.
MIN_CACHEABLE: tuple[tuple[str, int], ...] = (
    ("claude-fable-5*", 512),
    ("claude-mythos-5*", 512),
    ("claude-opus-5*", 512),
    ("claude-mythos-preview*", 2048),
    ("claude-opus-4-7*", 2048),
    ("claude-opus-4-6*", 4096),
    ("claude-opus-4-5*", 4096),
    ("claude-haiku-4-5*", 4096),
    ("claude-opus-4-8*", 1024),
    ("claude-sonnet-*", 1024),
    ("claude-opus-4*", 1024),
)
DEFAULT_MIN_CACHEABLE = 1024


def min_cacheable(model: str) -> int:
    for pattern, tokens in MIN_CACHEABLE:
        if fnmatch.fnmatchcase(model, pattern):
            return tokens
    return DEFAULT_MIN_CACHEABLE


@dataclass(frozen=True, slots=True)
class CacheUse:
    """One request's input by cache class, in tokens."""

    read: int = 0
    write_5m: int = 0
    write_1h: int = 0
    uncached: int = 0

    @property
    def written(self) -> int:
        return self.write_5m + self.write_1h

    @property
    def total(self) -> int:
        return self.read + self.write_5m + self.write_1h + self.uncached

    def usage(self, output_tokens: int = 0, thinking_tokens: int = 0) -> Usage:
        return Usage(
            input_tokens=self.uncached,
            output_tokens=output_tokens,
            cache_read_tokens=self.read,
            cache_write_5m_tokens=self.write_5m,
            cache_write_1h_tokens=self.write_1h,
            thinking_tokens=min(thinking_tokens, output_tokens),
        )

    @classmethod
    def of(cls, usage: Usage) -> CacheUse:
        return cls(
            read=usage.cache_read_tokens,
            write_5m=usage.cache_write_5m_tokens,
            write_1h=usage.cache_write_1h_tokens,
            uncached=usage.input_tokens,
        )


@dataclass(slots=True)
class Entry:
    tokens: int
    expires: float
    ttl_s: int


@dataclass(slots=True)
class ModelCache:
    """One model's simulated cache entries, by prefix fingerprint."""

    model: str
    entries: dict[str, Entry] = field(default_factory=dict)
    max_entries: int = 16

    def _expire(self, now: float) -> None:
        dead = [fp for fp, e in self.entries.items() if e.expires <= now]
        for fp in dead:
            del self.entries[fp]

    def warm_tokens(self, now: float) -> int:
        """The longest live cached prefix, in tokens (0 when cold)."""
        return max((e.tokens for e in self.entries.values() if e.expires > now), default=0)

    def request(self, profile: CacheProfile, now: float, *, commit: bool = True) -> CacheUse:
        """What this request reads, writes and leaves uncached; with ``commit`` the entries
        are updated as the API would (reads refreshed, breakpoints written)."""
        self._expire(now)
        hit_tokens, hit_fp = 0, None
        for _, tokens, fp in profile.boundaries:
            entry = self.entries.get(fp)
            if entry is not None and tokens > hit_tokens:
                hit_tokens, hit_fp = tokens, fp
        minimum = min_cacheable(self.model)
        write_5m = write_1h = 0
        covered = hit_tokens
        writes: list[tuple[str, int, int]] = []
        for bp in sorted(profile.breakpoints, key=lambda b: b.index):
            if bp.tokens <= covered or bp.tokens < minimum:
                continue
            segment = bp.tokens - covered
            if bp.ttl_s >= 3600:
                write_1h += segment
            else:
                write_5m += segment
            covered = bp.tokens
            writes.append((bp.fp, bp.tokens, bp.ttl_s))
        total = max(profile.total_tokens, covered)
        use = CacheUse(
            read=hit_tokens,
            write_5m=write_5m,
            write_1h=write_1h,
            uncached=total - covered,
        )
        if commit:
            if hit_fp is not None:
                entry = self.entries[hit_fp]
                entry.expires = max(entry.expires, now + entry.ttl_s)
            for fp, tokens, ttl in writes:
                self.entries[fp] = Entry(tokens, now + ttl, ttl)
            self._bound()
        return use

    def reconcile(self, observed: CacheUse) -> None:
        """Align with what the real API reported: no read means nothing of ours was there."""
        if observed.read == 0:
            self.entries.clear()

    def _bound(self) -> None:
        if len(self.entries) <= self.max_entries:
            return
        keep = sorted(self.entries.items(), key=lambda kv: kv[1].expires)[-self.max_entries :]
        self.entries = dict(keep)

    # -- serialisation (session state in Redis) -------------------------------------------
    def as_json(self) -> list[list[Any]]:
        return [[fp, e.tokens, round(e.expires, 3), e.ttl_s] for fp, e in self.entries.items()]

    @classmethod
    def from_json(cls, model: str, data: Any, max_entries: int = 16) -> ModelCache:
        cache = cls(model, max_entries=max_entries)
        if isinstance(data, list):
            for item in data[:max_entries]:
                if isinstance(item, list) and len(item) == 4:
                    fp, tokens, expires, ttl = item
                    cache.entries[str(fp)] = Entry(int(tokens), float(expires), int(ttl))
        return cache


class CacheSim:
    """Caches of several models, content-addressed (prefix fingerprints)."""

    def __init__(self, max_entries: int = 16) -> None:
        self.max_entries = max_entries
        self.models: dict[str, ModelCache] = {}

    def cache(self, model: str) -> ModelCache:
        cache = self.models.get(model)
        if cache is None:
            cache = self.models[model] = ModelCache(model, max_entries=self.max_entries)
        return cache

    def request(
        self, model: str, profile: CacheProfile, now: float, *, commit: bool = True
    ) -> CacheUse:
        return self.cache(model).request(profile, now, commit=commit)

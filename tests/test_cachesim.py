"""The per-model prompt-cache simulator, against the caching rules (anthropic-wire.md §7.2)."""

from __future__ import annotations

from tierwise.gateway.shape import Breakpoint, CacheProfile
from tierwise.sessions.cachesim import CacheSim, CacheUse, ModelCache, min_cacheable

OPUS = "claude-opus-4-6"
HAIKU = "claude-haiku-4-5"
SONNET = "claude-sonnet-4-6"


def profile(
    total: int,
    *bps: tuple[int, int, str],
    ttl: int = 300,
    extra: tuple[tuple[int, int, str], ...] = (),
) -> CacheProfile:
    """A request of ``total`` tokens with breakpoints (index, tokens, fingerprint)."""
    breakpoints = tuple(Breakpoint(i, t, ttl, fp) for i, t, fp in bps)
    boundaries = tuple(sorted({*(bps), *extra}))
    return CacheProfile(total, max((i for i, _, _ in bps), default=0) + 1, breakpoints, boundaries)


def test_write_then_read_within_the_ttl_and_refresh_on_read() -> None:
    cache = ModelCache(OPUS)
    first = profile(20_000, (10, 20_000, "a"))
    assert cache.request(first, 0.0) == CacheUse(read=0, write_5m=20_000, uncached=0)
    second = profile(22_000, (14, 22_000, "b"), extra=((10, 20_000, "a"),))
    assert cache.request(second, 200.0) == CacheUse(read=20_000, write_5m=2_000)
    # "a" was refreshed at t=200 (read), so at t=450 it is still alive although written at 0
    assert cache.request(profile(20_000, (10, 20_000, "a")), 450.0).read == 20_000


def test_an_expired_prefix_is_written_again() -> None:
    cache = ModelCache(OPUS)
    cache.request(profile(20_000, (10, 20_000, "a")), 0.0)
    again = cache.request(profile(20_000, (10, 20_000, "a")), 301.0)
    assert again == CacheUse(read=0, write_5m=20_000)


def test_one_hour_breakpoints_live_an_hour_and_are_billed_as_such() -> None:
    cache = ModelCache(OPUS)
    use = cache.request(profile(20_000, (10, 20_000, "a"), ttl=3600), 0.0)
    assert use == CacheUse(write_1h=20_000)
    assert cache.request(profile(20_000, (10, 20_000, "a"), ttl=3600), 3000.0).read == 20_000


def test_a_cache_belongs_to_one_model() -> None:
    sim = CacheSim()
    sim.request(OPUS, profile(20_000, (10, 20_000, "a")), 0.0)
    assert sim.request(HAIKU, profile(20_000, (10, 20_000, "a")), 1.0).read == 0
    assert sim.request(OPUS, profile(20_000, (10, 20_000, "a")), 2.0).read == 20_000


def test_minimum_cacheable_length_per_model() -> None:
    assert min_cacheable(HAIKU) == 4096
    assert min_cacheable(SONNET) == 1024
    assert min_cacheable("claude-opus-4-7") == 2048
    assert min_cacheable("claude-opus-5-5") == 512
    assert min_cacheable("some-future-model") == 1024
    short = profile(3_000, (5, 3_000, "s"))
    assert ModelCache(HAIKU).request(short, 0.0) == CacheUse(uncached=3_000)
    assert ModelCache(SONNET).request(short, 0.0) == CacheUse(write_5m=3_000)
    # a too-short breakpoint's tokens are written with the next one that qualifies
    two = profile(10_000, (2, 2_000, "x"), (8, 9_000, "y"))
    assert ModelCache(HAIKU).request(two, 0.0) == CacheUse(write_5m=9_000, uncached=1_000)


def test_a_hit_is_found_at_an_earlier_boundary_within_the_lookback() -> None:
    cache = ModelCache(OPUS)
    cache.request(profile(20_000, (10, 20_000, "a")), 0.0)
    # the next request's only message breakpoint sits 4 blocks later; "a" is a boundary in
    # its lookback window, so the prefix up to it is read
    later = profile(23_000, (3, 5_000, "sys"), (14, 23_000, "c"), extra=((10, 20_000, "a"),))
    assert cache.request(later, 10.0) == CacheUse(read=20_000, write_5m=3_000)
    # a boundary not offered (outside every window) is not found
    far = profile(30_000, (40, 30_000, "d"))
    assert cache.request(far, 20.0) == CacheUse(write_5m=30_000)


def test_input_after_the_last_breakpoint_is_uncached() -> None:
    use = ModelCache(OPUS).request(profile(21_500, (10, 20_000, "a")), 0.0)
    assert use == CacheUse(write_5m=20_000, uncached=1_500)
    assert use.total == 21_500
    usage = use.usage(output_tokens=300, thinking_tokens=500)
    assert usage.input_tokens == 1_500
    assert usage.cache_write_5m_tokens == 20_000
    assert usage.thinking_tokens == 300  # never more than the output


def test_reconcile_forgets_what_the_real_cache_did_not_have() -> None:
    cache = ModelCache(OPUS)
    cache.request(profile(20_000, (10, 20_000, "a")), 0.0)
    cache.reconcile(CacheUse(read=0, write_5m=20_000))
    assert cache.warm_tokens(1.0) == 0
    cache.request(profile(20_000, (10, 20_000, "a")), 2.0)
    cache.reconcile(CacheUse(read=20_000))
    assert cache.warm_tokens(3.0) == 20_000


def test_entries_are_bounded_and_serialise() -> None:
    cache = ModelCache(OPUS, max_entries=4)
    for i in range(10):
        cache.request(profile(5_000 + i, (i, 5_000 + i, f"p{i}")), float(i))
    assert len(cache.entries) == 4
    assert set(cache.entries) == {"p6", "p7", "p8", "p9"}  # the latest expiries stay
    back = ModelCache.from_json(OPUS, cache.as_json())
    assert back.entries == cache.entries
    assert ModelCache.from_json(OPUS, "garbage").entries == {}

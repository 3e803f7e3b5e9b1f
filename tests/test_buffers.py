"""The process-wide cap on upstream bytes held while replies are read (issue 11):
``gateway.upstream_max_buffered_bytes``, :mod:`tierwise.gateway.buffers`."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from pathlib import Path

import pytest

from tierwise.config import load
from tierwise.errors import ConfigError
from tierwise.gateway.buffers import FREE_EVENT_BYTES, HELD, BufferCapExceeded, ByteAllowance
from tierwise.gateway.sse import EventSplitter, MalformedEvent


@pytest.fixture
def small_cap() -> Iterator[None]:
    limit, held = HELD.limit, HELD.held
    HELD.limit = held + 2 * FREE_EVENT_BYTES
    try:
        yield
    finally:
        HELD.limit = limit


def test_allowance_refuses_beyond_its_limit_and_gives_back() -> None:
    allowance = ByteAllowance(100)
    allowance.take(60)
    with pytest.raises(BufferCapExceeded, match="upstream_max_buffered_bytes"):
        allowance.take(41)
    allowance.take(40)
    assert (allowance.held, allowance.peak, allowance.refused) == (100, 100, 1)
    allowance.give(100)
    assert allowance.held == 0


def test_ordinary_events_are_not_counted() -> None:
    before = HELD.held
    splitter = EventSplitter()
    events = splitter.feed(b"event: ping\ndata: {}\n\nevent: ping\ndata: {")
    assert len(events) == 1 and HELD.held == before


def test_large_pending_events_are_counted_and_given_back(small_cap: None) -> None:
    before = HELD.held
    splitter = EventSplitter()
    splitter.feed(b"data: " + b"x" * (FREE_EVENT_BYTES + 1000))
    assert HELD.held - before == FREE_EVENT_BYTES + 1006
    events = splitter.feed(b"\n\n")  # the event completes: nothing is pending any more
    assert len(events) == 1 and HELD.held == before


def test_two_streams_share_one_cap(small_cap: None) -> None:
    before = HELD.held
    first, second = EventSplitter(), EventSplitter()
    first.feed(b"data: " + b"x" * (FREE_EVENT_BYTES + FREE_EVENT_BYTES // 2))
    with pytest.raises(MalformedEvent, match="upstream_max_buffered_bytes"):
        second.feed(b"data: " + b"y" * (FREE_EVENT_BYTES + FREE_EVENT_BYTES // 2))
    del first, second  # an abandoned stream gives its bytes back
    gc.collect()
    assert HELD.held == before


def test_finish_gives_back_an_incomplete_event(small_cap: None) -> None:
    before = HELD.held
    splitter = EventSplitter()
    splitter.feed(b"data: " + b"x" * (FREE_EVENT_BYTES * 2 - 100))
    assert HELD.held > before
    splitter.finish()
    assert HELD.held == before


def test_the_cap_must_hold_one_reply(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text("[gateway]\nupstream_max_buffered_bytes = 1048576\n")
    with pytest.raises(ConfigError, match=r"gateway.upstream_max_buffered_bytes .*1048576 is less"):
        load(cfg, environ={"TIERWISE_HOME": str(tmp_path)})

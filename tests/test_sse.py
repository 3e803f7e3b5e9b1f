"""SSE framing (``EventSplitter``) and the strict ``StreamTracker`` (issue 11): every line
ending of the SSE spec, exact raw bytes per event, bounded events, and every event a client
could not use refused with a reason."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.fakes.anthropic_server import _stream_events
from tierwise.gateway.sse import (
    EventSplitter,
    MalformedEvent,
    SSEEvent,
    SSEParser,
    StreamTracker,
    message_to_sse,
)

MESSAGE: dict[str, Any] = {
    "id": "msg_1",
    "type": "message",
    "role": "assistant",
    "model": "claude-haiku-4-5",
    "content": [
        {"type": "thinking", "thinking": "hmm", "signature": "sig"},
        {"type": "text", "text": "Hello\nworld"},
        {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {"a": 1}},
    ],
    "stop_reason": "tool_use",
    "stop_sequence": None,
    "usage": {
        "input_tokens": 10,
        "output_tokens": 20,
        "cache_creation_input_tokens": 1,
        "cache_read_input_tokens": 2,
        "cache_creation": {"ephemeral_5m_input_tokens": 1, "ephemeral_1h_input_tokens": 0},
        "output_tokens_details": {"thinking_tokens": 3},
    },
}
STREAM = message_to_sse(MESSAGE)
NAMES = [
    "message_start",
    "content_block_start",
    "content_block_delta",
    "content_block_delta",
    "content_block_stop",
    "content_block_start",
    "content_block_delta",
    "content_block_stop",
    "content_block_start",
    "content_block_delta",
    "content_block_stop",
    "message_delta",
    "message_stop",
]


def split_all(data: bytes, sizes: list[int], **kwargs: Any) -> tuple[list[SSEEvent], bytes]:
    splitter = EventSplitter(**kwargs)
    events: list[SSEEvent] = []
    i = 0
    for size in sizes:
        events += splitter.feed(data[i : i + size])
        i += size
    events += splitter.feed(data[i:])
    return events, splitter.finish()


def feed_line(splitter: EventSplitter, size: int, pending: list[int]) -> None:
    """Feed ``size`` bytes of one line in 64 KiB pieces, noting the pending size after each."""
    piece = b"a" * 65536
    for _ in range(0, size, len(piece)):
        splitter.feed(piece)
        pending.append(splitter.pending)


# -- framing ---------------------------------------------------------------------------------


@pytest.mark.parametrize("ending", [b"\n", b"\r\n", b"\r"], ids=["lf", "crlf", "cr"])
def test_every_line_ending_of_the_spec_frames_the_same_events(ending: bytes) -> None:
    data = STREAM.replace(b"\n", ending)
    events, rest = split_all(data, [])
    assert [e.name for e in events] == NAMES
    assert [e.data for e in events] == [e.data for e in split_all(STREAM, [])[0]]
    assert rest == b""
    assert b"".join(e.raw for e in events) == data


def test_a_cr_only_stream_ends_with_its_message_stop_through_the_former_parser_too() -> None:
    data = STREAM.replace(b"\n", b"\r")
    parser = SSEParser()
    names = [name for name, _ in parser.feed(data)]
    assert names[-1] == "message_stop"
    assert parser.pending == 0
    tracker = StreamTracker()
    for name, payload in SSEParser().feed(data):
        tracker.observe(name, payload)
    assert tracker.complete
    assert tracker.usage["output_tokens"] == 20


@settings(max_examples=60, deadline=None)
@given(
    ending=st.sampled_from([b"\n", b"\r\n", b"\r"]),
    sizes=st.lists(st.integers(min_value=0, max_value=90), max_size=40),
)
def test_any_chunking_gives_the_same_events_and_raw_bytes_add_up_to_the_input(
    ending: bytes, sizes: list[int]
) -> None:
    data = (b": a comment\n\n" + STREAM + b":keep-alive\n\n").replace(b"\n", ending)
    events, rest = split_all(data, sizes)
    assert [e.name for e in events] == NAMES
    assert b"".join(e.raw for e in events) + rest == data
    whole, _ = split_all(data, [])
    assert [(e.name, e.data) for e in events] == [(e.name, e.data) for e in whole]


def test_an_event_ending_in_a_split_crlf_is_dispatched_at_once() -> None:
    """A CR at the end of a chunk may be half of a CRLF: the event is not held back for the
    next chunk (a CR-only stream would be an event late); the LF starts the next raw."""
    splitter = EventSplitter()
    (first,) = splitter.feed(b"event: a\r\ndata: {}\r\n\r")
    assert first.raw == b"event: a\r\ndata: {}\r\n\r"
    (second,) = splitter.feed(b"\nevent: b\r\ndata: {}\r\n\r\n")
    assert (second.name, second.data) == ("b", b"{}")
    assert second.raw == b"\nevent: b\r\ndata: {}\r\n\r\n"
    assert splitter.finish() == b""


def test_fields_follow_the_spec() -> None:
    data = (
        b"event: a\ndata: one\ndata:two\ndata\nid: 7\nretry: 10\n: comment\n\n"
        b"event:b\ndata:  two spaces\n\n"
        b"data: no name\n\n"
        b"event: c \n\n"
    )
    events, rest = split_all(data, [])
    assert [(e.name, e.data) for e in events] == [
        ("a", b"one\ntwo\n"),
        ("b", b" two spaces"),
        (None, b"no name"),
        ("c ", b""),
    ]
    assert rest == b""


def test_blocks_without_fields_are_not_events_but_their_bytes_are_kept() -> None:
    data = b"\n\n: ping\n\nevent: x\ndata: {}\n\n: trailing\n\n"
    events, rest = split_all(data, [])
    assert events == [SSEEvent("x", b"{}", b"\n\n: ping\n\nevent: x\ndata: {}\n\n")]
    assert rest == b": trailing\n\n"


def test_one_event_is_one_raw_piece_and_a_partial_event_waits() -> None:
    splitter = EventSplitter()
    one = b'event: ping\ndata: {"type": "ping"}\n\n'
    assert splitter.feed(one) == [SSEEvent("ping", b'{"type": "ping"}', one)]
    assert splitter.feed(b"event: message_stop\ndata: {") == []
    assert splitter.pending == len(b"event: message_stop\ndata: {")
    (event,) = splitter.feed(b'"type":"message_stop"}\n\n')
    assert event.raw == b'event: message_stop\ndata: {"type":"message_stop"}\n\n'
    assert splitter.pending == 0


def test_an_event_over_the_limit_is_malformed_and_the_buffer_never_exceeds_it() -> None:
    limit = 1024 * 1024
    splitter = EventSplitter(max_event_bytes=limit)
    splitter.feed(b"event: content_block_delta\ndata: ")
    pending: list[int] = []
    with pytest.raises(MalformedEvent, match="larger than the 1048576-byte limit"):
        feed_line(splitter, 100 * 65536, pending)
    assert max(pending) <= limit
    whole = b"event: x\ndata: " + b"b" * limit + b"\n\n"
    with pytest.raises(MalformedEvent, match="an SSE event is larger"):
        EventSplitter(max_event_bytes=limit).feed(whole)
    assert EventSplitter(max_event_bytes=limit + 100).feed(whole)[0].name == "x"


def test_the_default_event_limit_is_16_mib() -> None:
    assert EventSplitter().max_event_bytes == 16 * 1024 * 1024


def test_a_50_mb_line_in_64_kib_pieces_is_refused_at_the_limit() -> None:
    splitter = EventSplitter()
    splitter.feed(b"event: content_block_delta\ndata: ")
    pending: list[int] = []
    with pytest.raises(MalformedEvent):
        feed_line(splitter, 50_000_000, pending)
    assert len(pending) * 65536 <= 16 * 1024 * 1024


# -- the tracker -----------------------------------------------------------------------------


def ev(name: str, **payload: Any) -> tuple[str, bytes]:
    return name, json.dumps({"type": name, **payload}).encode()


def start(**usage: Any) -> tuple[str, bytes]:
    message: dict[str, Any] = {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "claude-haiku-4-5",
        "content": [],
        "stop_reason": None,
        "usage": {"input_tokens": 10, "output_tokens": 1, **usage},
    }
    return ev("message_start", message=message)


def block(index: Any = 0, content_block: Any = None) -> tuple[str, bytes]:
    cb = {"type": "text", "text": ""} if content_block is None else content_block
    return ev("content_block_start", index=index, content_block=cb)


def text(index: Any = 0, value: Any = "hi") -> tuple[str, bytes]:
    return ev("content_block_delta", index=index, delta={"type": "text_delta", "text": value})


def stop(index: Any = 0) -> tuple[str, bytes]:
    return ev("content_block_stop", index=index)


def mdelta(**usage: Any) -> tuple[str, bytes]:
    return ev(
        "message_delta",
        delta={"stop_reason": "end_turn", "stop_sequence": None},
        usage={"output_tokens": 5, **usage},
    )


END = ev("message_stop")
GOOD = [start(), block(), text(), stop(), mdelta(), END]


def observe_all(events: Sequence[tuple[str | None, bytes]]) -> StreamTracker:
    tracker = StreamTracker()
    for name, data in events:
        tracker.observe(name, data)
    return tracker


def test_a_well_formed_stream_is_tracked() -> None:
    tracker = observe_all([start(cache_read_input_tokens=4), ("ping", b"{}"), *GOOD[1:]])
    assert tracker.complete and tracker.started
    assert tracker.model == "claude-haiku-4-5"
    assert tracker.message_id == "msg_1"
    assert tracker.stop_reason == "end_turn"
    assert tracker.usage == {"input_tokens": 10, "output_tokens": 5, "cache_read_input_tokens": 4}


def test_the_fake_servers_streams_are_accepted() -> None:
    events = [(e["type"], json.dumps(e).encode()) for e in _stream_events(MESSAGE, None)]
    tracker = observe_all(events)
    assert tracker.complete
    assert tracker.usage["output_tokens_details"] == {"thinking_tokens": 3}
    errored = [(e["type"], json.dumps(e).encode()) for e in _stream_events(MESSAGE, "api_error")]
    assert observe_all(errored).error == {"type": "api_error", "message": "Internal server error"}


def test_usage_merges_message_start_then_the_last_message_delta() -> None:
    tracker = observe_all(
        [
            start(cache_creation_input_tokens=3),
            block(),
            stop(),
            mdelta(output_tokens=7),
            mdelta(output_tokens=9, input_tokens=12, server_tool_use={"web_search_requests": 1}),
            END,
        ]
    )
    assert tracker.usage == {
        "input_tokens": 12,
        "output_tokens": 9,
        "cache_creation_input_tokens": 3,
        "server_tool_use": {"web_search_requests": 1},
    }


def test_huge_but_well_typed_counts_stay_integers() -> None:
    huge = 10**30
    data = (
        b'{"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":%d}}'
    )
    tracker = observe_all(
        [start(input_tokens=huge), block(), stop(), ("message_delta", data % huge), END]
    )
    assert tracker.usage["input_tokens"] == huge
    assert tracker.usage["output_tokens"] == huge
    assert type(tracker.usage["output_tokens"]) is int


def test_unknown_events_are_allowed_and_empty_unknown_ones_skipped() -> None:
    tracker = StreamTracker()
    assert tracker.observe(*ev("fallback", info=1)) == {"type": "fallback", "info": 1}
    assert tracker.observe("something_new", b"") is None
    observe_all([start(), ev("server_hint", x=1), *GOOD[1:]])


BAD: dict[str, list[tuple[str | None, bytes]]] = {
    "no event line": [(None, b'{"type":"message_start"}')],
    "not JSON": [("message_start", b"{nope")],
    "NaN": [("message_start", b'{"type":"message_start","x":NaN}')],
    "not an object": [("message_start", b"[1]")],
    "type mismatch": [("message_start", b'{"type":"message_stop"}')],
    "known event without data": [start(), block(), ("content_block_delta", b"")],
    "negative usage": [start(input_tokens=-5)],
    "string usage": [start(input_tokens="12")],
    "float usage": [start(input_tokens=1.5)],
    "bool usage": [start(output_tokens=True)],
    "null required usage": [start(input_tokens=None)],
    "usage not an object": [
        ev("message_start", message={"id": "m", "model": "x", "content": [], "usage": 5})
    ],
    "bad usage detail": [start(cache_creation={"ephemeral_5m_input_tokens": -1})],
    "negative delta usage": [start(), mdelta(output_tokens=-1)],
    "string delta usage": [start(), mdelta(output_tokens="9")],
    "float delta usage": [start(), mdelta(output_tokens=2.5)],
    "missing delta usage": [start(), ev("message_delta", delta={"stop_reason": "end_turn"})],
    "delta not an object": [start(), ev("message_delta", delta=[], usage={"output_tokens": 1})],
    "stop_reason not a string": [
        start(),
        ev("message_delta", delta={"stop_reason": 5}, usage={"output_tokens": 1}),
    ],
    "message not an object": [ev("message_start", message="hi")],
    "model not a string": [ev("message_start", message={"id": "m", "model": 5, "content": []})],
    "content not a list": [
        ev("message_start", message={"id": "m", "model": "x", "content": {}, "usage": {}})
    ],
    "message_start twice": [start(), start()],
    "message_start after content": [start(), block(), start()],
    "content before message_start": [block()],
    "message_delta before message_start": [mdelta()],
    "message_stop before message_start": [END],
    "index a string": [start(), block(index="0")],
    "index negative": [start(), block(index=-1)],
    "index a bool": [start(), block(index=False)],
    "index a float": [start(), block(index=0.0)],
    "block started twice": [start(), block(0), block(0)],
    "block index skips": [start(), block(1)],
    "delta for a block never started": [start(), block(0), text(index=7)],
    "delta after its block stopped": [start(), block(0), stop(0), text(0)],
    "stop for a block never started": [start(), stop(3)],
    "block not an object": [start(), block(content_block="text")],
    "block without a string type": [start(), block(content_block={"type": 1})],
    "delta without a type": [start(), block(), ev("content_block_delta", index=0, delta={})],
    "text delta not a string": [start(), block(), text(value=["x"])],
    "event after message_stop": [*GOOD, text()],
    "ping after message_stop": [*GOOD, ("ping", b"{}")],
}


@pytest.mark.parametrize("events", BAD.values(), ids=BAD.keys())
def test_events_clients_cannot_use_are_malformed(events: list[tuple[str | None, bytes]]) -> None:
    tracker = StreamTracker()
    *before, last = events
    for name, data in before:
        tracker.observe(name, data)
    with pytest.raises(MalformedEvent) as caught:
        tracker.observe(*last)
    assert len(str(caught.value)) < 200  # short, never the upstream's bytes


def test_malformed_messages_name_the_problem() -> None:
    cases = {
        "usage.input_tokens is -5, not a non-negative integer": [start(input_tokens=-5)],
        "usage.input_tokens is a string": [start(input_tokens="12")],
        "content_block_delta for block 7, which is not open": [start(), block(), text(index=7)],
        "content_block_start index is a string": [start(), block(index="0")],
        "content block 0 started twice": [start(), block(0), block(0)],
        "'content_block_delta' event after message_stop": [*GOOD, text()],
        "a second message_start": [start(), start()],
    }
    for message, events in cases.items():
        with pytest.raises(MalformedEvent) as caught:
            observe_all(events)
        assert message in str(caught.value), (message, str(caught.value))


def test_error_events_are_kept() -> None:
    tracker = observe_all(
        [start(), ev("error", error={"type": "overloaded_error", "message": "Overloaded"})]
    )
    assert tracker.error == {"type": "overloaded_error", "message": "Overloaded"}
    tracker = observe_all([ev("error", error="boom")])
    assert tracker.error is not None and tracker.error["type"] == "api_error"

"""Both ways a stream reaches the client (issue 16): under ``tierwise serve``'s protocol the
relay writes each event straight to the client's transport (``tierwise.direct_body``); under
another server (uvicorn's own protocol here) it writes through ASGI ``send``. Both must give the
client the same bytes and end the same way: complete, cut by the upstream, malformed, or with
the client gone (then the upstream connection is closed and the request recorded as such).
The disconnect watch before the reply (``unless_disconnected``) has the same two ways."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import pytest

from tests.conftest import ListSink, RunningGateway
from tests.fakes.anthropic_server import FakeAnthropic
from tests.servers import ServerThread
from tierwise.config import load, revalidate
from tierwise.gateway import build_app
from tierwise.gateway import connections as connections_mod
from tierwise.gateway import relay as relay_mod

PROTOCOLS = ("tierwise", "uvicorn")


@pytest.fixture(params=PROTOCOLS)
def gateway(
    request: pytest.FixtureRequest, fake_anthropic: FakeAnthropic, tmp_path: Path
) -> Iterator[RunningGateway]:
    settings = load(
        environ={
            "TIERWISE_HOME": str(tmp_path),
            "ANTHROPIC_API_KEY": fake_anthropic.api_key,
            "ANTHROPIC_BASE_URL": fake_anthropic.base_url,
        }
    )
    settings = revalidate(
        settings, gateway=settings.gateway.model_copy(update={"retry_after_cap_s": 0.2})
    )
    sink = ListSink()
    http = None if request.param == "tierwise" else "httptools"
    server = ServerThread(build_app(settings, sink=sink), http=http).start()
    try:
        yield RunningGateway(server.base_url, sink, settings, fake_anthropic)
    finally:
        server.stop()


@pytest.fixture
def writes(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """Counts direct writes and ASGI-pushed relays (the server runs in this process)."""
    counts = {"direct": 0, "push": 0}
    direct_write = connections_mod.DirectBody.write
    push = relay_mod.StreamRelay.push

    def counting_write(self: Any, data: bytes) -> bool:
        counts["direct"] += 1
        return direct_write(self, data)

    async def counting_push(self: Any, *args: Any, **kwargs: Any) -> None:
        counts["push"] += 1
        await push(self, *args, **kwargs)

    monkeypatch.setattr(connections_mod.DirectBody, "write", counting_write)
    monkeypatch.setattr(relay_mod.StreamRelay, "push", counting_push)
    return counts


def _port(gateway: RunningGateway) -> int:
    return int(gateway.base_url.rsplit(":", 1)[1])


def test_a_complete_stream_is_relayed_byte_for_byte_and_recorded(
    gateway: RunningGateway, writes: dict[str, int], request: pytest.FixtureRequest
) -> None:
    gateway.fake.script(reply_text="one two three four five six seven eight nine ten")
    with gateway.anthropic(max_retries=0).messages.stream(
        model="haiku", max_tokens=200, messages=[{"role": "user", "content": "count"}]
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "one two three four five six seven eight nine ten"
    assert final.stop_reason == "end_turn"
    entry = gateway.wait_for_entries(1)[-1]
    assert (entry.status, entry.error_type, entry.streaming) == ("ok", None, True)
    assert entry.usage.output_tokens == final.usage.output_tokens
    assert writes["push"] == 1  # both servers: the upstream pushes into the relay
    if request.node.callspec.params["gateway"] == "tierwise":
        assert writes["direct"] >= 1  # events written straight to the transport
    else:
        assert writes["direct"] == 0  # through ASGI send


def test_a_stream_cut_by_the_upstream_ends_with_an_error_event(
    gateway: RunningGateway, writes: dict[str, int]
) -> None:
    gateway.fake.script(stream_cut=True)
    error = gateway.stream_error(
        model="haiku", max_tokens=500, messages=[{"role": "user", "content": "hi"}]
    )
    assert "ended before message_stop" in str(error)
    entry = gateway.wait_for_entries(1)[-1]
    assert (entry.status, entry.error_type) == ("error", "incomplete_stream")


def test_a_malformed_event_ends_the_stream_before_the_client_gets_it(
    gateway: RunningGateway,
) -> None:
    gateway.fake.script(malformed_sse=True)
    events: list[str] = []

    def consume() -> None:
        with gateway.anthropic(max_retries=0).messages.stream(
            model="haiku", max_tokens=100, messages=[{"role": "user", "content": "hi"}]
        ) as stream:
            events.extend(event.type for event in stream)

    with pytest.raises(anthropic.APIStatusError) as info:
        consume()
    assert "malformed event" in str(info.value)
    assert events and all(e != "error" for e in events)  # every event the client got parsed
    entry = gateway.wait_for_entries(1)[-1]
    assert entry.error_type == "malformed_stream"


def test_the_client_gone_mid_stream_closes_the_upstream_and_is_recorded(
    gateway: RunningGateway,
) -> None:
    gateway.fake.script(event_delay_s=0.2)
    body = (
        b'{"model": "haiku", "max_tokens": 500, "stream": true, '
        b'"messages": [{"role": "user", "content": "tell me a long story"}]}'
    )
    with socket.create_connection(("127.0.0.1", _port(gateway)), timeout=10) as sock:
        sock.sendall(
            b"POST /v1/messages HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\n"
            + b"content-length: %d\r\n\r\n" % len(body)
            + body
        )
        received = sock.recv(65536)
        while b"event: message_start" not in received:
            more = sock.recv(65536)
            assert more, "the stream ended before its first event"
            received += more
        assert received.startswith(b"HTTP/1.1 200")
    entry = gateway.wait_for_entries(1, timeout_s=10)[-1]
    assert (entry.status, entry.error_type) == ("error", "client_disconnected")
    # the gateway goes on serving
    reply = gateway.anthropic(max_retries=0).messages.create(
        model="haiku", max_tokens=10, messages=[{"role": "user", "content": "hi"}]
    )
    assert reply.content


def test_the_client_gone_before_a_slow_reply_cancels_the_upstream_call(
    gateway: RunningGateway,
) -> None:
    gateway.fake.script(delay_s=3.0)
    body = b'{"model": "haiku", "max_tokens": 10, "messages": [{"role": "user", "content": "x"}]}'
    with socket.create_connection(("127.0.0.1", _port(gateway)), timeout=10) as sock:
        sock.sendall(
            b"POST /v1/messages HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\n"
            + b"content-length: %d\r\n\r\n" % len(body)
            + body
        )
        time.sleep(0.3)
    entries = gateway.wait_for_entries(1, timeout_s=10)
    # had the call not been cancelled, the reply would have come and been recorded "ok"
    assert (entries[-1].status, entries[-1].error_type) == ("error", "client_disconnected")

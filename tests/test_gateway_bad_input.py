"""Bad input and hostile clients: every answer in its dialect's shape, never a 5xx, and the
gateway keeps serving."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx2 as httpx
import openai
import pytest

from tests.conftest import GatewayFactory, RunningGateway

MSG = b'{"model": "auto", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}'


def post(gw: RunningGateway, path: str, body: bytes, **headers: str) -> httpx.Response:
    return httpx.post(
        gw.base_url + path, content=body, headers={"content-type": "application/json", **headers}
    )


@pytest.mark.parametrize("path", ["/v1/messages", "/v1/chat/completions"])
@pytest.mark.parametrize(
    ("body", "ctype", "status"),
    [
        (
            b'{"model": "auto", "messages": [{"role": "user", "content": "\xff\xfe"}]}',
            "application/json",
            400,
        ),
        (MSG, "text/plain", 400),
        (b"[" * 5000 + b"]" * 5000, "application/json", 400),
        (b"", "application/json", 400),
        (b"null", "application/json", 400),
    ],
)
def test_malformed_bodies_are_400_in_dialect(
    gateway: RunningGateway, path: str, body: bytes, ctype: str, status: int
) -> None:
    response = httpx.post(gateway.base_url + path, content=body, headers={"content-type": ctype})
    assert response.status_code == status, response.text
    data = response.json()
    if path == "/v1/messages":
        assert data["type"] == "error" and data["error"]["type"] == "invalid_request_error"
    else:
        assert set(data["error"]) == {"message", "type", "param", "code"}


def test_nesting_too_deep_to_forward(gateway: RunningGateway) -> None:
    body = MSG[:-1] + b', "extra": ' + b"[" * 300 + b"]" * 300 + b"}"
    response = post(gateway, "/v1/messages", body)
    assert response.status_code == 400
    assert "cannot be forwarded" in response.json()["error"]["message"]
    # The OpenAI dialect drops fields it does not translate, so the same body is answered.
    assert post(gateway, "/v1/chat/completions", body).status_code == 200


def test_huge_body_413_with_and_without_content_length(make_gateway: GatewayFactory) -> None:
    gw = make_gateway(max_body_bytes=10_000)
    big = MSG.replace(b'"hi"', b'"' + b"x" * 20_000 + b'"')
    assert post(gw, "/v1/messages", big).status_code == 413

    def chunks() -> Iterator[bytes]:
        for _ in range(30):
            yield b" " * 1000
        yield MSG

    chunked = httpx.post(
        gw.base_url + "/v1/messages", content=chunks(), headers={"content-type": "application/json"}
    )
    assert chunked.status_code == 413
    assert chunked.json()["error"]["type"] == "request_too_large"


def test_huge_headers_are_not_a_server_error(gateway: RunningGateway) -> None:
    try:
        response = post(gateway, "/v1/messages", MSG, **{"x-filler": "a" * 200_000})
    except httpx.RemoteProtocolError:
        pass  # the HTTP parser closed the connection: also fine
    else:
        assert response.status_code < 500
    assert post(gateway, "/v1/messages", MSG).status_code == 200  # still serving


def test_slow_body_is_cut_off(make_gateway: GatewayFactory) -> None:
    gw = make_gateway(body_timeout_s=0.5)
    with socket.create_connection(
        ("127.0.0.1", int(gw.base_url.rsplit(":", 1)[1])), timeout=10
    ) as sock:
        sock.sendall(
            b"POST /v1/messages HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\n"
            + b"content-length: %d\r\n\r\n" % len(MSG)
            + MSG[:10]
        )
        start = time.monotonic()
        reply = sock.recv(65536)
        assert time.monotonic() - start < 5
    assert reply.startswith(b"HTTP/1.1 408")
    assert b"timeout_error" in reply


def test_client_gone_mid_stream_cancels_upstream_and_is_recorded(gateway: RunningGateway) -> None:
    gateway.fake.script(event_delay_s=0.2)
    port = int(gateway.base_url.rsplit(":", 1)[1])
    body = MSG.replace(b'"max_tokens": 10', b'"max_tokens": 500, "stream": true')
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(
            b"POST /v1/messages HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\n"
            + b"content-length: %d\r\n\r\n" % len(body)
            + body
        )
        first = sock.recv(65536)
        assert first.startswith(b"HTTP/1.1 200")
    entries = gateway.wait_for_entries(1, timeout_s=10)
    assert entries[-1].status == "error"
    assert entries[-1].error_type == "client_disconnected"
    assert post(gateway, "/v1/messages", MSG).status_code == 200


def test_client_gone_before_a_slow_reply_is_recorded(gateway: RunningGateway) -> None:
    gateway.fake.script(delay_s=1.5)
    port = int(gateway.base_url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(
            b"POST /v1/messages HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\n"
            + b"content-length: %d\r\n\r\n" % len(MSG)
            + MSG
        )
        time.sleep(0.3)
    entries = gateway.wait_for_entries(1, timeout_s=5)
    assert (entries[-1].status, entries[-1].error_type) == ("error", "client_disconnected")
    assert entries[-1].tier == "haiku" or entries[-1].tier is not None


def test_malformed_upstream_sse_ends_with_an_error(gateway: RunningGateway) -> None:
    gateway.fake.script(malformed_sse=True)

    def consume() -> None:
        with gateway.anthropic(max_retries=0).messages.stream(
            model="haiku", max_tokens=100, messages=[{"role": "user", "content": "hi"}]
        ) as stream:
            stream.get_final_message()

    with pytest.raises(anthropic.APIStatusError) as info:
        consume()
    assert "malformed event" in str(info.value)
    gateway.fake.script(malformed_sse=True)
    with pytest.raises(openai.APIError):
        for _ in gateway.openai(max_retries=0).chat.completions.create(
            model="haiku", stream=True, messages=[{"role": "user", "content": "hi"}]
        ):
            pass
    entries = gateway.wait_for_entries(2)
    assert [e.error_type for e in entries] == ["malformed_stream", "malformed_stream"]


def test_rate_limit_per_client(make_gateway: GatewayFactory) -> None:
    gw = make_gateway(rate_limit_rpm=2)
    assert post(gw, "/v1/messages", MSG).status_code == 200
    assert post(gw, "/v1/messages", MSG).status_code == 200
    third = post(gw, "/v1/messages", MSG)
    assert third.status_code == 429
    assert third.json()["error"]["type"] == "rate_limit_error"
    assert int(third.headers["retry-after"]) >= 1


def test_unknown_paths_and_methods(gateway: RunningGateway) -> None:
    response = httpx.get(gateway.base_url + "/v2/whatever")
    assert response.status_code == 404
    assert response.json()["error"]["type"] == "not_found_error"
    response = httpx.get(gateway.base_url + "/v1/messages")
    assert response.status_code in (404, 405)


def test_structurally_invalid_bodies_are_400_before_any_routing(gateway: RunningGateway) -> None:
    """Empty messages (once a simulated 200) and other invalid shapes: 400 in each dialect's
    shape, and the upstream is never called."""
    anthropic_bodies: list[Any] = [
        {"model": "auto", "max_tokens": 10, "messages": []},
        {"model": "auto", "max_tokens": 10, "messages": [{"role": "user"}]},
        {"model": "auto", "max_tokens": -1, "messages": [{"role": "user", "content": "x"}]},
    ]
    for body in anthropic_bodies:
        reply = httpx.post(gateway.base_url + "/v1/messages", json=body)
        assert reply.status_code == 400, body
        assert reply.json()["error"]["type"] == "invalid_request_error"
    for body in ({"model": "auto", "messages": []}, {"model": "auto", "input": []}):
        path = "/v1/chat/completions" if "messages" in body else "/v1/responses"
        reply = httpx.post(gateway.base_url + path, json=body)
        assert reply.status_code == 400, body
        assert set(reply.json()["error"]) == {"message", "type", "param", "code"}
    assert gateway.fake.requests_to("/v1/messages") == []


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("GET", "/v1/messages", "POST"),
        ("PUT", "/v1/chat/completions", "POST"),
        ("DELETE", "/v1/models", "GET"),
        ("POST", "/health", "GET"),
    ],
)
def test_wrong_method_is_405_with_allow(
    gateway: RunningGateway, method: str, path: str, allow: str
) -> None:
    reply = httpx.request(method, gateway.base_url + path)
    assert reply.status_code == 405
    assert reply.headers["allow"] == allow
    assert reply.json()["error"]["type"] == "invalid_request_error"

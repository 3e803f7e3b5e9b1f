"""``tierwise.gateway.validate``: a 200 body that a client could not use is a
``BadUpstreamReply`` with a short reason (issue 11), and error bodies give a bounded type."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.fakes.hostile_upstream import message as hostile_message
from tierwise.gateway.validate import (
    ERROR_TYPES,
    MALFORMED_ERROR,
    UNEXPECTED_STATUS,
    BadUpstreamReply,
    check_message,
    error_type_of,
)


def reply(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "claude-haiku-4-5",
        "content": [{"type": "text", "text": "Hello"}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {
            "input_tokens": 10,
            "output_tokens": 3,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
            "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 0},
            "server_tool_use": {"web_search_requests": 0},
            "service_tier": "standard",
            "output_tokens_details": {"thinking_tokens": 0},
        },
    }
    base.update(changes)
    return base


def dumps(obj: Any) -> bytes:
    return json.dumps(obj).encode()


def test_a_valid_reply_is_returned_parsed() -> None:
    content = [
        {"type": "thinking", "thinking": "hmm", "signature": "sig"},
        {"type": "redacted_thinking", "data": "xyz"},
        {"type": "text", "text": "Hi", "citations": None},
        {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {"a": 1}},
        {"type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search", "input": {}},
        {"type": "web_search_tool_result", "tool_use_id": "srvtoolu_1", "content": []},
        {"type": "a_future_block"},
    ]
    obj = check_message(dumps(reply(content=content, stop_reason=None)))
    assert obj["content"] == content
    assert check_message(dumps(hostile_message("m")))["model"] == "m"


def test_huge_but_well_typed_counts_stay_integers() -> None:
    data = dumps(reply()).replace(b'"input_tokens": 10', b'"input_tokens": %d' % 10**30)
    assert check_message(data)["usage"]["input_tokens"] == 10**30


BAD: dict[str, tuple[bytes, str]] = {
    "empty": (b"", "the body is empty"),
    "not JSON": (b"<html>oops</html>", "not valid JSON"),
    "invalid UTF-8": (dumps(reply()).replace(b"Hello", b"He\xff\xfe"), "not valid UTF-8"),
    "NaN": (dumps(reply()).replace(b'"input_tokens": 10', b'"input_tokens": NaN'), "JSON"),
    "Infinity": (dumps(reply()).replace(b"10,", b"Infinity,", 1), "JSON"),
    "a list": (b"[1, 2]", "not a JSON object"),
    "{}": (b"{}", "type is null, not 'message'"),
    "an error object": (
        b'{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}',
        "error object, sent with a success status",
    ),
    "type other": (dumps(reply(type="completion")), "type is 'completion'"),
    "role user": (dumps(reply(role="user")), "role is not 'assistant'"),
    "no id": (dumps(reply(id=None)), "id is null"),
    "model a number": (dumps(reply(model=5)), "model is 5"),
    "content a string": (dumps(reply(content="hi")), "content is a string"),
    "content of strings": (dumps(reply(content=["a"])), "content[0] is a string"),
    "block without type": (dumps(reply(content=[{"text": "x"}])), "content[0].type is null"),
    "text not a string": (
        dumps(reply(content=[{"type": "text", "text": 5}])),
        "content[0].text (text block) is 5",
    ),
    "tool_use input a string": (
        dumps(reply(content=[{"type": "tool_use", "id": "t", "name": "f", "input": "{}"}])),
        "content[0].input (tool_use block) is a string, not an object",
    ),
    "tool_use without name": (
        dumps(reply(content=[{"type": "tool_use", "id": "t", "input": {}}])),
        "content[0].name",
    ),
    "thinking without signature": (
        dumps(reply(content=[{"type": "thinking", "thinking": "x"}])),
        "content[0].signature",
    ),
    "citations not a list": (
        dumps(reply(content=[{"type": "text", "text": "x", "citations": "c"}])),
        "citations",
    ),
    "stop_reason a number": (dumps(reply(stop_reason=3)), "stop_reason is 3"),
    "no usage": (dumps(reply(usage=None)), "usage is null, not an object"),
    "negative usage": (
        dumps(reply(usage={"input_tokens": -5, "output_tokens": 1})),
        "usage.input_tokens is -5, not a non-negative integer",
    ),
    "string usage": (
        dumps(reply(usage={"input_tokens": "12", "output_tokens": 1})),
        "usage.input_tokens is a string",
    ),
    "float usage": (
        dumps(reply(usage={"input_tokens": 1.5, "output_tokens": 1})),
        "fraction",
    ),
    "bool usage": (
        dumps(reply(usage={"input_tokens": 1, "output_tokens": False})),
        "usage.output_tokens is a boolean",
    ),
    "missing output_tokens": (
        dumps(reply(usage={"input_tokens": 1})),
        "usage.output_tokens is missing",
    ),
    "bad usage detail": (
        dumps(
            reply(
                usage={
                    "input_tokens": 1,
                    "output_tokens": 1,
                    "server_tool_use": {"web_search_requests": -2},
                }
            )
        ),
        "usage.server_tool_use.web_search_requests is -2",
    ),
    "usage detail a list": (
        dumps(reply(usage={"input_tokens": 1, "output_tokens": 1, "cache_creation": []})),
        "usage.cache_creation is a list",
    ),
}


@pytest.mark.parametrize(("data", "reason"), BAD.values(), ids=BAD.keys())
def test_replies_a_client_cannot_use_are_refused_with_a_reason(data: bytes, reason: str) -> None:
    with pytest.raises(BadUpstreamReply) as caught:
        check_message(data)
    assert reason in caught.value.reason
    assert len(caught.value.reason) < 160


def test_reasons_never_quote_the_body() -> None:
    secret = "sk-ant-SECRET-in-the-body"
    for data in (
        b"<html>" + secret.encode() + b"</html>",
        dumps(reply(type=secret * 10)),
        dumps(reply(content=[{"type": "text", "text": [secret]}])),
    ):
        with pytest.raises(BadUpstreamReply) as caught:
            check_message(data)
        assert "SECRET" not in caught.value.reason


def test_error_types_come_from_well_formed_error_bodies_only() -> None:
    def body(kind: Any, message: Any = "m") -> bytes:
        return dumps({"type": "error", "error": {"type": kind, "message": message}})

    assert error_type_of(529, body("overloaded_error")) == "overloaded_error"
    assert error_type_of(200, body("rate_limit_error")) == "rate_limit_error"  # error inside a 200
    assert error_type_of(400, body("brand_new_error")) == "api_error"  # bounded label set
    assert error_type_of(500, body("x" * 10_000)) == MALFORMED_ERROR
    assert error_type_of(500, body(5)) == MALFORMED_ERROR
    assert error_type_of(500, body("api_error", message=5)) == MALFORMED_ERROR
    assert error_type_of(502, b"<html>bad gateway</html>") == MALFORMED_ERROR
    assert error_type_of(429, b"") == MALFORMED_ERROR
    assert error_type_of(500, b'{"error": {"type": "api_error"}}') == MALFORMED_ERROR
    assert error_type_of(302, b"<html>moved</html>") == UNEXPECTED_STATUS
    assert error_type_of(204, b"") == UNEXPECTED_STATUS
    assert error_type_of(200, b"{}") == UNEXPECTED_STATUS
    assert {"overloaded_error", "request_too_large", "api_error"} <= ERROR_TYPES

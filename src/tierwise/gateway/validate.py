"""Checking upstream replies before they reach a client: a reply that is not valid for its
dialect is an upstream error, never a success."""

from __future__ import annotations

from typing import Any

import orjson


class BadUpstreamReply(ValueError):
    """The upstream's 200 body is not a valid Messages API message."""


def check_message(data: bytes) -> dict[str, Any]:
    """The message in a non-streaming 200 body, or BadUpstreamReply saying what is wrong."""
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise BadUpstreamReply(f"the body is not JSON ({exc})") from exc
    if not isinstance(value, dict):
        raise BadUpstreamReply("the body is not a JSON object")
    if value.get("type") != "message":
        raise BadUpstreamReply(f"type is {value.get('type')!r}, not 'message'")
    content = value.get("content")
    if not isinstance(content, list):
        raise BadUpstreamReply("content is not a list")
    for i, block in enumerate(content):
        if not isinstance(block, dict) or not isinstance(block.get("type"), str):
            raise BadUpstreamReply(f"content.{i} is not a block object with a string type")
        if block["type"] == "text" and not isinstance(block.get("text"), str):
            raise BadUpstreamReply(f"content.{i}.text is not a string")
        if block["type"] == "tool_use" and not isinstance(block.get("input"), dict):
            raise BadUpstreamReply(f"content.{i}.input is not an object")
    if not isinstance(value.get("usage"), dict):
        raise BadUpstreamReply("usage is not an object")
    return value

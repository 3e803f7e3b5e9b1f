"""What routing reads from a Messages request: the system prompt, the latest user turn, the
conversation's shape, and a cheap estimate of its input size (for context-window escalation)."""

from __future__ import annotations

from typing import Any

import orjson

from tierwise.types import ClassifyInput

_IMAGE_TOKENS = 1_600  # a large image is about 1,600 tokens; smaller ones cost less
_ATTACHMENTS = frozenset({"image", "document"})


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(
            b["text"] for b in content if isinstance(b, dict) and isinstance(b.get("text"), str)
        )
    return ""


def system_text(system: Any) -> str:
    return _text(system)


def _document_tokens(block: dict[str, Any]) -> int:
    source = block.get("source")
    if not isinstance(source, dict):
        return 0
    data = source.get("data") or source.get("content") or ""
    if not isinstance(data, str):
        return _json_tokens(data)
    # base64 PDF: ~3/4 byte per char, and a PDF page (~3 kB) is ~1.5k tokens; text: 4 chars.
    return len(data) // 2 if source.get("type") == "base64" else len(data) // 4


def _block_tokens(block: Any, depth: int = 0) -> tuple[int, int]:
    """(tokens, attachments) of one content block, roughly (nesting looked into 4 deep)."""
    if not isinstance(block, dict) or depth > 4:
        return 0, 0
    kind = block.get("type")
    if kind == "text":
        text = block.get("text")
        return (len(text) // 4 if isinstance(text, str) else 0), 0
    if kind in _ATTACHMENTS:
        return (_IMAGE_TOKENS if kind == "image" else _document_tokens(block)), 1
    if kind == "tool_result":
        inner = block.get("content")
        if not isinstance(inner, list):
            return len(str(inner or "")) // 4, 0
        pairs = [_block_tokens(b, depth + 1) for b in inner]
        return sum(t for t, _ in pairs), sum(a for _, a in pairs)
    return _json_tokens(block), 0


def conversation_input(body: dict[str, Any]) -> ClassifyInput:
    """The classifier's view of a Messages request (never raises on odd shapes)."""
    messages = body.get("messages") or []
    latest = ""
    tokens = 0
    attachments = 0
    for message in messages:
        if not isinstance(message, dict):
            continue
        content = message.get("content")
        if isinstance(content, str):
            tokens += len(content) // 4
        elif isinstance(content, list):
            for block in content:
                t, a = _block_tokens(block)
                tokens += t
                attachments += a
        if message.get("role") == "user":
            text = _text(content)
            if text.strip():
                latest = text
    system = system_text(body.get("system"))
    tools = body.get("tools") or []
    tokens += len(system) // 4 + _json_tokens(tools)
    return ClassifyInput(
        prompt=latest,
        system=system,
        turns=len(messages),
        tools=len(tools) if isinstance(tools, list) else 0,
        attachments=attachments,
        context_tokens=tokens + 4 * len(messages),
    )


def _json_tokens(value: Any) -> int:
    """Tokens of a JSON value, ~4 characters each (0 for one nested deeper than orjson
    writes: ``Engine.body_for`` rejects such a request anyway)."""
    if not value:
        return 0
    try:
        return len(orjson.dumps(value)) // 4
    except orjson.JSONEncodeError:
        return 0


def has_unthought_tool_use(body: dict[str, Any]) -> bool:
    """True when an assistant turn used a tool without a thinking block before it.

    Turning thinking on for such a conversation makes the API reject it, so tier thinking
    defaults are not added there.
    """
    for message in body.get("messages") or []:
        if not isinstance(message, dict) or message.get("role") != "assistant":
            continue
        content = message.get("content")
        if not isinstance(content, list):
            continue
        kinds = [b.get("type") for b in content if isinstance(b, dict)]
        if "tool_use" in kinds and not (kinds and kinds[0] in ("thinking", "redacted_thinking")):
            return True
    return False

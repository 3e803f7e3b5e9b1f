"""The most input a request can be billed for: an upper bound for budgets, not an estimate.

Why the bound holds: Claude's tokenizer is byte-level, so no text has more tokens than its UTF-8
bytes, and a JSON document is never shorter than the UTF-8 bytes of the strings it holds
(escapes only lengthen it). The request body as sent upstream therefore bounds every text,
tool definition and tool input in it, for any script: English, CJK, code, base64. To that we add
what the body does not spell out:

- images: the API resizes each one, so one costs at most :data:`IMAGE_TOKENS` tokens (about
  1,600 on most models; up to ~4,800 for the largest images on the newest ones);
- framing: :data:`MESSAGE_TOKENS` per message, :data:`REQUEST_TOKENS` per request,
  :data:`TOOL_USE_TOKENS` when tools are offered (the API's tool-use system prompt) and
  :data:`BUILTIN_TOOL_TOKENS` per Anthropic-defined client tool (bash, text editor, computer);
- content the API fetches or expands itself: a document by URL or file id, a PDF (its text can
  be compressed inside the file) and server tools (web search and fetch results, code
  execution output). Only the model's context window bounds those: the bound is then the
  context window, times :data:`SERVER_TOOL_ROUNDS` when server tools may loop.

The total is capped at the context window (times the rounds): a longer input is refused by the
API, not billed. The price class is the dearest the request can use: a 1-hour cache write when
any breakpoint asks for ``"ttl": "1h"``, a 5-minute write when it has ``cache_control``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tierwise.budgets import InputClass

IMAGE_TOKENS = 5_000
MESSAGE_TOKENS = 16
REQUEST_TOKENS = 256
TOOL_USE_TOKENS = 1_000
BUILTIN_TOOL_TOKENS = 2_000
SERVER_TOOL_ROUNDS = 10
_SERVER_TOOLS = ("web_search", "web_fetch", "code_execution", "tool_search", "mcp")


@dataclass(frozen=True, slots=True)
class InputBound:
    """At most ``tokens`` input tokens, priced at most at ``input_class``. ``open_ended`` says
    why the bound is the context window (None when the body itself bounds it)."""

    tokens: int
    input_class: InputClass
    open_ended: str | None = None


def _scan_blocks(content: Any, found: dict[str, int], depth: int = 0) -> None:
    if depth > 8 or not isinstance(content, list):
        return
    for block in content:
        if not isinstance(block, dict):
            continue
        kind = block.get("type")
        if kind == "image":
            found["images"] += 1
        elif kind == "document":
            source = block.get("source")
            stype = source.get("type") if isinstance(source, dict) else None
            if stype in ("text", "content"):
                _scan_blocks(source.get("content"), found, depth + 1)  # type: ignore[union-attr]
            else:  # url, file id, base64 PDF: its token count is not in the body
                found["documents"] += 1
        elif kind == "container_upload":
            found["documents"] += 1
        inner = block.get("content")
        if isinstance(inner, list):
            _scan_blocks(inner, found, depth + 1)


def _tool_kinds(tools: Any) -> tuple[int, bool]:
    """(Anthropic-defined client tools, whether any server tool is offered)."""
    builtin, server = 0, False
    if not isinstance(tools, list):
        return 0, False
    for tool in tools:
        kind = tool.get("type") if isinstance(tool, dict) else None
        if not isinstance(kind, str) or kind == "custom":
            continue
        if kind.startswith(_SERVER_TOOLS):
            server = True
        else:
            builtin += 1
    return builtin, server


def input_bound(payload: bytes, body: Mapping[str, Any], context_window: int) -> InputBound:
    """The bound for ``body`` sent as ``payload`` to a model with ``context_window`` tokens."""
    found = {"images": 0, "documents": 0}
    messages = body.get("messages")
    count = 0
    if isinstance(messages, list):
        count = len(messages)
        for message in messages:
            if isinstance(message, dict):
                _scan_blocks(message.get("content"), found)
    _scan_blocks(body.get("system"), found)
    tools = body.get("tools")
    builtin, server = _tool_kinds(tools)
    if b'"ttl":"1h"' in payload or b'"ttl": "1h"' in payload:
        input_class: InputClass = "cache_1h"
    elif b'"cache_control"' in payload:
        input_class = "cache_5m"
    else:
        input_class = "input"
    rounds = SERVER_TOOL_ROUNDS if server else 1
    cap = context_window * rounds
    reasons = []
    if found["documents"]:
        reasons.append("documents by URL, file id or PDF")
    if server:
        reasons.append("server tools")
    if reasons:
        return InputBound(cap, input_class, " and ".join(reasons))
    tokens = (
        len(payload)
        + IMAGE_TOKENS * found["images"]
        + MESSAGE_TOKENS * count
        + REQUEST_TOKENS
        + (TOOL_USE_TOKENS if tools else 0)
        + BUILTIN_TOOL_TOKENS * builtin
    )
    return InputBound(min(tokens, cap), input_class)

"""A wire-compatible fake of the Anthropic Messages API, for tests.

Written from /work/shared/docs/anthropic-wire.md (§1-§6, §9) and proved against the official
`anthropic` SDK 2.14 in tests/test_fake_server.py. It runs a Starlette app under uvicorn on
127.0.0.1 with an ephemeral port, in a background thread:

    with FakeAnthropic() as fake:
        client = anthropic.Anthropic(base_url=fake.base_url, api_key=fake.api_key)
        fake.script(status=529, retry_after="0.01")      # next /v1/messages call fails once
        client.messages.create(model="claude-opus-4-7", max_tokens=100, messages=[...])
        assert len(fake.requests) == 2                    # the SDK retried

Endpoints: POST /v1/messages (JSON, or SSE with "stream": true), POST /v1/messages/count_tokens,
GET /v1/models (after_id/before_id/limit pagination) and GET /v1/models/{id}. Routing uses the path
only, so `?beta=true` is ignored. Token counts are estimates: ceil(characters / 4).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import fnmatch
import hashlib
import json
import math
import random
import re
import secrets
import string
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from tests.servers import ServerThread

__all__ = [
    "DEFAULT_API_KEY",
    "FakeAnthropic",
    "RecordedRequest",
    "count_input_tokens",
    "estimate_tokens",
    "sign_thinking",
]

DEFAULT_API_KEY = "sk-ant-test-key"
API_VERSIONS = ("2023-06-01", "2026-10-21")
STRICT_VERSION = "2026-10-21"  # removes temperature/top_p/top_k, adds document/citation rules
EFFORT_LEVELS = ("low", "medium", "high", "xhigh", "max")
THINKING_TYPES = ("enabled", "adaptive", "disabled", "between_tools")
SAMPLING_PARAMS = ("temperature", "top_p", "top_k")

# Documented 400 messages (§5.1 of the wire doc).
PREFILL_MESSAGE = (
    "This model does not support assistant message prefill. "
    "The conversation must end with a user message."
)
ENABLED_THINKING_MESSAGE = (
    '"thinking.type.enabled" is not supported for this model. Use "thinking.type.adaptive" '
    'and "output_config.effort" to control thinking behavior.'
)
ADAPTIVE_THINKING_MESSAGE = "adaptive thinking is not supported on this model"
THINKING_MODIFIED_MESSAGE = (
    "`thinking` or `redacted_thinking` blocks in the latest assistant message cannot be "
    "modified. These blocks must remain as they were in the original response."
)
TOOL_CHOICE_MESSAGE = 'tool_choice: type "tool" and "any" are not supported for this model.'

STATUS_ERROR_TYPES: dict[int, str] = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    408: "timeout_error",
    409: "conflict_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}
ERROR_TYPE_STATUS: dict[str, int] = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "conflict_error": 409,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
}
DEFAULT_ERROR_MESSAGES: dict[str, str] = {
    "rate_limit_error": "Number of request tokens has exceeded your per-minute rate limit.",
    "api_error": "Internal server error",
    "overloaded_error": "Overloaded",
    "timeout_error": "Request timed out",
}

# (id, display_name, created_at, lifecycle, retires_at), newest first like the real API.
# Dates are approximate; only claude-opus-4-6 and claude-fable-5-2 are taken from the wire doc.
_CATALOG: tuple[tuple[str, str, str, str, str | None], ...] = (
    ("claude-fable-5-2", "Claude Fable 5.2", "2026-11-09", "active", None),
    ("claude-mythos-5-2", "Claude Mythos 5.2", "2026-11-09", "active", None),
    ("claude-haiku-5-5", "Claude Haiku 5.5", "2026-10-28", "active", None),
    ("claude-sonnet-5-5", "Claude Sonnet 5.5", "2026-10-14", "active", None),
    ("claude-fable-5-1", "Claude Fable 5.1", "2026-10-01", "active", None),
    ("claude-opus-5-5", "Claude Opus 5.5", "2026-09-30", "active", None),
    ("claude-mythos-5-1", "Claude Mythos 5.1", "2026-09-02", "active", None),
    ("claude-sonnet-5", "Claude Sonnet 5", "2026-07-22", "active", None),
    ("claude-fable-5", "Claude Fable 5", "2026-07-01", "active", None),
    ("claude-mythos-5", "Claude Mythos 5", "2026-07-01", "active", None),
    ("claude-opus-5", "Claude Opus 5", "2026-06-10", "active", None),
    ("claude-opus-4-8", "Claude Opus 4.8", "2026-05-13", "active", None),
    ("claude-opus-4-7", "Claude Opus 4.7", "2026-04-16", "active", None),
    ("claude-mythos-preview", "Claude Mythos Preview", "2026-04-07", "deprecated", "2026-06-30"),
    ("claude-opus-4-6", "Claude Opus 4.6", "2026-02-05", "active", None),
    ("claude-sonnet-4-6", "Claude Sonnet 4.6", "2026-02-05", "active", None),
    ("claude-haiku-4-5-20251001", "Claude Haiku 4.5", "2025-10-15", "active", None),
    ("claude-opus-4-5-20251101", "Claude Opus 4.5", "2025-11-24", "deprecated", "2027-01-22"),
    ("claude-sonnet-4-5-20250929", "Claude Sonnet 4.5", "2025-09-29", "deprecated", "2026-11-30"),
)
_MODEL_RE = re.compile(r"^claude-(haiku|sonnet|opus|fable|mythos)-(\d+)(?:-(\d))?(?:-\d{8})?$")
_ID_ALPHABET = string.ascii_letters + string.digits


def _new_id(prefix: str) -> str:
    return prefix + "".join(secrets.choice(_ID_ALPHABET) for _ in range(24))


def estimate_tokens(text: str) -> int:
    """The fake's tokenizer: ceil(characters / 4)."""
    return math.ceil(len(text) / 4)


def sign_thinking(thinking: str) -> str:
    """The signature the fake puts on (and expects back on) a thinking block."""
    return base64.b64encode(hashlib.sha256(b"fake-thinking:" + thinking.encode()).digest()).decode()


def _content_chars(content: Any) -> int:
    """Characters counted for a string or a list of blocks: text for text, JSON otherwise."""
    if isinstance(content, str):
        return len(content)
    if not isinstance(content, list):
        return 0
    total = 0
    for block in content:
        if isinstance(block, dict) and block.get("type") == "text":
            total += len(str(block.get("text", "")))
        else:
            total += len(json.dumps(block, separators=(",", ":")))
    return total


def count_input_tokens(body: Mapping[str, Any]) -> int:
    """Input-token estimate for a request body: messages + system + tools JSON, at least 1."""
    chars = _content_chars(body.get("system"))
    for message in body.get("messages") or []:
        if isinstance(message, dict):
            chars += _content_chars(message.get("content"))
    if body.get("tools"):
        chars += len(json.dumps(body["tools"], separators=(",", ":")))
    return max(1, math.ceil(chars / 4))


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = [b["text"] for b in content if isinstance(b, dict) and b.get("type") == "text"]
        return "\n".join(str(t) for t in texts)
    return ""


# --- model rules ---------------------------------------------------------------------------


def _model_version(model: str) -> tuple[str, int, int] | None:
    match = _MODEL_RE.match(model)
    if match is None:
        return None
    return match.group(1), int(match.group(2)), int(match.group(3) or 0)


def _is_legacy(model: str) -> bool:
    """Claude <= 4.5 (and the claude-3 family)."""
    version = _model_version(model)
    return model.startswith("claude-3") or (version is not None and version[1:] <= (4, 5))


def _is_new(model: str) -> bool:
    """Claude 4.7+ (Opus 4.7, 4.8 and every 5.x model)."""
    version = _model_version(model)
    return version is not None and version[1:] >= (4, 7)


def _thinking_rejection(model: str, thinking_type: str) -> str | None:
    """Why `model` rejects `thinking.type`, or None when it accepts it (§1 item 11)."""
    version = _model_version(model)
    if thinking_type == "adaptive" and _is_legacy(model):
        return ADAPTIVE_THINKING_MESSAGE
    if thinking_type == "enabled" and _is_new(model):
        return ENABLED_THINKING_MESSAGE
    no_disable = {("fable", 5, 0), ("fable", 5, 1), ("mythos", 5, 0), ("mythos", 5, 1)}
    if thinking_type == "disabled" and (
        model == "claude-mythos-preview" or version in no_disable or version == ("opus", 5, 5)
    ):
        return 'thinking.type: "disabled" is not supported for this model.'  # wording invented
    return None


def _limits(model_id: str) -> tuple[int, int]:
    """(max input tokens, max output tokens), approximately as in §7.1 of the wire doc."""
    small = _is_legacy(model_id)
    return (
        200_000 if small else 1_000_000,
        64_000 if small or model_id == "claude-sonnet-4-6" else 128_000,
    )


# Catalog ids and their undated aliases -> limits.
_MODEL_LIMITS = {re.sub(r"-\d{8}$", "", entry[0]): _limits(entry[0]) for entry in _CATALOG}


def _model_info(model_id: str, created: str, lifecycle: str, retires: str | None) -> dict[str, Any]:
    def yes(supported: bool = True) -> dict[str, bool]:
        return {"supported": supported}

    version = _model_version(model_id)
    return {
        "type": "model",
        "id": model_id,
        "display_name": next(name for mid, name, *_ in _CATALOG if mid == model_id),
        "created_at": f"{created}T00:00:00Z",
        "lifecycle": lifecycle,
        "deprecated_at": None if lifecycle == "active" else "2026-08-01T00:00:00Z",
        "retires_at": f"{retires}T00:00:00Z" if retires else None,
        "line": version[0] if version else ("mythos" if "mythos" in model_id else None),
        "max_input_tokens": _limits(model_id)[0],
        "max_tokens": _limits(model_id)[1],
        "capabilities": {
            "batch": yes(),
            "citations": yes(),
            "code_execution": yes(),
            "context_management": yes(),
            "effort": {"supported": True, **{level: yes() for level in EFFORT_LEVELS}},
            "image_input": yes(),
            "pdf_input": yes(),
            "server_tools": {"supported": True, "code_execution": yes(), "web_search": yes()},
            "structured_outputs": yes(),
            "thinking": {
                "supported": True,
                "types": {t: yes(_thinking_rejection(model_id, t) is None) for t in THINKING_TYPES},
            },
        },
    }


# --- validation ------------------------------------------------------------------------------


class _ApiError(Exception):
    def __init__(self, status: int, error_type: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.error_type = error_type
        self.message = message


def _invalid(message: str) -> _ApiError:
    return _ApiError(400, "invalid_request_error", message)


def _user_citations(block: Any) -> bool:
    """True when a user-side text block (also inside search_result / tool_result) cites."""
    if not isinstance(block, dict):
        return False
    if block.get("type") == "text":
        citations = block.get("citations")
        return isinstance(citations, list) and len(citations) > 0
    if block.get("type") in ("search_result", "tool_result") and isinstance(
        block.get("content"), list
    ):
        return any(_user_citations(inner) for inner in block["content"])
    return False


def _validate(body: dict[str, Any], version: str, *, count_only: bool) -> None:
    """Raise _ApiError the way the real API would reject `body`; return None if it is valid."""
    for name in ("model", "messages") if count_only else ("model", "max_tokens", "messages"):
        if name not in body:
            raise _invalid(f"{name}: Field required")
    model = body["model"]
    if not isinstance(model, str):
        raise _invalid("model: Input should be a valid string")
    if not model.startswith("claude-"):
        raise _ApiError(404, "not_found_error", f"model: {model}")
    max_tokens = body.get("max_tokens")
    if not count_only and (not isinstance(max_tokens, int) or isinstance(max_tokens, bool)):
        raise _invalid("max_tokens: Input should be a valid integer")
    if not count_only and isinstance(max_tokens, int) and max_tokens < 0:
        raise _invalid("max_tokens: Input should be greater than or equal to 0")
    if "stream" in body and not isinstance(body["stream"], bool):
        raise _invalid("stream: Input should be a valid boolean")

    messages = body["messages"]
    if not isinstance(messages, list) or not messages:
        raise _invalid("messages: at least one message is required")
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in (
            "user",
            "assistant",
            "system",
        ):
            raise _invalid(f"messages.{i}.role: Input should be 'user', 'assistant' or 'system'")
        content = message.get("content")
        if not isinstance(content, str | list):
            raise _invalid(f"messages.{i}.content: Input should be a valid string or list")
        for j, block in enumerate(content if isinstance(content, list) else []):
            if not isinstance(block, dict) or not isinstance(block.get("type"), str):
                raise _invalid(f"messages.{i}.content.{j}.type: Field required")
            if version == STRICT_VERSION:
                if message["role"] == "assistant" and block["type"] == "document":
                    raise _invalid(
                        f"messages.{i}.content.{j}: document blocks are not permitted "
                        "in assistant messages"
                    )
                if message["role"] == "user" and _user_citations(block):
                    raise _invalid(
                        f"messages.{i}.content.{j}: text blocks with citations are not permitted "
                        "in user messages"
                    )

    for name in SAMPLING_PARAMS:
        if name not in body:
            continue
        if version == STRICT_VERSION:
            raise _invalid(f"{name}: Extra inputs are not permitted")
        if _is_new(model) and body[name] is not None and body[name] != 1:
            raise _invalid(f"{name}: non-default values are not supported for this model")

    thinking = body.get("thinking")
    if thinking is not None:
        thinking_type = thinking.get("type") if isinstance(thinking, dict) else None
        if thinking_type not in THINKING_TYPES:
            raise _invalid(
                "thinking.type: Input should be 'enabled', 'adaptive', 'disabled' "
                "or 'between_tools'"
            )
        rejection = _thinking_rejection(model, str(thinking_type))
        if rejection is not None:
            raise _invalid(rejection)
        if thinking_type == "enabled":
            budget = thinking.get("budget_tokens")
            if not isinstance(budget, int) or isinstance(budget, bool):
                raise _invalid("thinking.enabled.budget_tokens: Field required")
            if budget < 1024:
                raise _invalid(
                    "thinking.enabled.budget_tokens: Input should be greater than or equal to 1024"
                )
            if not count_only and isinstance(max_tokens, int) and budget >= max_tokens:
                raise _invalid(
                    "`max_tokens` must be greater than `thinking.budget_tokens`. Please consult "
                    "our documentation at https://docs.claude.com/en/docs/build-with-claude/"
                    "extended-thinking#max-tokens-and-context-window-size"
                )

    output_config = body.get("output_config")
    if isinstance(output_config, dict):
        effort = output_config.get("effort")
        if effort is not None and effort not in EFFORT_LEVELS:
            raise _invalid(
                "output_config.effort: Input should be 'low', 'medium', 'high', 'xhigh' or 'max'"
            )

    tool_choice = body.get("tool_choice")
    if (
        isinstance(tool_choice, dict)
        and tool_choice.get("type") in ("any", "tool")
        and _model_version(model) in {("fable", 5, 1), ("mythos", 5, 1)}
    ):
        raise _invalid(TOOL_CHOICE_MESSAGE)

    limits = _MODEL_LIMITS.get(re.sub(r"-\d{8}$", "", model))
    if limits is not None and (tokens := count_input_tokens(body)) > limits[0]:
        raise _invalid(f"prompt is too long: {tokens} tokens > {limits[0]} maximum")
    if count_only:
        return
    if messages[-1]["role"] == "assistant" and not _is_legacy(model):
        raise _invalid(PREFILL_MESSAGE)
    assistant_turns = [i for i, m in enumerate(messages) if m["role"] == "assistant"]
    if assistant_turns and isinstance(messages[assistant_turns[-1]]["content"], list):
        i = assistant_turns[-1]
        for j, block in enumerate(messages[i]["content"]):
            if block["type"] == "thinking" and block.get("signature") != sign_thinking(
                str(block.get("thinking", ""))
            ):
                raise _invalid(f"messages.{i}.content.{j}: {THINKING_MODIFIED_MESSAGE}")


# --- replies ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class RecordedRequest:
    """One HTTP request the fake received (recorded before auth, so rejected ones too)."""

    method: str
    path: str
    query: str
    headers: dict[str, str]  # lower-cased names
    body: bytes
    json_body: Any | None  # parsed JSON, or None when the body is empty or not JSON

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())


@dataclass
class _Script:
    status: int | None  # None: success
    error_type: str | None
    reply_text: str | None
    usage: dict[str, Any] | None
    retry_after: str | None
    stream_error: str | None
    model_glob: str
    headers: dict[str, str]
    remaining: int
    delay_s: float = 0.0
    stream_cut: bool = False
    disconnect: bool = False
    tool_use: dict[str, Any] | None = None
    event_delay_s: float = 0.0
    malformed_sse: bool = False
    early_error: bool = False

    def error_for(self, stream: bool) -> tuple[int, str] | None:
        """(status, error type) if this script answers the request with an HTTP error."""
        if self.status is not None:
            return self.status, self.error_type or STATUS_ERROR_TYPES.get(
                self.status, "api_error" if self.status >= 500 else "invalid_request_error"
            )
        if self.stream_error is not None and not stream:
            return ERROR_TYPE_STATUS.get(self.stream_error, 500), self.stream_error
        return None


def _deep_merge(base: dict[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _build_message(body: dict[str, Any], script: _Script | None) -> dict[str, Any]:
    """The non-streaming Message for a valid request (the stream replays it as events)."""
    model: str = body["model"]
    max_tokens: int = body["max_tokens"]
    users = [m for m in body["messages"] if m["role"] == "user"]
    echo = " ".join(_text_of(users[-1]["content"]).split()) if users else ""
    echo = echo if len(echo) <= 60 else echo[:57] + "..."
    text = f"Fake reply from {model}: {echo}".rstrip()
    if script is not None and script.reply_text is not None:
        text = script.reply_text

    content: list[dict[str, Any]] = []
    stop_reason, stop_sequence = "end_turn", None
    budget = max_tokens
    thinking_tokens = 0
    thinking = body.get("thinking")
    if isinstance(thinking, dict) and thinking.get("type") in ("enabled", "adaptive"):
        thought = f"The user wrote: {echo!r}. A short, direct answer is best."
        cap = min(budget, thinking.get("budget_tokens") or budget)
        thinking_tokens = min(estimate_tokens(thought), cap)
        if thinking_tokens < estimate_tokens(thought) and cap == budget:
            stop_reason = "max_tokens"
        thought = thought[: thinking_tokens * 4]
        if thought:
            shown = "" if thinking.get("display") == "omitted" else thought
            content.append(
                {"type": "thinking", "thinking": shown, "signature": sign_thinking(shown)}
            )
        budget -= thinking_tokens

    for sequence in body.get("stop_sequences") or []:
        index = text.find(sequence) if sequence and stop_reason != "max_tokens" else -1
        if index >= 0:
            text, stop_reason, stop_sequence = text[:index], "stop_sequence", sequence
    text_tokens = estimate_tokens(text)
    if text_tokens > budget or stop_reason == "max_tokens":
        text, text_tokens = text[: budget * 4], min(text_tokens, budget)
        stop_reason, stop_sequence = "max_tokens", None
    if text or stop_reason != "max_tokens":
        content.append({"type": "text", "text": text, "citations": None})
    if script is not None and script.tool_use is not None:
        call = script.tool_use
        content.append(
            {
                "type": "tool_use",
                "id": call.get("id") or _new_id("toolu_"),
                "name": call["name"],
                "input": call.get("input", {}),
            }
        )
        stop_reason, stop_sequence = "tool_use", None
        text_tokens += estimate_tokens(json.dumps(call.get("input", {})))

    usage: dict[str, Any] = {
        "input_tokens": count_input_tokens(body),
        "output_tokens": thinking_tokens + text_tokens,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
        "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 0},
        "server_tool_use": {"web_search_requests": 0, "web_fetch_requests": 0},
        "service_tier": "standard",
        "inference_geo": body.get("inference_geo") or "global",
        "output_tokens_details": {"thinking_tokens": thinking_tokens},
        "speed": body.get("speed") or "standard",
    }
    if script is not None and script.usage:
        usage = _deep_merge(usage, script.usage)
        if "cache_creation" in script.usage and "cache_creation_input_tokens" not in script.usage:
            usage["cache_creation_input_tokens"] = sum(usage["cache_creation"].values())
    return {
        "id": _new_id("msg_"),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": stop_sequence,
        "stop_details": None,
        "usage": usage,
    }


def _chunks(text: str, parts: int = 3) -> list[str]:
    size = max(1, math.ceil(len(text) / parts))
    return [text[i : i + size] for i in range(0, len(text), size)] or [""]


def _stream_events(
    message: dict[str, Any], stream_error: str | None, cut: bool = False
) -> list[dict[str, Any]]:
    """The §4 event sequence for `message`; cut short by an error event if `stream_error`."""
    usage = message["usage"]
    input_side = ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")
    start_usage = {k: v for k, v in usage.items() if k not in ("output_tokens_details",)}
    start = {**message, "content": [], "stop_reason": None, "stop_sequence": None}
    events: list[dict[str, Any]] = [
        {
            "type": "message_start",
            "message": {**start, "usage": {**start_usage, "output_tokens": 1}},
        },
        {"type": "ping"},
    ]
    for index, block in enumerate(message["content"]):
        if block["type"] == "thinking":
            deltas = [{"type": "thinking_delta", "thinking": c} for c in _chunks(block["thinking"])]
            deltas.append({"type": "signature_delta", "signature": block["signature"]})
            first = {"type": "thinking", "thinking": "", "signature": ""}
        elif block["type"] == "tool_use":
            partial = json.dumps(block["input"], separators=(",", ":"))
            deltas = [{"type": "input_json_delta", "partial_json": ""}]
            deltas += [{"type": "input_json_delta", "partial_json": c} for c in _chunks(partial)]
            first = {**block, "input": {}}  # type: ignore[dict-item]
        else:
            deltas = [{"type": "text_delta", "text": c} for c in _chunks(block["text"])]
            first = {"type": "text", "text": ""}
        events.append({"type": "content_block_start", "index": index, "content_block": first})
        for delta in deltas:
            events.append({"type": "content_block_delta", "index": index, "delta": delta})
        events.append({"type": "content_block_stop", "index": index})
    if cut:
        # Some deltas, then nothing: no error event, no message_stop (a broken connection).
        deltas_at = [i for i, e in enumerate(events) if e["type"] == "content_block_delta"]
        return events[: deltas_at[:2][-1] + 1] if deltas_at else events[:2]
    if stream_error is not None:
        # Some deltas, then the error: cut after the second delta of the first block.
        message_text = DEFAULT_ERROR_MESSAGES.get(stream_error, f"Scripted {stream_error}")
        deltas_at = [i for i, e in enumerate(events) if e["type"] == "content_block_delta"]
        events = events[: deltas_at[:2][-1] + 1] if deltas_at else events[:2]
        events.append({"type": "error", "error": {"type": stream_error, "message": message_text}})
        return events
    delta_usage = {k: usage[k] for k in (*input_side, "output_tokens") if k in usage}
    for key in ("output_tokens_details", "server_tool_use"):
        if key in usage:
            delta_usage[key] = usage[key]
    stop = {"stop_reason": message["stop_reason"], "stop_sequence": message["stop_sequence"]}
    events.append({"type": "message_delta", "delta": stop, "usage": delta_usage})
    events.append({"type": "message_stop"})
    return events


# --- the server ------------------------------------------------------------------------------


class _Disconnect(Response):
    """Sends the status line and headers, then drops the connection (no body)."""

    def __init__(self) -> None:
        super().__init__(status_code=200, media_type="application/json")

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-length", b"1000")],
            }
        )
        await send({"type": "http.response.body", "body": b'{"id": "msg_', "more_body": True})
        raise ConnectionResetError("scripted disconnect")


_Handler = Callable[[Request, RecordedRequest, str], Awaitable[Response]]


class FakeAnthropic:
    """A fake Anthropic API on 127.0.0.1:<ephemeral>; see the module docstring."""

    def __init__(self, *, api_key: str = DEFAULT_API_KEY, host: str = "127.0.0.1") -> None:
        self.api_key = api_key
        self.host = host
        self._lock = threading.Lock()
        self._requests: list[RecordedRequest] = []
        self._scripts: list[_Script] = []
        self._chaos_rate = 0.0
        self._chaos_rng = random.Random(0)
        self._chaos_slow_s = 1.0
        self.chaos_counts: dict[str, int] = {}
        self._server: ServerThread | None = None
        self._port: int | None = None
        methods = ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
        self.app = Starlette(
            routes=[
                Route("/v1/messages", self._wrap(self._messages), methods=["POST"]),
                Route("/v1/messages/count_tokens", self._wrap(self._count), methods=["POST"]),
                Route("/v1/models", self._wrap(self._list_models), methods=["GET"]),
                Route("/v1/models/{model_id}", self._wrap(self._get_model), methods=["GET"]),
                Route("/{path:path}", self._wrap(self._unknown, auth=False), methods=methods),
            ]
        )

    # lifecycle ---------------------------------------------------------------------------

    def start(self) -> Self:
        if self._server is not None:
            raise RuntimeError("FakeAnthropic is already running")
        self._server = ServerThread(self.app, lifespan="off").start()
        self._port = self._server.port
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
        self._server = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("FakeAnthropic is not started")
        return self._port

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    # test controls -------------------------------------------------------------------------

    @property
    def requests(self) -> list[RecordedRequest]:
        """A snapshot of every request received so far, oldest first."""
        with self._lock:
            return list(self._requests)

    def requests_to(self, path: str) -> list[RecordedRequest]:
        return [r for r in self.requests if r.path == path]

    @property
    def pending_scripts(self) -> int:
        """How many scripted responses are still queued (counting `times`)."""
        with self._lock:
            return sum(s.remaining for s in self._scripts)

    def reset(self) -> None:
        with self._lock:
            self._requests.clear()
            self._scripts.clear()

    def script(
        self,
        *,
        status: int | None = None,
        reply_text: str | None = None,
        usage: Mapping[str, Any] | None = None,
        retry_after: str | None = None,
        error_type: str | None = None,
        stream_error: str | None = None,
        model_glob: str = "*",
        times: int = 1,
        headers: Mapping[str, str] | None = None,
        delay_s: float = 0.0,
        stream_cut: bool = False,
        disconnect: bool = False,
        tool_use: Mapping[str, Any] | None = None,
        event_delay_s: float = 0.0,
        malformed_sse: bool = False,
        early_error: bool = False,
    ) -> None:
        """Queue behaviour for the next `times` POST /v1/messages whose model matches the glob.

        An error (`status` >= 400 and/or `error_type`) answers before validation. A success
        (`reply_text`, `usage` override merged into the computed usage, `stream_error`) applies
        only to a valid request; a stream_error on a non-streaming request becomes the HTTP error.

        Faults: `delay_s` waits before answering (a slow upstream); `stream_cut` ends a stream
        after a few deltas with neither an error event nor message_stop; `disconnect` drops the
        connection after the status line (a reset, as the client sees it); `tool_use`
        ({"name", "input", "id"?}) adds a tool_use block and stop_reason "tool_use";
        `event_delay_s` sleeps between stream events; `malformed_sse` sends a content delta
        whose data is not JSON after the first content delta; `early_error` sends an
        overloaded error event right after message_start (before any content).
        """
        if times < 1:
            raise ValueError("times must be >= 1")
        if status is not None and status != 200 and not 400 <= status <= 599:
            raise ValueError("status must be 200 or an error status (400-599)")
        if status == 200:
            status = None
        if status is None and error_type is not None:
            status = ERROR_TYPE_STATUS.get(error_type, 400)
        entry = _Script(
            status=status,
            error_type=error_type,
            reply_text=reply_text,
            usage=dict(usage) if usage is not None else None,
            retry_after=retry_after,
            stream_error=stream_error,
            model_glob=model_glob,
            headers=dict(headers or {}),
            remaining=times,
            delay_s=delay_s,
            stream_cut=stream_cut,
            disconnect=disconnect,
            tool_use=dict(tool_use) if tool_use is not None else None,
            event_delay_s=event_delay_s,
            malformed_sse=malformed_sse,
            early_error=early_error,
        )
        with self._lock:
            self._scripts.append(entry)

    def chaos(self, rate: float, *, seed: int = 0, slow_s: float = 1.0) -> None:
        """Inject a random fault into a fraction ``rate`` of valid /v1/messages requests:
        429 with retry-after, 529, 500, a reset, a reply slower than ``slow_s``, and for streams
        an error event midway, a stream cut with no event, or malformed SSE. 0 turns it off;
        ``chaos_counts`` tallies what was injected."""
        with self._lock:
            self._chaos_rate = rate
            self._chaos_rng = random.Random(seed)
            self._chaos_slow_s = slow_s
            self.chaos_counts = {}

    def _chaos_fault(self, stream: bool) -> _Script | None:
        kinds = ["429", "529", "500", "reset", "slow"]
        if stream:
            kinds += ["stream_error", "stream_cut", "malformed_sse"]
        with self._lock:
            if self._chaos_rng.random() >= self._chaos_rate:
                return None
            kind = self._chaos_rng.choice(kinds)
            self.chaos_counts[kind] = self.chaos_counts.get(kind, 0) + 1
            slow_s = self._chaos_slow_s
        return _Script(
            status=int(kind) if kind.isdigit() else None,
            error_type=None,
            reply_text=None,
            usage=None,
            retry_after="0.01" if kind == "429" else None,
            stream_error="overloaded_error" if kind == "stream_error" else None,
            model_glob="*",
            headers={},
            remaining=1,
            delay_s=slow_s if kind == "slow" else 0.0,
            stream_cut=kind == "stream_cut",
            disconnect=kind == "reset",
            malformed_sse=kind == "malformed_sse",
        )

    def _claim_script(self, model: str, *, stream: bool, valid: bool) -> _Script | None:
        """Consume and return the first matching script (success scripts only if `valid`)."""
        with self._lock:
            for entry in self._scripts:
                if fnmatch.fnmatchcase(model, entry.model_glob):
                    if entry.error_for(stream) is None and not valid:
                        return None
                    entry.remaining -= 1
                    if entry.remaining == 0:
                        self._scripts.remove(entry)
                    return entry
        return None

    # HTTP plumbing -------------------------------------------------------------------------

    @staticmethod
    def _json(
        data: Any, request_id: str, status: int = 200, headers: Mapping[str, str] | None = None
    ) -> JSONResponse:
        return JSONResponse(data, status, headers={**(headers or {}), "request-id": request_id})

    @classmethod
    def _error(
        cls,
        status: int,
        error_type: str,
        message: str,
        request_id: str,
        headers: Mapping[str, str] | None = None,
    ) -> JSONResponse:
        body = {
            "type": "error",
            "error": {"type": error_type, "message": message},
            "request_id": request_id,
        }
        return cls._json(body, request_id, status, headers)

    def _check_auth(self, rec: RecordedRequest, request_id: str) -> Response | None:
        key = rec.header("x-api-key")
        authorization = rec.header("authorization") or ""
        bearer = authorization[7:].strip() if authorization.lower().startswith("bearer ") else None
        if key is None and bearer is None:
            return self._error(
                401, "authentication_error", "x-api-key header is required", request_id
            )
        if key is not None and key != self.api_key:
            return self._error(401, "authentication_error", "invalid x-api-key", request_id)
        if key is None and bearer != self.api_key:
            return self._error(401, "authentication_error", "Invalid bearer token", request_id)
        version = rec.header("anthropic-version")
        if version is None:
            return self._error(
                400, "invalid_request_error", "anthropic-version: header is required", request_id
            )
        if version not in API_VERSIONS:
            message = f"anthropic-version: invalid version {version!r}"
            return self._error(400, "invalid_request_error", message, request_id)
        return None

    def _wrap(
        self, handler: _Handler, *, auth: bool = True
    ) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            raw = await request.body()
            headers: dict[str, str] = {}
            for name, value in request.headers.raw:
                key = name.decode("latin-1").lower()
                text = value.decode("latin-1")
                headers[key] = f"{headers[key]}, {text}" if key in headers else text
            try:
                parsed: Any = json.loads(raw) if raw else None
            except ValueError:
                parsed = None
            rec = RecordedRequest(
                method=request.method,
                path=request.url.path,
                query=request.url.query,
                headers=headers,
                body=raw,
                json_body=parsed,
            )
            with self._lock:
                self._requests.append(rec)
            request_id = _new_id("req_")
            denied = self._check_auth(rec, request_id) if auth else None
            if denied is not None:
                return denied
            try:
                return await handler(request, rec, request_id)
            except _ApiError as exc:
                return self._error(exc.status, exc.error_type, exc.message, request_id)
            except Exception as exc:  # a bug in the fake: say so, and stop the SDK retrying
                message = f"fake server bug: {exc!r}"
                no_retry = {"x-should-retry": "false"}
                return self._error(500, "api_error", message, request_id, no_retry)

        return endpoint

    @staticmethod
    def _body_object(rec: RecordedRequest) -> dict[str, Any]:
        if not rec.body.strip():
            raise _invalid("Request body is empty; expected a JSON object")
        if rec.json_body is None:
            raise _invalid("There was an error parsing the body of your request: invalid JSON")
        if not isinstance(rec.json_body, dict):
            raise _invalid("Input should be a valid dictionary or object")
        return rec.json_body

    # endpoints ---------------------------------------------------------------------------

    async def _messages(self, request: Request, rec: RecordedRequest, request_id: str) -> Response:
        body = self._body_object(rec)
        stream = body.get("stream") is True
        invalid: _ApiError | None = None
        try:
            _validate(body, rec.header("anthropic-version") or "", count_only=False)
        except _ApiError as exc:
            invalid = exc
        model = body.get("model")
        entry = self._claim_script(
            model if isinstance(model, str) else "", stream=stream, valid=invalid is None
        )
        if entry is None and invalid is None and self._chaos_rate:
            entry = self._chaos_fault(stream)
        error = entry.error_for(stream) if entry is not None else None
        if entry is not None and entry.delay_s:
            await asyncio.sleep(entry.delay_s)
        if entry is not None and entry.disconnect:
            return _Disconnect()
        if entry is not None and error is not None:
            status, error_type = error
            headers = dict(entry.headers)
            if entry.retry_after is not None:
                headers["retry-after"] = entry.retry_after
            message = DEFAULT_ERROR_MESSAGES.get(error_type, f"Scripted {error_type}")
            return self._error(status, error_type, message, request_id, headers)
        if invalid is not None:
            raise invalid
        message_body = _build_message(body, entry)
        headers = dict(entry.headers) if entry is not None else {}
        if not stream:
            return self._json(message_body, request_id, headers=headers)
        events = _stream_events(
            message_body,
            entry.stream_error if entry else None,
            cut=entry.stream_cut if entry else False,
        )

        if entry is not None and entry.early_error:
            events = [
                events[0],
                {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}},
            ]
        delay = entry.event_delay_s if entry is not None else 0.0
        malformed = entry.malformed_sse if entry is not None else False

        async def sse() -> AsyncIterator[bytes]:
            for i, event in enumerate(events):
                data = json.dumps(event, separators=(",", ":"))
                if malformed and i == 4:  # after the first content delta
                    data = '{"type": "content_block_delta", "index": 0, "delta": {"text": "x'
                yield f"event: {event['type']}\ndata: {data}\n\n".encode()
                await asyncio.sleep(delay)

        headers.update({"request-id": request_id, "cache-control": "no-cache"})
        return StreamingResponse(sse(), media_type="text/event-stream", headers=headers)

    async def _count(self, request: Request, rec: RecordedRequest, request_id: str) -> Response:
        body = self._body_object(rec)
        _validate(body, rec.header("anthropic-version") or "", count_only=True)
        return self._json({"input_tokens": count_input_tokens(body)}, request_id)

    async def _list_models(
        self, request: Request, rec: RecordedRequest, request_id: str
    ) -> Response:
        params = request.query_params
        lifecycles = set(params.getlist("lifecycle[]") or params.getlist("lifecycle"))
        lifecycles = lifecycles or {"active", "deprecated"}
        ids = [entry[0] for entry in _CATALOG if entry[3] in lifecycles]
        try:
            limit = int(params.get("limit", "20"))
        except ValueError:
            raise _invalid("limit: Input should be a valid integer") from None
        if not 1 <= limit <= 1000:
            raise _invalid("limit: Input should be between 1 and 1000")
        for name in ("after_id", "before_id"):
            if name in params and params[name] not in ids:
                raise _invalid(f"{name}: unknown model id {params[name]!r}")
        if "before_id" in params:
            end = ids.index(params["before_id"])
            page, has_more = ids[max(0, end - limit) : end], end - limit > 0
        else:
            begin = ids.index(params["after_id"]) + 1 if "after_id" in params else 0
            page, has_more = ids[begin : begin + limit], begin + limit < len(ids)
        data = [_model_info(mid, c, lc, r) for mid, _n, c, lc, r in _CATALOG if mid in page]
        return self._json(
            {
                "data": data,
                "has_more": has_more,
                "first_id": page[0] if page else None,
                "last_id": page[-1] if page else None,
            },
            request_id,
        )

    async def _get_model(self, request: Request, rec: RecordedRequest, request_id: str) -> Response:
        wanted = request.path_params["model_id"]
        for model_id, _name, created, lifecycle, retires in _CATALOG:
            if wanted == model_id or re.sub(r"-\d{8}$", "", model_id) == wanted:
                return self._json(_model_info(model_id, created, lifecycle, retires), request_id)
        raise _ApiError(404, "not_found_error", f"model: {wanted}")

    async def _unknown(self, request: Request, rec: RecordedRequest, request_id: str) -> Response:
        raise _ApiError(404, "not_found_error", f"Not found: {request.method} {rec.path}")


if __name__ == "__main__":  # `python -m tests.fakes.anthropic_server` for manual poking
    with FakeAnthropic() as _fake, contextlib.suppress(KeyboardInterrupt):
        print(f"fake Anthropic at {_fake.base_url} (api key {_fake.api_key}); Ctrl-C stops")
        while True:
            time.sleep(3600)

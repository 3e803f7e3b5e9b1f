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
import contextlib
import fnmatch
import json
import math
import random
import re
import secrets
import string
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from tests.fakes.prompt_cache import CacheUsage, ManualClock, PromptCache
from tests.fakes.strict_rules import (
    ADAPTIVE_THINKING_MESSAGE,
    API_VERSIONS,
    EFFORT_LEVELS,
    ENABLED_THINKING_MESSAGE,
    PREFILL_MESSAGE,
    THINKING_MODIFIED_MESSAGE,
    THINKING_TYPES,
    ApiError,
    capabilities,
    count_input_tokens,
    estimate_tokens,
    forced_tool,
    invalid,
    sign_thinking,
    validate,
)
from tests.servers import ServerThread

__all__ = [
    "ADAPTIVE_THINKING_MESSAGE",
    "API_VERSIONS",
    "DEFAULT_API_KEY",
    "ENABLED_THINKING_MESSAGE",
    "PREFILL_MESSAGE",
    "THINKING_MODIFIED_MESSAGE",
    "FakeAnthropic",
    "ManualClock",
    "RecordedRequest",
    "count_input_tokens",
    "estimate_tokens",
    "sign_thinking",
]

DEFAULT_API_KEY = "sk-ant-test-key"

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

# What GET /v1/models lists: (id, created_at, lifecycle, retires_at), newest first like the real
# API. Capabilities and limits come from strict_rules.capabilities (tierwise's catalogue).
# Dates are approximate; only claude-opus-4-6 and claude-fable-5-2 are taken from the wire doc.
_CATALOG: tuple[tuple[str, str, str, str | None], ...] = (
    ("claude-fable-5-2", "2026-11-09", "active", None),
    ("claude-mythos-5-2", "2026-11-09", "active", None),
    ("claude-haiku-5-5", "2026-10-28", "active", None),
    ("claude-sonnet-5-5", "2026-10-14", "active", None),
    ("claude-fable-5-1", "2026-10-01", "active", None),
    ("claude-opus-5-5", "2026-09-30", "active", None),
    ("claude-mythos-5-1", "2026-09-02", "active", None),
    ("claude-sonnet-5", "2026-07-22", "active", None),
    ("claude-fable-5", "2026-07-01", "active", None),
    ("claude-mythos-5", "2026-07-01", "active", None),
    ("claude-opus-5", "2026-06-10", "active", None),
    ("claude-opus-4-8", "2026-05-13", "active", None),
    ("claude-opus-4-7", "2026-04-16", "active", None),
    ("claude-mythos-preview", "2026-04-07", "deprecated", "2026-06-30"),
    ("claude-opus-4-6", "2026-02-05", "active", None),
    ("claude-sonnet-4-6", "2026-02-05", "active", None),
    ("claude-haiku-4-5-20251001", "2025-10-15", "active", None),
    ("claude-opus-4-5-20251101", "2025-11-24", "deprecated", "2027-01-22"),
    ("claude-sonnet-4-5-20250929", "2025-09-29", "deprecated", "2026-11-30"),
)
_LINE_RE = re.compile(r"^claude-(haiku|sonnet|opus|fable|mythos)-")
_ID_ALPHABET = string.ascii_letters + string.digits


def _new_id(prefix: str) -> str:
    return prefix + "".join(secrets.choice(_ID_ALPHABET) for _ in range(24))


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = [b["text"] for b in content if isinstance(b, dict) and b.get("type") == "text"]
        return "\n".join(str(t) for t in texts)
    return ""


def _model_info(model_id: str, created: str, lifecycle: str, retires: str | None) -> dict[str, Any]:
    def yes(supported: bool = True) -> dict[str, bool]:
        return {"supported": supported}

    info = capabilities(model_id)
    assert info is not None, model_id
    line = _LINE_RE.match(model_id)
    return {
        "type": "model",
        "id": model_id,
        "display_name": info.display_name,
        "created_at": f"{created}T00:00:00Z",
        "lifecycle": lifecycle,
        "deprecated_at": None if lifecycle == "active" else "2026-08-01T00:00:00Z",
        "retires_at": f"{retires}T00:00:00Z" if retires else None,
        "line": line.group(1) if line else None,
        "max_input_tokens": info.context_window,
        "max_tokens": info.max_output_tokens,
        "capabilities": {
            "batch": yes(),
            "citations": yes(),
            "code_execution": yes(),
            "context_management": yes(),
            "effort": {
                "supported": bool(info.efforts),
                **{level: yes(level in info.efforts) for level in EFFORT_LEVELS},
            },
            "image_input": yes(),
            "pdf_input": yes(),
            "server_tools": {"supported": True, "code_execution": yes(), "web_search": yes()},
            "structured_outputs": yes(),
            "thinking": {
                "supported": bool(info.thinking_types),
                "types": {t: yes(t in info.thinking_types) for t in THINKING_TYPES},
            },
        },
    }


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
    also: list[dict[str, Any]] = field(default_factory=list)  # parallel calls after tool_use
    event_delay_s: float = 0.0
    malformed_sse: bool = False
    early_error: bool = False
    stop_reason: str | None = None

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


def _resolve(schema: Any, root: Mapping[str, Any], depth: int = 0) -> Any:
    """Follow a local ``$ref`` (``#/$defs/X`` or ``#/definitions/X``)."""
    while isinstance(schema, dict) and isinstance(schema.get("$ref"), str) and depth < 20:
        target: Any = root
        for part in schema["$ref"].lstrip("#/").split("/"):
            target = target.get(part) if isinstance(target, dict) else None
        schema, depth = target, depth + 1
    return schema


def sample_value(schema: Any, root: Mapping[str, Any] | None = None, depth: int = 0) -> Any:
    """A deterministic value that satisfies a (simple) JSON schema: what the fake "model" puts
    in a tool call's input or a structured-output reply."""
    root = root if root is not None else (schema if isinstance(schema, dict) else {})
    schema = _resolve(schema, root)
    if not isinstance(schema, dict) or depth > 8:
        return None
    if "const" in schema:
        return schema["const"]
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return schema["enum"][0]
    for key in ("anyOf", "oneOf", "allOf"):
        options = schema.get(key)
        if isinstance(options, list) and options:
            concrete = [o for o in options if _resolve(o, root) != {"type": "null"}]
            return sample_value((concrete or options)[0], root, depth + 1)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object" or "properties" in schema:
        props = schema.get("properties") or {}
        return {name: sample_value(sub, root, depth + 1) for name, sub in props.items()}
    if kind == "array":
        count = int(schema.get("minItems") or 0)
        return [sample_value(schema.get("items"), root, depth + 1) for _ in range(count)]
    if kind == "string":
        text = "fake"
        return text * max(1, math.ceil(int(schema.get("minLength") or 0) / len(text)))
    if kind == "integer":
        return int(schema.get("minimum", 1))
    if kind == "number":
        return float(schema.get("minimum", 1.0))
    if kind == "boolean":
        return True
    return None


def _planned_tool_call(body: dict[str, Any], echo: str) -> dict[str, Any] | None:
    """The tool the fake "model" calls on its own: the forced one (tool_choice any/tool), or,
    with tool_choice auto, a tool the latest user text names ("... use get_weather ..."), but
    not right after tool results (then it answers in text)."""
    tools = [t for t in body.get("tools") or [] if isinstance(t, dict) and "name" in t]
    choice = body.get("tool_choice") or {"type": "auto"}
    if not tools or choice.get("type") == "none":
        return None
    chosen: dict[str, Any] | None = None
    if choice.get("type") == "tool":
        chosen = next((t for t in tools if t["name"] == choice.get("name")), None)
    elif choice.get("type") == "any":
        chosen = tools[0]
    else:
        latest = body["messages"][-1]
        content = latest.get("content")
        answered = isinstance(content, list) and any(
            isinstance(b, dict) and b.get("type") == "tool_result" for b in content
        )
        if answered or latest.get("role") != "user":
            return None
        words = set(re.findall(r"[A-Za-z0-9_-]+", _text_of(content)))
        chosen = next((t for t in tools if t["name"] in words), None)
    if chosen is None:
        return None
    schema = chosen.get("input_schema") or {"type": "object", "properties": {}}
    arguments = sample_value(schema)
    return {"name": chosen["name"], "input": arguments if isinstance(arguments, dict) else {}}


def _reply_text(body: dict[str, Any], model: str, echo: str) -> str:
    config = body.get("output_config")
    fmt = config.get("format") if isinstance(config, dict) else None
    if isinstance(fmt, dict) and isinstance(fmt.get("schema"), dict):
        return json.dumps(sample_value(fmt["schema"]), separators=(",", ":"))
    latest = body["messages"][-1].get("content")
    results = (
        [b for b in latest if isinstance(b, dict) and b.get("type") == "tool_result"]
        if isinstance(latest, list)
        else []
    )
    if results:
        seen = " ".join(" ".join(_text_of(r.get("content")).split()) for r in results)
        seen = seen if len(seen) <= 60 else seen[:57] + "..."
        return f"Fake reply from {model} after {len(results)} tool result(s): {seen}".rstrip()
    return f"Fake reply from {model}: {echo}".rstrip()


def _build_message(
    body: dict[str, Any], script: _Script | None, cache: CacheUsage | None = None
) -> dict[str, Any]:
    """The non-streaming Message for a valid request (the stream replays it as events)."""
    model: str = body["model"]
    max_tokens: int = body["max_tokens"]
    users = [m for m in body["messages"] if m["role"] == "user"]
    echo = " ".join(_text_of(users[-1]["content"]).split()) if users else ""
    echo = echo if len(echo) <= 60 else echo[:57] + "..."
    text = _reply_text(body, model, echo)
    if script is not None and script.reply_text is not None:
        text = script.reply_text
    call = script.tool_use if script is not None and script.tool_use is not None else None
    planned = call is None and (script is None or script.reply_text is None)
    if planned:
        call = _planned_tool_call(body, echo)

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
                {"type": "thinking", "thinking": shown, "signature": sign_thinking(shown, model)}
            )
        budget -= thinking_tokens

    text_tokens = 0
    if planned and call is not None:
        # A forced call comes with no text before it (the API prefills the tool call); one the
        # model chose says what it is about to do.
        text = "" if forced_tool(body) else f"I'll call {call['name']}."
    if text or not planned or call is None:
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
    if call is not None and stop_reason != "max_tokens":
        for each in [call, *(script.also if script is not None and not planned else [])]:
            content.append(
                {
                    "type": "tool_use",
                    "id": each.get("id") or _new_id("toolu_"),
                    "name": each["name"],
                    "input": each.get("input", {}),
                }
            )
            text_tokens += estimate_tokens(json.dumps(each.get("input", {})))
        stop_reason, stop_sequence = "tool_use", None

    if script is not None and script.stop_reason is not None:
        stop_reason, stop_sequence = script.stop_reason, None
    total_input = count_input_tokens(body)
    cache = cache or CacheUsage(total_input, 0, 0, 0)
    usage: dict[str, Any] = {
        "input_tokens": cache.input_tokens,
        "output_tokens": thinking_tokens + text_tokens,
        "cache_creation_input_tokens": cache.cache_creation_input_tokens,
        "cache_read_input_tokens": cache.cache_read_input_tokens,
        "cache_creation": {
            "ephemeral_5m_input_tokens": cache.ephemeral_5m_input_tokens,
            "ephemeral_1h_input_tokens": cache.ephemeral_1h_input_tokens,
        },
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

    def __init__(
        self,
        *,
        api_key: str = DEFAULT_API_KEY,
        host: str = "127.0.0.1",
        strict: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``strict``: enforce the per-model contract of :mod:`tests.fakes.strict_rules`
        (False: only the request's shape, for tests that script deliberately invalid traffic).
        ``clock``: what prompt-cache lifetimes are measured on (a :class:`ManualClock` in tests
        that expire entries)."""
        self.api_key = api_key
        self.host = host
        self.default_strict = strict
        self.strict = strict
        self._default_clock = clock
        self.cache = PromptCache(clock)
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
        """Forget requests, scripts and prompt-cache entries; strictness and clock back to
        their defaults."""
        with self._lock:
            self._requests.clear()
            self._scripts.clear()
        self.cache.clear()
        self.cache.clock = self._default_clock
        self.strict = self.default_strict

    @property
    def clock(self) -> Callable[[], float]:
        return self.cache.clock

    @clock.setter
    def clock(self, clock: Callable[[], float]) -> None:
        self.cache.clock = clock

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
        also: list[Mapping[str, Any]] | None = None,
        event_delay_s: float = 0.0,
        malformed_sse: bool = False,
        early_error: bool = False,
        stop_reason: str | None = None,
    ) -> None:
        """Queue behaviour for the next `times` POST /v1/messages whose model matches the glob.

        An error (`status` >= 400 and/or `error_type`) answers before validation. A success
        (`reply_text`, `usage` override merged into the computed usage, `stream_error`) applies
        only to a valid request; a stream_error on a non-streaming request becomes the HTTP error.

        Faults: `delay_s` waits before answering (a slow upstream); `stream_cut` ends a stream
        after a few deltas with neither an error event nor message_stop; `disconnect` drops the
        connection after the status line (a reset, as the client sees it); `tool_use`
        ({"name", "input", "id"?}) adds a tool_use block and stop_reason "tool_use" (`also`:
        more tool_use blocks after it, calls made in parallel);
        `event_delay_s` sleeps between stream events; `malformed_sse` sends a content delta
        whose data is not JSON after the first content delta; `stop_reason` overrides the
        reply's (e.g. "refusal", "pause_turn", "model_context_window_exceeded"); `early_error`
        sends an overloaded error event right after message_start (before any content).

        Without a script the fake still answers realistically: a tool call when tool_choice
        forces one or the latest user text names an offered tool, a text answer after tool
        results, JSON that follows ``output_config.format``, signed thinking blocks when
        thinking is on, and prompt-cache usage (:mod:`tests.fakes.prompt_cache`).
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
            also=[dict(c) for c in also or ()],
            event_delay_s=event_delay_s,
            malformed_sse=malformed_sse,
            early_error=early_error,
            stop_reason=stop_reason,
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
            except ApiError as exc:
                return self._error(exc.status, exc.error_type, exc.message, request_id)
            except Exception as exc:  # a bug in the fake: say so, and stop the SDK retrying
                message = f"fake server bug: {exc!r}"
                no_retry = {"x-should-retry": "false"}
                return self._error(500, "api_error", message, request_id, no_retry)

        return endpoint

    @staticmethod
    def _betas(rec: RecordedRequest) -> frozenset[str]:
        raw = rec.header("anthropic-beta") or ""
        return frozenset(b.strip() for b in raw.split(",") if b.strip())

    @staticmethod
    def _body_object(rec: RecordedRequest) -> dict[str, Any]:
        if not rec.body.strip():
            raise invalid("Request body is empty; expected a JSON object")
        if rec.json_body is None:
            raise invalid("There was an error parsing the body of your request: invalid JSON")
        if not isinstance(rec.json_body, dict):
            raise invalid("Input should be a valid dictionary or object")
        return rec.json_body

    # endpoints ---------------------------------------------------------------------------

    async def _messages(self, request: Request, rec: RecordedRequest, request_id: str) -> Response:
        body = self._body_object(rec)
        stream = body.get("stream") is True
        refused: ApiError | None = None
        info = None
        try:
            info = validate(
                body,
                version=rec.header("anthropic-version") or "",
                betas=self._betas(rec),
                strict=self.strict,
            )
        except ApiError as exc:
            refused = exc
        model = body.get("model")
        entry = self._claim_script(
            model if isinstance(model, str) else "", stream=stream, valid=refused is None
        )
        if entry is None and refused is None and self._chaos_rate:
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
        if refused is not None:
            raise refused
        cache = None
        if info is not None:
            cache = self.cache.apply(body, info.model, info.min_cacheable_tokens)
        message_body = _build_message(body, entry, cache)
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
        validate(
            body,
            version=rec.header("anthropic-version") or "",
            betas=self._betas(rec),
            count_only=True,
            strict=self.strict,
        )
        return self._json({"input_tokens": count_input_tokens(body)}, request_id)

    async def _list_models(
        self, request: Request, rec: RecordedRequest, request_id: str
    ) -> Response:
        params = request.query_params
        lifecycles = set(params.getlist("lifecycle[]") or params.getlist("lifecycle"))
        lifecycles = lifecycles or {"active", "deprecated"}
        ids = [entry[0] for entry in _CATALOG if entry[2] in lifecycles]
        try:
            limit = int(params.get("limit", "20"))
        except ValueError:
            raise invalid("limit: Input should be a valid integer") from None
        if not 1 <= limit <= 1000:
            raise invalid("limit: Input should be between 1 and 1000")
        for name in ("after_id", "before_id"):
            if name in params and params[name] not in ids:
                raise invalid(f"{name}: unknown model id {params[name]!r}")
        if "before_id" in params:
            end = ids.index(params["before_id"])
            page, has_more = ids[max(0, end - limit) : end], end - limit > 0
        else:
            begin = ids.index(params["after_id"]) + 1 if "after_id" in params else 0
            page, has_more = ids[begin : begin + limit], begin + limit < len(ids)
        data = [_model_info(mid, c, lc, r) for mid, c, lc, r in _CATALOG if mid in page]
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
        for model_id, created, lifecycle, retires in _CATALOG:
            if wanted == model_id or re.sub(r"-\d{8}$", "", model_id) == wanted:
                return self._json(_model_info(model_id, created, lifecycle, retires), request_id)
        raise ApiError(404, "not_found_error", f"model: {wanted}")

    async def _unknown(self, request: Request, rec: RecordedRequest, request_id: str) -> Response:
        raise ApiError(404, "not_found_error", f"Not found: {request.method} {rec.path}")


if __name__ == "__main__":  # `python -m tests.fakes.anthropic_server` for manual poking
    with FakeAnthropic() as _fake, contextlib.suppress(KeyboardInterrupt):
        print(f"fake Anthropic at {_fake.base_url} (api key {_fake.api_key}); Ctrl-C stops")
        while True:
            time.sleep(3600)

"""``POST /v1/chat/completions``: the OpenAI dialect, translated to and from the Messages API.

Request: system/developer messages → ``system``; image parts → image blocks; assistant
``tool_calls`` → ``tool_use``; ``tool`` messages → ``tool_result``; ``max_completion_tokens`` /
``max_tokens``; ``stop``; tools and ``tool_choice``; ``reasoning_effort`` → effort;
``response_format`` json_schema → structured output. ``temperature``/``top_p`` are sent only to
models that accept them. Response: text, tool calls, finish reasons and usage mapped back;
streams become ``chat.completion.chunk`` events ending in ``[DONE]``, or in an error chunk when
the upstream stream fails.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, ClassVar

import orjson
from starlette.requests import Request
from starlette.responses import Response

from tierwise.accounting import usage_to_api
from tierwise.gateway.anthropic_api import (
    answer,
    check_model,
    decision_headers,
    relay_options,
    upstream_error,
)
from tierwise.gateway.attempts import Attempt
from tierwise.gateway.engine import Engine, Exchange
from tierwise.gateway.errors import GatewayError, openai_error_body
from tierwise.gateway.relay import RelayResponse, StreamRelay, unless_disconnected
from tierwise.gateway.sse import SSEEvent

DEFAULT_MAX_TOKENS = 4096
FINISH = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}
_EFFORTS = {"low", "medium", "high", "xhigh", "max"}


def _bad(message: str, param: str) -> GatewayError:
    return GatewayError(400, message, param=param)


def _text_parts(content: Any, where: str) -> list[dict[str, Any]]:
    if content is None:
        return []
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    if not isinstance(content, list):
        raise _bad(f"{where}: must be a string or a list of content parts", where)
    blocks: list[dict[str, Any]] = []
    for j, part in enumerate(content):
        at = f"{where}.{j}"
        if not isinstance(part, dict):
            raise _bad(f"{at}: must be an object", at)
        kind = part.get("type")
        if kind == "text":
            if not isinstance(part.get("text"), str):
                raise _bad(f"{at}.text: must be a string", f"{at}.text")
            blocks.append({"type": "text", "text": part["text"]})
        elif kind == "image_url":
            image = part.get("image_url")
            url = image.get("url") if isinstance(image, dict) else None
            if not isinstance(url, str):
                raise _bad(f"{at}.image_url.url: must be a string", f"{at}.image_url.url")
            blocks.append({"type": "image", "source": _image_source(url, at)})
        elif kind == "refusal":
            continue
        else:
            raise _bad(f"{at}.type: content part {kind!r} is not supported", f"{at}.type")
    return blocks


def _image_source(url: str, where: str) -> dict[str, Any]:
    if url.startswith("data:"):
        head, _, data = url.partition(",")
        media = head[5:].split(";")[0]
        if ";base64" not in head or not data:
            raise _bad(f"{where}.image_url.url: data URLs must be base64", f"{where}.image_url.url")
        return {"type": "base64", "media_type": media, "data": data}
    if url.startswith(("http://", "https://")):
        return {"type": "url", "url": url}
    raise _bad(f"{where}.image_url.url: must be an http(s) or data URL", f"{where}.image_url.url")


def _message(i: int, m: Any) -> tuple[str, Any] | None:
    """One OpenAI message → (role, Anthropic content); None for system/developer."""
    where = f"messages.{i}"
    if not isinstance(m, dict):
        raise _bad(f"{where}: must be an object", where)
    role = m.get("role")
    if role in ("system", "developer"):
        return None
    if role == "user":
        content = m.get("content")
        if isinstance(content, str):
            return "user", content
        return "user", _text_parts(content, f"{where}.content")
    if role == "assistant":
        blocks = _text_parts(m.get("content"), f"{where}.content")
        calls = m.get("tool_calls") or []
        if not isinstance(calls, list):
            raise _bad(f"{where}.tool_calls: must be a list", f"{where}.tool_calls")
        for j, call in enumerate(calls):
            at = f"{where}.tool_calls.{j}"
            fn = call.get("function") if isinstance(call, dict) else None
            if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
                raise _bad(f"{at}.function.name: required", f"{at}.function.name")
            try:
                args = orjson.loads(fn.get("arguments") or "{}")
                if not isinstance(args, dict):
                    raise orjson.JSONDecodeError("not an object", "", 0)
            except (orjson.JSONDecodeError, TypeError) as exc:
                raise _bad(
                    f"{at}.function.arguments: not valid JSON", f"{at}.function.arguments"
                ) from exc
            blocks.append(
                {
                    "type": "tool_use",
                    "id": call.get("id") or f"call_{i}_{j}",
                    "name": fn["name"],
                    "input": args,
                }
            )
        return "assistant", blocks
    if role == "tool":
        if not isinstance(m.get("tool_call_id"), str):
            raise _bad(f"{where}.tool_call_id: required", f"{where}.tool_call_id")
        content = m.get("content")
        inner = content if isinstance(content, str) else _text_parts(content, f"{where}.content")
        return "user", [{"type": "tool_result", "tool_use_id": m["tool_call_id"], "content": inner}]
    raise _bad(f"{where}.role: {role!r} is not supported", f"{where}.role")


def to_anthropic(body: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any], bool]:
    """(Messages body, sampling params, include_usage). Raises GatewayError naming the field."""
    model = check_model(body.get("model"))
    out: dict[str, Any] = {"model": model, **_conversation(body.get("messages"))}
    out["max_tokens"] = _max_tokens(body)
    if body.get("n", 1) not in (None, 1):
        raise _bad("n: only 1 choice is supported", "n")
    stop = body.get("stop")
    if stop is not None:
        stops = [stop] if isinstance(stop, str) else stop
        if not isinstance(stops, list) or not all(isinstance(x, str) for x in stops):
            raise _bad("stop: must be a string or a list of strings", "stop")
        out["stop_sequences"] = stops
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise _bad("stream: must be a boolean", "stream")
    if stream:
        out["stream"] = True
    tools = body.get("tools")
    if tools:
        if not isinstance(tools, list):
            raise _bad("tools: must be a list", "tools")
        out["tools"] = [_tool(i, t) for i, t in enumerate(tools)]
    choice = _tool_choice(body.get("tool_choice"), body.get("parallel_tool_calls"))
    if choice is not None:
        out["tool_choice"] = choice
    out.update(_reasoning_and_format(body))
    user = body.get("safety_identifier") or body.get("user")
    if isinstance(user, str) and user:
        out["metadata"] = {"user_id": user}
    sampling = {
        k: body[k] for k in ("temperature", "top_p") if isinstance(body.get(k), int | float)
    }
    options = body.get("stream_options") or {}
    include_usage = bool(isinstance(options, dict) and options.get("include_usage"))
    return out, sampling, include_usage


def _conversation(messages: Any) -> dict[str, Any]:
    if not isinstance(messages, list) or not messages:
        raise _bad("messages: required (a non-empty list)", "messages")
    system: list[str] = []
    converted: list[dict[str, Any]] = []
    for i, m in enumerate(messages):
        item = _message(i, m)
        if item is None:
            content = m.get("content")
            if isinstance(content, str):
                system.append(content)
            else:
                parts = _text_parts(content, f"messages.{i}.content")
                system.append("\n".join(b["text"] for b in parts))
            continue
        role, content = item
        converted.append({"role": role, "content": content})
    if not converted:
        raise _bad("messages: at least one user message is required", "messages")
    out: dict[str, Any] = {"messages": converted}
    if any(system):
        out["system"] = "\n\n".join(x for x in system if x)
    return out


def _max_tokens(body: dict[str, Any]) -> int:
    limit = body.get("max_completion_tokens", body.get("max_tokens"))
    if limit is None:
        return DEFAULT_MAX_TOKENS
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise _bad("max_completion_tokens: must be a positive integer", "max_completion_tokens")
    return limit


def _reasoning_and_format(body: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    config: dict[str, Any] = {}
    effort = body.get("reasoning_effort")
    if effort in ("none", "minimal"):
        out["thinking"] = {"type": "disabled"}
    elif effort is not None:
        if effort not in _EFFORTS:
            raise _bad(f"reasoning_effort: {effort!r} is not supported", "reasoning_effort")
        config["effort"] = effort
    fmt = body.get("response_format")
    if isinstance(fmt, dict) and fmt.get("type") == "json_schema":
        spec = fmt.get("json_schema")
        schema = spec.get("schema") if isinstance(spec, dict) else None
        if not isinstance(schema, dict):
            where = "response_format.json_schema.schema"
            raise _bad(f"{where}: required", where)
        config["format"] = {"type": "json_schema", "schema": schema}
    if config:
        out["output_config"] = config
    return out


def _tool(i: int, tool: Any) -> dict[str, Any]:
    at = f"tools.{i}"
    fn = tool.get("function") if isinstance(tool, dict) else None
    if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
        raise _bad(f"{at}.function.name: required", f"{at}.function.name")
    out: dict[str, Any] = {
        "name": fn["name"],
        "input_schema": fn.get("parameters") or {"type": "object", "properties": {}},
    }
    if fn.get("description"):
        out["description"] = fn["description"]
    if fn.get("strict"):
        out["strict"] = True
    return out


def _tool_choice(choice: Any, parallel: Any) -> dict[str, Any] | None:
    if choice is None and parallel is None:
        return None
    if choice is None or choice == "auto":
        out: dict[str, Any] = {"type": "auto"}
    elif choice == "none":
        return {"type": "none"}
    elif choice == "required":
        out = {"type": "any"}
    elif (
        isinstance(choice, dict)
        and isinstance(choice.get("function"), dict)
        and isinstance(choice["function"].get("name"), str)
    ):
        out = {"type": "tool", "name": choice["function"]["name"]}
    else:
        raise _bad("tool_choice: must be none, auto, required or a function", "tool_choice")
    if parallel is False:
        out["disable_parallel_tool_use"] = True
    return out


def openai_usage(usage: dict[str, Any]) -> dict[str, Any]:
    cache_read = int(usage.get("cache_read_input_tokens") or 0)
    cache_write = int(usage.get("cache_creation_input_tokens") or 0)
    prompt = int(usage.get("input_tokens") or 0) + cache_read + cache_write
    completion = int(usage.get("output_tokens") or 0)
    thinking = int((usage.get("output_tokens_details") or {}).get("thinking_tokens") or 0)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cache_read, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": thinking,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def to_completion(message: dict[str, Any], request_id: str) -> dict[str, Any]:
    text = "".join(
        b.get("text", "") for b in message.get("content") or [] if b.get("type") == "text"
    )
    calls = [
        {
            "id": b.get("id"),
            "type": "function",
            "function": {
                "name": b.get("name"),
                "arguments": orjson.dumps(b.get("input") or {}).decode(),
            },
        }
        for b in message.get("content") or []
        if b.get("type") == "tool_use"
    ]
    out_message: dict[str, Any] = {
        "role": "assistant",
        "content": text if text or not calls else None,
        "refusal": None,
        "annotations": [],
    }
    if calls:
        out_message["tool_calls"] = calls
    return {
        "id": f"chatcmpl-{request_id}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": message.get("model"),
        "choices": [
            {
                "index": 0,
                "message": out_message,
                "logprobs": None,
                "finish_reason": FINISH.get(message.get("stop_reason") or "", "stop"),
            }
        ],
        "usage": openai_usage(message.get("usage") or {}),
        "system_fingerprint": None,
    }


async def translated(
    engine: Engine,
    request: Request,
    ex: Exchange,
    anthropic_body: dict[str, Any],
    sampling: dict[str, Any],
    render: Callable[[dict[str, Any], Attempt], dict[str, Any]],
    make_relay: Callable[[Attempt], StreamRelay],
) -> Response:
    """An OpenAI-style dialect over a Messages exchange: admit the translated body, call,
    then an error in OpenAI's shape, ``render(message, attempt)`` as JSON, or the stream
    ``make_relay(attempt)`` writes."""
    await ex.admit(anthropic_body, sampling=sampling, headers=request.headers)
    headers = {"anthropic-version": engine.settings.gateway.upstream_anthropic_version}
    stream = ex.life.stream
    attempt = await unless_disconnected(request, ex.call(headers, stream=stream))
    reply = attempt.reply
    out_headers = decision_headers(ex, attempt, engine.upstream.simulated)
    if reply.status != 200:
        data = await reply.read()
        status, kind, message, _ = upstream_error(ex, attempt, data)
        return Response(
            openai_error_body(kind, message),
            status_code=status,
            media_type="application/json",
            headers=out_headers,
        )
    if not stream:
        message_obj, _, cost = await answer(ex, attempt)
        recorded = ex.life.recorded_usage()
        if recorded is not None:  # the checked usage, as recorded (and always valid JSON)
            message_obj = {**message_obj, "usage": usage_to_api(recorded)}
        out_headers["x-tierwise-cost-usd"] = cost
        return Response(
            orjson.dumps(render(message_obj, attempt)),
            media_type="application/json",
            headers=out_headers,
        )
    out_headers["cache-control"] = "no-cache"
    return RelayResponse(make_relay(attempt), headers=out_headers)


async def chat_completions(
    engine: Engine, request: Request, ex: Exchange, body: dict[str, Any]
) -> Response:
    anthropic_body, sampling, include_usage = to_anthropic(body)

    def relay(attempt: Attempt) -> StreamRelay:
        return OpenAIRelay(
            ex.detach(),
            attempt,
            **relay_options(engine, ex),
            include_usage=include_usage,
            model=attempt.target.model,
        )

    return await translated(
        engine,
        request,
        ex,
        anthropic_body,
        sampling,
        lambda message, _: to_completion(message, ex.request_id),
        relay,
    )


def _data(obj: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(obj) + b"\n\n"


class OpenAIRelay(StreamRelay):
    """Anthropic stream events → OpenAI ``chat.completion.chunk`` data lines, ending with
    ``[DONE]`` only after ``message_stop`` (an error chunk otherwise)."""

    def __init__(self, *args: Any, include_usage: bool, model: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.id = f"chatcmpl-{self.life.request_id}"
        self.created = int(time.time())
        self.model = model
        self.include_usage = include_usage
        self.tools: dict[int, int] = {}  # Anthropic block index → OpenAI tool call index

    def _envelope(self, choices: list[dict[str, Any]], usage: Any = None) -> bytes:
        return _data(
            {
                "id": self.id,
                "object": "chat.completion.chunk",
                "created": self.created,
                "model": self.tracker.model or self.model,
                "system_fingerprint": None,
                "choices": choices,
                "usage": usage,
            }
        )

    def chunk(self, delta: dict[str, Any], finish: str | None = None) -> bytes:
        return self._envelope(
            [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]
        )

    def error(self, kind: str, message: str) -> bytes:
        return _data(
            {"error": {"message": message, "type": "server_error", "param": None, "code": kind}}
        )

    def convert(self, event: SSEEvent, obj: dict[str, Any] | None) -> bytes:
        if obj is None:
            return b""
        handler = self._HANDLERS.get(event.name or "")
        return handler(self, obj) if handler is not None else b""

    def _message_start(self, obj: dict[str, Any]) -> bytes:
        return self.chunk({"role": "assistant", "content": ""})

    def _error_event(self, obj: dict[str, Any]) -> bytes:
        err = self.tracker.error or {}
        return self.error(str(err.get("type", "api_error")), str(err.get("message", "error")))

    def _message_stop(self, obj: dict[str, Any]) -> bytes:
        out = [self.chunk({}, FINISH.get(self.tracker.stop_reason or "", "stop"))]
        if self.include_usage:
            out.append(self._envelope([], openai_usage(self.client_usage())))
        out.append(b"data: [DONE]\n\n")
        return b"".join(out)

    @staticmethod
    def _index(event: dict[str, Any]) -> int:
        index = event.get("index", 0)
        return index if isinstance(index, int) and not isinstance(index, bool) else -1

    def _block_start(self, event: dict[str, Any]) -> bytes:
        cb = event.get("content_block")
        if not isinstance(cb, dict) or cb.get("type") != "tool_use":
            return b""
        k = self.tools.setdefault(self._index(event), len(self.tools))
        call = {
            "index": k,
            "id": cb.get("id"),
            "type": "function",
            "function": {"name": cb.get("name"), "arguments": ""},
        }
        return self.chunk({"tool_calls": [call]})

    def _block_delta(self, event: dict[str, Any]) -> bytes:
        delta = event.get("delta")
        if not isinstance(delta, dict):
            return b""
        index = self._index(event)
        if delta.get("type") == "text_delta" and isinstance(delta.get("text"), str):
            return self.chunk({"content": delta["text"]})
        if delta.get("type") == "input_json_delta" and index in self.tools:
            args = delta.get("partial_json")
            if not isinstance(args, str):
                return b""
            return self.chunk(
                {"tool_calls": [{"index": self.tools[index], "function": {"arguments": args}}]}
            )
        return b""

    _HANDLERS: ClassVar[dict[str, Callable[[OpenAIRelay, dict[str, Any]], bytes]]] = {
        "message_start": _message_start,
        "content_block_start": _block_start,
        "content_block_delta": _block_delta,
        "error": _error_event,
        "message_stop": _message_stop,
    }

"""``POST /v1/responses``: OpenAI's Responses API (the OpenAI Agents SDK's default model class
calls it), translated to and from the Messages API.

Request: ``instructions`` and system/developer items → ``system``; ``input`` as a string or as
items: messages (``input_text``, ``input_image``, ``input_file``; assistant ``output_text``),
``function_call`` → ``tool_use``, ``function_call_output`` → ``tool_result``; function tools;
``tool_choice``; ``parallel_tool_calls``; ``max_output_tokens``; ``reasoning.effort``;
``text.format`` json_schema → structured output; ``temperature``/``top_p`` (sent only to models
that accept them). Responses are not stored: ``previous_response_id`` and ``conversation`` are
refused with a message that says to send the whole conversation.

Response: text blocks → ``message`` items with ``output_text`` parts, ``tool_use`` →
``function_call`` items, usage and ``incomplete_details``. Streams use the Responses event
grammar (``response.created`` … ``response.output_text.delta`` …
``response.function_call_arguments.delta`` … ``response.completed``) with sequence numbers; a
stream that fails ends with an ``error`` event and ``response.failed``, never with
``response.completed``.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any, ClassVar

import orjson
from starlette.requests import Request
from starlette.responses import Response

from tierwise.gateway.anthropic_api import check_model, relay_options
from tierwise.gateway.attempts import Attempt
from tierwise.gateway.engine import Engine, Exchange
from tierwise.gateway.errors import GatewayError
from tierwise.gateway.openai_api import DEFAULT_MAX_TOKENS, translated
from tierwise.gateway.relay import StreamRelay
from tierwise.gateway.sse import SSEEvent

_EFFORTS = {"low", "medium", "high", "xhigh", "max"}
_ECHOED = ("instructions", "metadata", "temperature", "top_p", "text", "reasoning", "user")


def _bad(message: str, param: str) -> GatewayError:
    return GatewayError(400, message, param=param)


def _parts(content: Any, where: str, role: str) -> list[dict[str, Any]]:
    """A message item's content → Anthropic blocks."""
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
        if kind in ("input_text", "output_text", "text"):
            if not isinstance(part.get("text"), str):
                raise _bad(f"{at}.text: must be a string", f"{at}.text")
            if part["text"]:
                blocks.append({"type": "text", "text": part["text"]})
        elif kind == "refusal":
            continue
        elif kind == "input_image" and role == "user":
            blocks.append({"type": "image", "source": _image_source(part, at)})
        elif kind == "input_file" and role == "user":
            blocks.append({"type": "document", "source": _file_source(part, at)})
        else:
            raise _bad(f"{at}.type: content part {kind!r} is not supported here", f"{at}.type")
    return blocks


def _image_source(part: dict[str, Any], where: str) -> dict[str, Any]:
    url = part.get("image_url")
    if not isinstance(url, str):
        raise _bad(f"{where}.image_url: required (file_id images are not supported)", where)
    if url.startswith("data:"):
        head, _, data = url.partition(",")
        if ";base64" not in head or not data:
            raise _bad(f"{where}.image_url: data URLs must be base64", f"{where}.image_url")
        return {"type": "base64", "media_type": head[5:].split(";")[0], "data": data}
    if url.startswith(("http://", "https://")):
        return {"type": "url", "url": url}
    raise _bad(f"{where}.image_url: must be an http(s) or data URL", f"{where}.image_url")


def _file_source(part: dict[str, Any], where: str) -> dict[str, Any]:
    data = part.get("file_data")
    if isinstance(data, str) and data.startswith("data:"):
        head, _, payload = data.partition(",")
        return {"type": "base64", "media_type": head[5:].split(";")[0], "data": payload}
    if isinstance(data, str):
        return {"type": "base64", "media_type": "application/pdf", "data": data}
    url = part.get("file_url")
    if isinstance(url, str) and url.startswith(("http://", "https://")):
        return {"type": "url", "url": url}
    raise _bad(f"{where}: input_file needs file_data or file_url (file_id is not supported)", where)


class _Conversation:
    """Anthropic messages built item by item, merging consecutive turns of one role."""

    def __init__(self) -> None:
        self.system: list[str] = []
        self.messages: list[dict[str, Any]] = []

    def add(self, role: str, blocks: list[dict[str, Any]]) -> None:
        if not blocks:
            return
        if self.messages and self.messages[-1]["role"] == role:
            self.messages[-1]["content"].extend(blocks)
        else:
            self.messages.append({"role": role, "content": list(blocks)})


def _message_item_in(conv: _Conversation, item: dict[str, Any], where: str) -> None:
    role = item.get("role")
    if role in ("system", "developer"):
        blocks = _parts(item.get("content"), f"{where}.content", "system")
        conv.system.append("\n".join(b["text"] for b in blocks))
    elif role in ("user", "assistant"):
        conv.add(role, _parts(item.get("content"), f"{where}.content", role))
    else:
        raise _bad(f"{where}.role: {role!r} is not supported", f"{where}.role")


def _function_call_in(conv: _Conversation, item: dict[str, Any], where: str) -> None:
    call_id, name = item.get("call_id"), item.get("name")
    if not isinstance(call_id, str) or not isinstance(name, str):
        raise _bad(f"{where}: function_call needs call_id and name", where)
    try:
        args = orjson.loads(item.get("arguments") or "{}")
    except (orjson.JSONDecodeError, TypeError) as exc:
        raise _bad(f"{where}.arguments: not valid JSON", f"{where}.arguments") from exc
    if not isinstance(args, dict):
        raise _bad(f"{where}.arguments: must be a JSON object", f"{where}.arguments")
    conv.add("assistant", [{"type": "tool_use", "id": call_id, "name": name, "input": args}])


def _function_output_in(conv: _Conversation, item: dict[str, Any], where: str) -> None:
    call_id = item.get("call_id")
    if not isinstance(call_id, str):
        raise _bad(f"{where}.call_id: required", f"{where}.call_id")
    output = item.get("output")
    inner = output if isinstance(output, str) else _parts(output, f"{where}.output", "user")
    conv.add("user", [{"type": "tool_result", "tool_use_id": call_id, "content": inner}])


_ITEMS: dict[str, Callable[[_Conversation, dict[str, Any], str], None]] = {
    "message": _message_item_in,
    "function_call": _function_call_in,
    "function_call_output": _function_output_in,
}


def _item(conv: _Conversation, i: int, item: Any) -> None:
    where = f"input.{i}"
    if not isinstance(item, dict):
        raise _bad(f"{where}: must be an object", where)
    kind = item.get("type", "message")
    if kind == "reasoning":
        return  # another model's reasoning: nothing the Messages API can take back
    handler = _ITEMS.get(kind) if isinstance(kind, str) else None
    if handler is None:
        raise _bad(f"{where}.type: input item {kind!r} is not supported", f"{where}.type")
    handler(conv, item, where)


def _tools(tools: Any) -> list[dict[str, Any]]:
    if not isinstance(tools, list):
        raise _bad("tools: must be a list", "tools")
    out = []
    for i, tool in enumerate(tools):
        at = f"tools.{i}"
        if not isinstance(tool, dict) or tool.get("type") != "function":
            kind = tool.get("type") if isinstance(tool, dict) else None
            raise _bad(f"{at}.type: only function tools are supported, got {kind!r}", at)
        if not isinstance(tool.get("name"), str):
            raise _bad(f"{at}.name: required", f"{at}.name")
        spec: dict[str, Any] = {
            "name": tool["name"],
            "input_schema": tool.get("parameters") or {"type": "object", "properties": {}},
        }
        if isinstance(tool.get("description"), str) and tool["description"]:
            spec["description"] = tool["description"]
        if tool.get("strict"):
            spec["strict"] = True
        out.append(spec)
    return out


def _tool_choice(choice: Any, parallel: Any) -> dict[str, Any] | None:
    if choice is None and parallel is None:
        return None
    if choice in (None, "auto"):
        out: dict[str, Any] = {"type": "auto"}
    elif choice == "none":
        return {"type": "none"}
    elif choice == "required":
        out = {"type": "any"}
    elif isinstance(choice, dict) and choice.get("type") == "function":
        if not isinstance(choice.get("name"), str):
            raise _bad("tool_choice.name: required", "tool_choice.name")
        out = {"type": "tool", "name": choice["name"]}
    else:
        raise _bad("tool_choice: must be none, auto, required or a function", "tool_choice")
    if parallel is False:
        out["disable_parallel_tool_use"] = True
    return out


def _options(body: dict[str, Any], out: dict[str, Any]) -> None:
    """max_output_tokens, reasoning, text.format, stream, user."""
    limit = body.get("max_output_tokens")
    if limit is None:
        out["max_tokens"] = DEFAULT_MAX_TOKENS
    elif isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise _bad("max_output_tokens: must be a positive integer", "max_output_tokens")
    else:
        out["max_tokens"] = limit
    config: dict[str, Any] = {}
    reasoning = body.get("reasoning")
    effort = reasoning.get("effort") if isinstance(reasoning, dict) else None
    if effort in ("none", "minimal"):
        out["thinking"] = {"type": "disabled"}
    elif effort is not None:
        if effort not in _EFFORTS:
            raise _bad(f"reasoning.effort: {effort!r} is not supported", "reasoning.effort")
        config["effort"] = effort
    text = body.get("text")
    fmt = text.get("format") if isinstance(text, dict) else None
    if isinstance(fmt, dict) and fmt.get("type") == "json_schema":
        if not isinstance(fmt.get("schema"), dict):
            raise _bad("text.format.schema: required", "text.format.schema")
        config["format"] = {"type": "json_schema", "schema": fmt["schema"]}
    if config:
        out["output_config"] = config
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise _bad("stream: must be a boolean", "stream")
    if stream:
        out["stream"] = True
    user = body.get("safety_identifier") or body.get("user")
    if isinstance(user, str) and user:
        out["metadata"] = {"user_id": user[:256]}


def to_anthropic(body: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(Messages body, sampling params). Raises GatewayError naming the field."""
    model = check_model(body.get("model"))
    for field in ("previous_response_id", "conversation"):
        if body.get(field):
            raise _bad(
                f"{field}: tierwise does not store responses; send the whole conversation in input",
                field,
            )
    conv = _Conversation()
    instructions = body.get("instructions")
    if isinstance(instructions, str) and instructions:
        conv.system.append(instructions)
    elif instructions is not None and not isinstance(instructions, str):
        raise _bad("instructions: must be a string", "instructions")
    items = body.get("input")
    if isinstance(items, str):
        conv.add("user", [{"type": "text", "text": items}])
    elif isinstance(items, list):
        for i, item in enumerate(items):
            _item(conv, i, item)
    else:
        raise _bad("input: required (a string or a list of items)", "input")
    if not conv.messages:
        raise _bad("input: at least one user message is required", "input")
    out: dict[str, Any] = {"model": model, "messages": conv.messages}
    system = "\n\n".join(x for x in conv.system if x)
    if system:
        out["system"] = system
    if body.get("tools"):
        out["tools"] = _tools(body["tools"])
    choice = _tool_choice(body.get("tool_choice"), body.get("parallel_tool_calls"))
    if choice is not None:
        out["tool_choice"] = choice
    _options(body, out)
    sampling = {
        k: body[k] for k in ("temperature", "top_p") if isinstance(body.get(k), int | float)
    }
    return out, sampling


def _usage(usage: dict[str, Any]) -> dict[str, Any]:
    def n(value: Any) -> int:
        return value if isinstance(value, int) and not isinstance(value, bool) else 0

    read = n(usage.get("cache_read_input_tokens"))
    write = n(usage.get("cache_creation_input_tokens"))
    prompt = n(usage.get("input_tokens")) + read + write
    output = n(usage.get("output_tokens"))
    details = usage.get("output_tokens_details")
    thinking = n(details.get("thinking_tokens")) if isinstance(details, dict) else 0
    return {
        "input_tokens": prompt,
        "input_tokens_details": {"cached_tokens": read, "cache_write_tokens": write},
        "output_tokens": output,
        "output_tokens_details": {"reasoning_tokens": thinking},
        "total_tokens": prompt + output,
    }


def _function_call(block: dict[str, Any], arguments: str, status: str) -> dict[str, Any]:
    call_id = str(block.get("id") or f"call_{uuid.uuid4().hex[:24]}")
    return {
        "type": "function_call",
        "id": f"fc_{call_id}",
        "call_id": call_id,
        "name": block.get("name"),
        "arguments": arguments,
        "status": status,
    }


def _message_item(item_id: str, texts: list[str], status: str) -> dict[str, Any]:
    parts = [{"type": "output_text", "text": t, "annotations": []} for t in texts]
    return {
        "type": "message",
        "id": item_id,
        "role": "assistant",
        "status": status,
        "content": parts,
    }


class Envelope:
    """The response object around the output (what the request asked, echoed back)."""

    def __init__(self, body: dict[str, Any], request_id: str, model: str) -> None:
        self.body = body
        self.id = f"resp_{request_id.removeprefix('tw_')}"
        self.created_at = int(time.time())
        self.model = model

    def response(
        self,
        output: list[dict[str, Any]],
        *,
        status: str,
        usage: dict[str, Any] | None,
        stop_reason: str | None = None,
        error: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        body = self.body
        out: dict[str, Any] = {
            "id": self.id,
            "object": "response",
            "created_at": self.created_at,
            "status": status,
            "model": self.model,
            "output": output,
            "parallel_tool_calls": body.get("parallel_tool_calls") is not False,
            "tool_choice": body.get("tool_choice") or "auto",
            "tools": body.get("tools") or [],
            "max_output_tokens": body.get("max_output_tokens"),
            "previous_response_id": None,
            "error": error,
            "incomplete_details": None,
            "usage": _usage(usage) if usage is not None else None,
        }
        for field in _ECHOED:
            if field in body:
                out[field] = body[field]
        if status == "incomplete" or stop_reason in ("max_tokens", "model_context_window_exceeded"):
            out["status"] = "incomplete"
            out["incomplete_details"] = {"reason": "max_output_tokens"}
        elif stop_reason == "refusal":
            out["status"] = "incomplete"
            out["incomplete_details"] = {"reason": "content_filter"}
        return out


def to_response(message: dict[str, Any], envelope: Envelope) -> dict[str, Any]:
    output: list[dict[str, Any]] = []
    for i, block in enumerate(message.get("content") or []):
        if block.get("type") == "text":
            output.append(_message_item(f"msg_{envelope.id}_{i}", [block["text"]], "completed"))
        elif block.get("type") == "tool_use":
            output.append(
                _function_call(block, orjson.dumps(block.get("input") or {}).decode(), "completed")
            )
    envelope.model = str(message.get("model") or envelope.model)
    return envelope.response(
        output,
        status="completed",
        usage=message.get("usage") or {},
        stop_reason=message.get("stop_reason"),
    )


async def responses(
    engine: Engine, request: Request, ex: Exchange, body: dict[str, Any]
) -> Response:
    anthropic_body, sampling = to_anthropic(body)

    def relay(attempt: Attempt) -> StreamRelay:
        envelope = Envelope(body, ex.request_id, attempt.target.model)
        return ResponsesRelay(ex.detach(), attempt, **relay_options(engine, ex), envelope=envelope)

    def render(message: dict[str, Any], attempt: Attempt) -> dict[str, Any]:
        return to_response(message, Envelope(body, ex.request_id, attempt.target.model))

    return await translated(engine, request, ex, anthropic_body, sampling, render, relay)


class _Block:
    """One Anthropic content block being streamed as one output item."""

    def __init__(self, kind: str, output_index: int, item_id: str, start: dict[str, Any]):
        self.kind = kind  # "text" | "tool_use"
        self.output_index = output_index
        self.item_id = item_id
        self.start = start
        self.parts: list[str] = []

    @property
    def text(self) -> str:
        return "".join(self.parts)


class ResponsesRelay(StreamRelay):
    """Anthropic stream events → Responses API stream events."""

    def __init__(self, *args: Any, envelope: Envelope, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.envelope = envelope
        self.seq = 0
        self.blocks: dict[int, _Block] = {}
        self.output: list[dict[str, Any]] = []
        self.failed = False

    def _event(self, kind: str, payload: dict[str, Any]) -> bytes:
        data = {"type": kind, "sequence_number": self.seq, **payload}
        self.seq += 1
        return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"

    def _snapshot(self, status: str, **kwargs: Any) -> dict[str, Any]:
        return self.envelope.response(list(self.output), status=status, **kwargs)

    def error(self, kind: str, message: str) -> bytes:
        if self.failed:
            return b""
        self.failed = True
        error = {"code": kind, "message": message}
        usage = self.client_usage() or None
        return self._event("error", {**error, "param": None}) + self._event(
            "response.failed", {"response": self._snapshot("failed", usage=usage, error=error)}
        )

    def convert(self, event: SSEEvent, obj: dict[str, Any] | None) -> bytes:
        if obj is None:
            return b""
        handler = self._HANDLERS.get(event.name or "")
        return handler(self, obj) if handler is not None else b""

    def _message_start(self, obj: dict[str, Any]) -> bytes:
        if self.tracker.model:
            self.envelope.model = self.tracker.model
        snapshot = {"response": self._snapshot("in_progress", usage=None)}
        return self._event("response.created", snapshot) + self._event(
            "response.in_progress", snapshot
        )

    def _block_start(self, obj: dict[str, Any]) -> bytes:
        cb = obj.get("content_block")
        index = obj.get("index")
        if not isinstance(cb, dict) or not isinstance(index, int):
            return b""
        kind = cb.get("type")
        output_index = len(self.output) + len(self.blocks)
        if kind == "text":
            block = _Block("text", output_index, f"msg_{self.envelope.id}_{index}", cb)
            self.blocks[index] = block
            part = {"type": "output_text", "text": "", "annotations": []}
            item = _message_item(block.item_id, [], "in_progress")
            return self._event(
                "response.output_item.added", {"output_index": output_index, "item": item}
            ) + self._event(
                "response.content_part.added",
                {
                    "item_id": block.item_id,
                    "output_index": output_index,
                    "content_index": 0,
                    "part": part,
                },
            )
        if kind == "tool_use":
            item = _function_call(cb, "", "in_progress")
            block = _Block("tool_use", output_index, item["id"], cb)
            self.blocks[index] = block
            return self._event(
                "response.output_item.added", {"output_index": output_index, "item": item}
            )
        return b""  # thinking and server-tool blocks have no Responses equivalent here

    def _block_delta(self, obj: dict[str, Any]) -> bytes:
        block = self.blocks.get(obj.get("index"))  # type: ignore[arg-type]
        delta = obj.get("delta")
        if block is None or not isinstance(delta, dict):
            return b""
        common = {"item_id": block.item_id, "output_index": block.output_index}
        if block.kind == "text" and isinstance(delta.get("text"), str):
            block.parts.append(delta["text"])
            return self._event(
                "response.output_text.delta",
                {**common, "content_index": 0, "delta": delta["text"], "logprobs": []},
            )
        if block.kind == "tool_use" and isinstance(delta.get("partial_json"), str):
            block.parts.append(delta["partial_json"])
            return self._event(
                "response.function_call_arguments.delta", {**common, "delta": delta["partial_json"]}
            )
        return b""

    def _block_stop(self, obj: dict[str, Any]) -> bytes:
        block = self.blocks.pop(obj.get("index"), None)  # type: ignore[arg-type]
        if block is None:
            return b""
        common = {"item_id": block.item_id, "output_index": block.output_index}
        if block.kind == "text":
            part = {"type": "output_text", "text": block.text, "annotations": []}
            item = _message_item(block.item_id, [block.text], "completed")
            self.output.append(item)
            return (
                self._event(
                    "response.output_text.done",
                    {**common, "content_index": 0, "text": block.text, "logprobs": []},
                )
                + self._event(
                    "response.content_part.done", {**common, "content_index": 0, "part": part}
                )
                + self._event(
                    "response.output_item.done",
                    {"output_index": block.output_index, "item": item},
                )
            )
        arguments = block.text or "{}"
        item = _function_call(block.start, arguments, "completed")
        self.output.append(item)
        return self._event(
            "response.function_call_arguments.done",
            {**common, "arguments": arguments, "name": item["name"]},
        ) + self._event(
            "response.output_item.done", {"output_index": block.output_index, "item": item}
        )

    def _error_event(self, obj: dict[str, Any]) -> bytes:
        err = self.tracker.error or {}
        return self.error(str(err.get("type", "api_error")), str(err.get("message", "error")))

    def _message_stop(self, obj: dict[str, Any]) -> bytes:
        response = self._snapshot(
            "completed", usage=self.client_usage(), stop_reason=self.tracker.stop_reason
        )
        kind = "response.incomplete" if response["status"] == "incomplete" else "response.completed"
        return self._event(kind, {"response": response})

    _HANDLERS: ClassVar[dict[str, Callable[[ResponsesRelay, dict[str, Any]], bytes]]] = {
        "message_start": _message_start,
        "content_block_start": _block_start,
        "content_block_delta": _block_delta,
        "content_block_stop": _block_stop,
        "error": _error_event,
        "message_stop": _message_stop,
    }

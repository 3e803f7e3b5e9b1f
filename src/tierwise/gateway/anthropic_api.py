"""``POST /v1/messages`` and ``/v1/messages/count_tokens``: a faithful pass-through.

Only what routing needs is read; ``model`` is replaced (plus the tier's thinking/effort defaults
where the client set none) and every other field is forwarded as sent. Successful bodies and
SSE events are relayed byte for byte; usage is read on the side for the ledger.
"""

from __future__ import annotations

import re
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from tierwise.gateway.engine import Admission, Attempt, Engine
from tierwise.gateway.errors import GatewayError
from tierwise.gateway.relay import ClientDisconnected, relay_anthropic, unless_disconnected
from tierwise.gateway.sse import StreamTracker
from tierwise.pricing import Settlement

DEFAULT_VERSION = "2023-06-01"
_PASS_HEADERS = ("request-id", "anthropic-organization-id")


def forward_headers(request: Request) -> dict[str, str]:
    """The client's ``anthropic-*`` headers (version, betas …); never its credentials."""
    headers = {k: v for k, v in request.headers.items() if k.startswith("anthropic-")}
    headers.setdefault("anthropic-version", DEFAULT_VERSION)
    return headers


MODEL_ID = re.compile(r"[\x21-\x7e]{1,256}")


def check_model(model: Any) -> str:
    """Model ids are printable ASCII (they also travel in response headers)."""
    if not isinstance(model, str) or not model:
        raise GatewayError(400, "model: Field required (a non-empty string)", param="model")
    if not MODEL_ID.fullmatch(model):
        raise GatewayError(
            400,
            "model: not a valid model id (printable ASCII, at most 256 characters)",
            param="model",
        )
    return model


def require_fields(body: dict[str, Any], *, count_only: bool = False) -> None:
    check_model(body.get("model"))
    if not count_only:
        max_tokens = body.get("max_tokens")
        if max_tokens is None:
            raise GatewayError(400, "max_tokens: Field required", param="max_tokens")
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 0:
            raise GatewayError(
                400, "max_tokens: Input should be a non-negative integer", param="max_tokens"
            )
        if "stream" in body and not isinstance(body["stream"], bool):
            raise GatewayError(400, "stream: Input should be a valid boolean", param="stream")
    messages = body.get("messages")
    if messages is None:
        raise GatewayError(400, "messages: Field required", param="messages")
    if not isinstance(messages, list):
        raise GatewayError(400, "messages: Input should be a valid list", param="messages")
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise GatewayError(
                400, f"messages.{i}: Input should be an object", param=f"messages.{i}"
            )
        if not isinstance(message.get("role"), str):
            raise GatewayError(
                400, f"messages.{i}.role: Field required", param=f"messages.{i}.role"
            )
        content = message.get("content")
        if not isinstance(content, str | list):
            raise GatewayError(
                400,
                f"messages.{i}.content: Input should be a string or a list of blocks",
                param=f"messages.{i}.content",
            )


def decision_headers(adm: Admission, attempt: Attempt | None, simulated: bool) -> dict[str, str]:
    target = attempt.target if attempt else (adm.targets[0] if adm.targets else None)
    headers = {
        "x-tierwise-request-id": adm.request_id,
        "x-tierwise-tier": (target.tier if target and target.tier else "none"),
        "x-tierwise-model": target.model if target else adm.requested_model,
        "x-tierwise-classifier": adm.classifier,
        "x-tierwise-confidence": "" if adm.confidence is None else f"{adm.confidence:.3f}",
    }
    if attempt and attempt.fallbacks:
        headers["x-tierwise-fallbacks"] = ",".join(attempt.fallbacks)
    if simulated:
        headers["x-tierwise-simulated"] = "true"
    return headers


async def messages(
    engine: Engine, request: Request, body: dict[str, Any], adm: Admission
) -> Response:
    headers = forward_headers(request)
    stream = bool(body.get("stream"))
    try:
        attempt = await unless_disconnected(request, engine.call(adm, body, headers, stream=stream))
    except ClientDisconnected as exc:
        exc.admission = adm
        raise
    reply = attempt.reply
    out_headers = decision_headers(adm, attempt, engine.upstream.simulated)
    for name in _PASS_HEADERS:
        if name in reply.headers:
            out_headers[name] = reply.headers[name]
    if reply.status >= 400 or not stream:
        data = await reply.read()
        if reply.status >= 400:
            error_type = _error_type(data)
            engine.record_upstream_error(adm, attempt, error_type)
            if "retry-after" in reply.headers:
                out_headers["retry-after"] = reply.headers["retry-after"]
            return Response(
                data, status_code=reply.status, media_type="application/json", headers=out_headers
            )
        message = _json(data)
        settlement = engine.record_answer(adm, attempt, message)
        out_headers["x-tierwise-cost-usd"] = cost_header(settlement)
        return Response(data, status_code=200, media_type="application/json", headers=out_headers)

    tracker = StreamTracker()
    assert reply.chunks is not None

    finished = engine.stream_recorder(adm, attempt, tracker)
    out_headers["cache-control"] = "no-cache"
    return StreamingResponse(
        relay_anthropic(reply.chunks, tracker, finished),
        status_code=200,
        media_type="text/event-stream; charset=utf-8",
        headers=out_headers,
    )


async def count_tokens(
    engine: Engine, request: Request, body: dict[str, Any], adm: Admission
) -> Response:
    headers = forward_headers(request)
    attempt = await engine.call(adm, body, headers, path="/v1/messages/count_tokens")
    data = await attempt.reply.read()
    out_headers = decision_headers(adm, attempt, engine.upstream.simulated)
    return Response(
        data, status_code=attempt.reply.status, media_type="application/json", headers=out_headers
    )


def _json(data: bytes) -> dict[str, Any]:
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise GatewayError(
            502, "upstream returned a body that is not JSON", error_type="api_error"
        ) from exc
    if not isinstance(value, dict):
        raise GatewayError(502, "upstream returned an unexpected JSON body", error_type="api_error")
    return value


def _error_type(data: bytes) -> str:
    try:
        value = orjson.loads(data)
        error = value.get("error") if isinstance(value, dict) else None
        kind = error.get("type") if isinstance(error, dict) else None
        return kind if isinstance(kind, str) else "api_error"
    except orjson.JSONDecodeError:
        return "api_error"


def cost_header(settlement: Settlement | None) -> str:
    if settlement is None or settlement.total_usd is None:
        return "unpriced"
    return str(settlement.total_usd)

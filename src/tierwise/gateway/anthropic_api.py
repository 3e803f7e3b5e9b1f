"""``POST /v1/messages`` and ``/v1/messages/count_tokens``: a faithful pass-through.

Only what routing needs is read; ``model`` is replaced (plus the tier's thinking/effort defaults
where the client set none) and every other field is forwarded as sent. Successful bodies and
SSE events are relayed byte for byte; usage is read on the side for the ledger.
"""

from __future__ import annotations

import re
import time
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from tierwise.gateway.attempts import Attempt
from tierwise.gateway.engine import Engine, Exchange
from tierwise.gateway.errors import GatewayError, anthropic_error_body
from tierwise.gateway.relay import RelayResponse, StreamRelay, unless_disconnected
from tierwise.gateway.sse import SSEEvent, error_event
from tierwise.gateway.upstream import UpstreamReply
from tierwise.gateway.validate import BadUpstreamReply, check_message
from tierwise.pricing import Settlement

DEFAULT_VERSION = "2023-06-01"
_PASS_HEADERS = ("request-id", "anthropic-organization-id")


def forward_headers(request: Request) -> dict[str, str]:
    """The client's ``anthropic-*`` headers (version, betas …); never its credentials."""
    headers = {k: v for k, v in request.headers.items() if k.startswith("anthropic-")}
    headers.setdefault("anthropic-version", DEFAULT_VERSION)
    return headers


def betas(headers: dict[str, str]) -> tuple[str, ...]:
    """The request's ``anthropic-beta`` values."""
    raw = headers.get("anthropic-beta", "")
    return tuple(b.strip() for b in raw.split(",") if b.strip())


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
    if not messages:
        raise GatewayError(
            400, "messages: List should have at least 1 item after validation", param="messages"
        )
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


def decision_headers(ex: Exchange, attempt: Attempt | None, simulated: bool) -> dict[str, str]:
    life = ex.life
    target = attempt.target if attempt else (ex.targets[0] if ex.targets else None)
    decision = life.decision
    headers = {
        "x-tierwise-request-id": life.request_id,
        "x-tierwise-tier": (target.tier if target and target.tier else "none"),
        "x-tierwise-model": target.model if target else (life.requested_model or ""),
        "x-tierwise-classifier": decision.classifier if decision else "none",
        "x-tierwise-confidence": "" if decision is None else f"{decision.confidence:.3f}",
    }
    if attempt and attempt.fallbacks:
        headers["x-tierwise-fallbacks"] = ",".join(attempt.fallbacks)
    if attempt is not None:
        changes = ex.answered_by(attempt.target)
        if changes:
            text = "; ".join(changes).replace("→", "->")
            headers["x-tierwise-adapted"] = text.encode("ascii", "replace").decode()[:2000]
    if simulated:
        headers["x-tierwise-simulated"] = "true"
    if ex.verdict is not None:
        headers.update(ex.verdict.headers())
    return headers


_HEADER_VALUE = re.compile(r"[\x20-\x7e]{1,200}")


def passed_headers(reply: UpstreamReply, names: tuple[str, ...]) -> dict[str, str]:
    """Upstream response headers worth passing on, when they look like what they claim to be
    (printable, short): an upstream's 8 MB ``request-id`` is not forwarded."""
    out = {}
    for name in names:
        value = reply.headers.get(name)
        if value is not None and _HEADER_VALUE.fullmatch(value):
            out[name] = value
    return out


def upstream_error(ex: Exchange, attempt: Attempt, data: bytes) -> tuple[int, str, str, bool]:
    """(status for the client, error type, message, whether the upstream's body is a valid
    error to pass on as it is) for an upstream reply that is not a 200, recorded."""
    reply = attempt.reply
    status = reply.status
    kind, message, valid = error_details(data)
    if not 400 <= status <= 599:
        # A redirect, a 1xx/2xx other than 200: not an answer the API gives to this call.
        kind, valid = "api_error", False
        message = f"upstream answered HTTP {status}, which is not a Messages API reply"
        status = 502
    ex.life.ended(
        status="error",
        target=attempt.target,
        error_type=kind,
        http_status=status,
        fallbacks=attempt.fallbacks,
        upstream_ms=attempt.upstream_ms,
        billed=False,
    )
    return status, kind, message, valid


def bad_reply(ex: Exchange, attempt: Attempt, problem: str, usage: Any = None) -> GatewayError:
    """A 200 whose body is not a valid reply: recorded as an error (the upstream may have
    billed it: the budget keeps what its usage says, or the whole hold when that is unknown)."""
    ex.life.ended(
        status="error",
        target=attempt.target,
        raw_usage=usage,
        error_type="bad_upstream_reply",
        http_status=502,
        fallbacks=attempt.fallbacks,
        upstream_ms=attempt.upstream_ms,
        billed=True,
    )
    return GatewayError(
        502, f"upstream returned an invalid reply: {problem}", error_type="api_error"
    )


async def answer(ex: Exchange, attempt: Attempt) -> tuple[dict[str, Any], bytes, str]:
    """Read and check a non-streaming 200, record it; (message, body, cost header).
    Raises GatewayError 502 when the reply is not a valid Messages API message."""
    data = await attempt.reply.read()
    try:
        message = check_message(data)
    except BadUpstreamReply as exc:
        raise bad_reply(ex, attempt, str(exc)) from exc
    model = message.get("model")
    ex.engine.origins.record(message.get("content"), model if isinstance(model, str) else "")
    if ex.life.capturing:
        ex.life.answer_text = "".join(
            b["text"] for b in message["content"] if b.get("type") == "text"
        )
    settlement = ex.life.ended(
        status="ok",
        target=attempt.target,
        raw_usage=message.get("usage"),
        model=message.get("model"),
        http_status=200,
        fallbacks=attempt.fallbacks,
        upstream_ms=attempt.upstream_ms,
        stop_reason=message.get("stop_reason"),
    )
    if ex.life.failed:
        raise GatewayError(
            502,
            "upstream returned an invalid reply: its usage is not valid",
            error_type="api_error",
        )
    await ex.observe_session(
        model if isinstance(model, str) else None,
        message.get("usage"),
        message.get("stop_reason"),
    )
    return message, data, cost_header(ex.life.settlement or settlement)


def relay_options(engine: Engine, ex: Exchange) -> dict[str, Any]:
    """What every dialect's :class:`StreamRelay` needs from the exchange."""
    return {
        "max_tokens": ex.max_tokens,
        "deadline": time.perf_counter() + ex.remaining_s,
        "origins": engine.origins,
        "max_event_bytes": engine.settings.gateway.upstream_max_event_bytes,
        "on_complete": ex.on_stream_complete,
    }


class AnthropicRelay(StreamRelay):
    """The upstream's bytes, event by event, unchanged."""

    def convert(self, event: SSEEvent, obj: dict[str, Any] | None) -> bytes:
        return event.raw

    def error(self, kind: str, message: str) -> bytes:
        return error_event(kind, message)


async def messages(engine: Engine, request: Request, ex: Exchange) -> Response:
    headers = forward_headers(request)
    stream = ex.life.stream
    attempt = await unless_disconnected(request, ex.call(headers, stream=stream))
    reply = attempt.reply
    out_headers = decision_headers(ex, attempt, engine.upstream.simulated)
    out_headers.update(passed_headers(reply, _PASS_HEADERS))
    if reply.status != 200:
        data = await reply.read()
        status, kind, message, valid = upstream_error(ex, attempt, data)
        out_headers.update(passed_headers(reply, ("retry-after",)))
        body = data if valid else anthropic_error_body(kind, message, ex.request_id)
        return Response(
            body, status_code=status, media_type="application/json", headers=out_headers
        )
    if not stream:
        _, data, cost = await answer(ex, attempt)
        out_headers["x-tierwise-cost-usd"] = cost
        return Response(data, status_code=200, media_type="application/json", headers=out_headers)
    out_headers["cache-control"] = "no-cache"
    relay = AnthropicRelay(ex.detach(), attempt, **relay_options(engine, ex))
    return RelayResponse(relay, headers=out_headers)


async def count_tokens(engine: Engine, request: Request, ex: Exchange) -> Response:
    headers = forward_headers(request)
    attempt = await ex.call(headers, path="/v1/messages/count_tokens")
    data = await attempt.reply.read()
    out_headers = decision_headers(ex, attempt, engine.upstream.simulated)
    ex.life.ended(status="ok", target=attempt.target, billed=False)
    return Response(
        data, status_code=attempt.reply.status, media_type="application/json", headers=out_headers
    )


def error_details(data: bytes) -> tuple[str, str, bool]:
    """(error type, message, valid) of an upstream error body; valid means it is the API's
    error shape and can be passed on unchanged."""
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError:
        return "api_error", "upstream returned an error whose body is not JSON", False
    error = value.get("error") if isinstance(value, dict) else None
    kind = error.get("type") if isinstance(error, dict) else None
    message = error.get("message") if isinstance(error, dict) else None
    if isinstance(kind, str) and isinstance(message, str) and len(kind) <= 64:
        return kind, message[:2000], value.get("type") == "error"
    return "api_error", "upstream returned an error in an unknown shape", False


def cost_header(settlement: Settlement | None) -> str:
    if settlement is None or settlement.total_usd is None:
        return "unpriced"
    return str(settlement.total_usd)

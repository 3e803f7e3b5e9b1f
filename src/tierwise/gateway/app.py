"""The ASGI app: routes, body limits, authentication, and error shapes per dialect."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Protocol

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tierwise.budgets import Budgets
from tierwise.config import Settings
from tierwise.gateway import access, anthropic_api, openai_api
from tierwise.gateway.access import RateLimiter
from tierwise.gateway.asgi import GatewayApp
from tierwise.gateway.engine import AUTO, Engine
from tierwise.gateway.errors import GatewayError, error_response
from tierwise.gateway.relay import ClientDisconnected
from tierwise.gateway.upstream import HttpUpstream, SimulatedUpstream, Upstream
from tierwise.keys import KeyInfo
from tierwise.router import Router, new_request_id
from tierwise.types import LedgerSink

log = logging.getLogger("tierwise.gateway")


class Authenticator(Protocol):
    """Gateway keys (:class:`tierwise.keys.KeyStore`): once any key exists, every request
    needs one; ``authenticate`` returns the live key or None."""

    def any_keys(self) -> bool: ...

    def authenticate(self, raw_key: str | None) -> KeyInfo | None: ...


class NoKeys:
    def any_keys(self) -> bool:
        return False

    def authenticate(self, raw_key: str | None) -> KeyInfo | None:
        return None


def is_loopback(host: str) -> bool:
    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def presented_key(request: Request) -> str | None:
    """``x-api-key`` wins over ``Authorization: Bearer`` when both are sent (as the API does)."""
    key = request.headers.get("x-api-key")
    if key:
        return key
    auth = request.headers.get("authorization", "")
    scheme, _, token = auth.partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


Handler = Callable[[Request], Awaitable[Response]]


class Gateway:
    def __init__(
        self,
        settings: Settings,
        *,
        upstream: Upstream | None = None,
        sink: LedgerSink | None = None,
        keys: Authenticator | None = None,
        budgets: Budgets | None = None,
    ) -> None:
        self.settings = settings
        if upstream is None:
            if settings.use_simulated_provider():
                upstream = SimulatedUpstream()
            else:
                assert settings.provider.api_key is not None
                upstream = HttpUpstream(
                    settings.provider.base_url or "https://api.anthropic.com",
                    settings.provider.api_key.get_secret_value(),
                    connect_timeout_s=settings.gateway.connect_timeout_s,
                )
        self.upstream = upstream
        self.keys = keys or NoKeys()
        self.router = Router(settings, provider=_NoProvider(), sink=None)
        self.engine = Engine(settings, self.router, upstream, sink, budgets)
        self._warned_open = False
        self.limiter = RateLimiter(settings.gateway.rate_limit_rpm)
        self.started = time.time()

    # -- plumbing -------------------------------------------------------------------------
    async def read_json(self, request: Request) -> dict[str, Any]:
        limit = self.settings.gateway.max_body_bytes
        length = request.headers.get("content-length")
        if length and length.isdigit() and int(length) > limit:
            raise GatewayError(413, f"request body is larger than the {limit}-byte limit")
        chunks: list[bytes] = []
        size = 0
        timeout_s = self.settings.gateway.body_timeout_s
        try:
            async with asyncio.timeout(timeout_s):
                async for chunk in request.stream():
                    size += len(chunk)
                    if size > limit:
                        raise GatewayError(
                            413, f"request body is larger than the {limit}-byte limit"
                        )
                    chunks.append(chunk)
        except TimeoutError as exc:
            raise GatewayError(
                408, f"request body not received within {timeout_s:g}s", error_type="timeout_error"
            ) from exc
        raw = b"".join(chunks)
        ctype = (
            request.headers.get("content-type", "application/json").split(";")[0].strip().lower()
        )
        if ctype and not ctype.endswith("json"):
            raise GatewayError(400, f"content-type must be application/json, got {ctype!r}")
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise GatewayError(400, f"request body is not valid JSON: {exc}") from exc
        if not isinstance(body, dict):
            raise GatewayError(400, "request body must be a JSON object")
        return body

    def authenticate(self, request: Request) -> KeyInfo | None:
        """The request's live key (None while no key was ever created), within its rate.
        Raises :class:`~tierwise.gateway.access.AccessDenied` (401; 429 after too many failures
        from one address; 503 when the keys cannot be read): never recorded in the ledger."""
        return access.gate(self).authenticate(request)

    def endpoint(
        self,
        dialect: str,
        handler: Callable[[Request, str], Awaitable[Response]],
        *,
        api: str | None = None,
    ) -> Handler:
        """Wrap a handler: errors become the dialect's error shape, and every model request
        that fails before an upstream reply is still recorded once (``api`` set)."""

        async def run(request: Request) -> Response:
            request_id = new_request_id()
            try:
                return await handler(request, request_id)
            except GatewayError as exc:
                error = exc
            except ClientDisconnected as gone:
                error = GatewayError(499, "client disconnected", error_type="client_disconnected")
                error.admission = gone.admission
                if api is not None:
                    self.engine.record_rejected(request_id, api, error, None)
                return Response(status_code=499)
            except Exception:
                log.exception("unhandled error in %s %s", request.method, request.url.path)
                error = GatewayError(
                    500, "internal error in the tierwise gateway", error_type="api_error"
                )
            if api is not None:
                self.engine.record_rejected(request_id, api, error, None)
            return error_response(error, dialect, request_id)

        return run

    # -- endpoints ------------------------------------------------------------------------
    async def messages(self, request: Request, request_id: str) -> Response:
        key = self.authenticate(request)
        body = await self.read_json(request)
        anthropic_api.require_fields(body)
        adm = await self.engine.admit(body, api="messages", request_id=request_id, key=key)
        return await anthropic_api.messages(self.engine, request, body, adm)

    async def count_tokens(self, request: Request, request_id: str) -> Response:
        self.authenticate(request)
        body = await self.read_json(request)
        anthropic_api.require_fields(body, count_only=True)
        adm = await self.engine.admit(body, api="count_tokens", request_id=request_id)
        return await anthropic_api.count_tokens(self.engine, request, body, adm)

    async def chat(self, request: Request, request_id: str) -> Response:
        key = self.authenticate(request)
        body = await self.read_json(request)
        return await openai_api.chat_completions(self.engine, request, body, request_id, key)

    async def models(self, request: Request, request_id: str) -> Response:
        self.authenticate(request)
        data = self.model_list()
        model_id = request.path_params.get("model_id")
        if model_id is not None:
            for item in data:
                if item["id"] == model_id:
                    return Response(orjson.dumps(item), media_type="application/json")
            raise GatewayError(404, f"model {model_id!r} not found", error_type="not_found_error")
        page = {
            "object": "list",
            "data": data,
            "has_more": False,
            "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None,
        }
        return Response(orjson.dumps(page), media_type="application/json")

    def model_list(self) -> list[dict[str, Any]]:
        """Virtual models first (auto, each tier), then the configured models.

        Each item carries both the Anthropic Models API fields and OpenAI's, so either SDK's
        ``models.list()`` reads it."""
        created = "2026-01-01T00:00:00Z"
        epoch = 1767225600

        def item(model_id: str, name: str) -> dict[str, Any]:
            return {
                "type": "model",
                "id": model_id,
                "display_name": name,
                "created_at": created,
                "object": "model",
                "created": epoch,
                "owned_by": "tierwise",
            }

        items = [item(AUTO, "tierwise auto router")]
        for tier in self.settings.tiers:
            items.append(item(tier.name, f"tierwise tier {tier.name} ({tier.model})"))
        seen = set()
        for tier in self.settings.tiers:
            if tier.model not in seen:
                seen.add(tier.model)
                info = self.router.catalogue.info(tier.model)
                items.append(item(tier.model, info.display_name if info else tier.model))
        return items

    async def health(self, request: Request) -> Response:
        body = {
            "status": "ok",
            "simulated": self.upstream.simulated,
            "tiers": self.settings.tier_names,
            "uptime_s": round(time.time() - self.started, 3),
        }
        return Response(orjson.dumps(body), media_type="application/json")

    async def not_found(self, request: Request, request_id: str) -> Response:
        raise GatewayError(
            404, f"no route for {request.method} {request.url.path}", error_type="not_found_error"
        )


_OPENAPI = b""


async def _openapi(request: Request) -> Response:
    global _OPENAPI  # noqa: PLW0603 - built once, on first use
    if not _OPENAPI:
        from tierwise.gateway.openapi import openapi_document

        _OPENAPI = orjson.dumps(openapi_document())
    return Response(_OPENAPI, media_type="application/json")


class _NoProvider:
    """The gateway's router only decides; calls go through the upstream relay."""

    name = "none"
    simulated = False

    async def complete(self, call: Any) -> Any:
        raise RuntimeError("the gateway router does not call providers directly")

    async def aclose(self) -> None:
        return None


def build_app(
    settings: Settings,
    *,
    upstream: Upstream | None = None,
    sink: LedgerSink | None = None,
    keys: Authenticator | None = None,
    budgets: Budgets | None = None,
    on_shutdown: Callable[[], Awaitable[None]] | None = None,
) -> Starlette:
    from tierwise.dashboard import dashboard_routes, feedback_route

    gw = Gateway(settings, upstream=upstream, sink=sink, keys=keys, budgets=budgets)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await gw.upstream.aclose()
            if on_shutdown is not None:
                await on_shutdown()

    not_found = gw.endpoint("anthropic", gw.not_found)
    routes = [
        Route(
            "/v1/messages", gw.endpoint("anthropic", gw.messages, api="messages"), methods=["POST"]
        ),
        Route(
            "/v1/messages/count_tokens", gw.endpoint("anthropic", gw.count_tokens), methods=["POST"]
        ),
        Route(
            "/v1/chat/completions",
            gw.endpoint("openai", gw.chat, api="chat.completions"),
            methods=["POST"],
        ),
        Route("/v1/models", gw.endpoint("anthropic", gw.models), methods=["GET"]),
        Route("/v1/models/{model_id:path}", gw.endpoint("anthropic", gw.models), methods=["GET"]),
        Route("/health", gw.health, methods=["GET"]),
        Route("/metrics", access.metrics_route(gw), methods=["GET"]),
        Route("/openapi.json", _openapi, methods=["GET"]),
        feedback_route(gw),
        *dashboard_routes(gw),
        Route("/{path:path}", not_found, methods=["GET", "POST", "PUT", "DELETE", "PATCH"]),
    ]
    app = GatewayApp(routes=routes, lifespan=lifespan)
    app.state.gateway = gw
    return app

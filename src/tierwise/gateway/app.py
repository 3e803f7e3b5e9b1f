"""The ASGI app: routes, body limits, authentication, and error shapes per dialect."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tierwise.budgets import Budgets
from tierwise.config import Settings
from tierwise.gateway import access, anthropic_api, buffers, openai_api, responses_api, telemetry
from tierwise.gateway.asgi import GatewayApp
from tierwise.gateway.attempts import Caller, Cooldowns
from tierwise.gateway.engine import AUTO, Engine
from tierwise.gateway.errors import GatewayError, error_response
from tierwise.gateway.relay import ClientDisconnected
from tierwise.gateway.upstream import HttpUpstream, SimulatedUpstream, Upstream
from tierwise.gateway.upstream_provider import UpstreamProvider
from tierwise.keys import KeyInfo
from tierwise.lifecycle import Books, Capture, Observer
from tierwise.router import Router, new_request_id
from tierwise.sessions import SessionRouter
from tierwise.types import LedgerSink

if TYPE_CHECKING:
    from tierwise.shadow.runner import ShadowEvaluator

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
        observers: list[Observer] | None = None,
        capture: Capture | None = None,
    ) -> None:
        self.settings = settings
        if upstream is None:
            if settings.use_simulated_provider():
                upstream = SimulatedUpstream()
            else:
                # Limits, the connection cap and any HTTPS proxy (HTTPS_PROXY / NO_PROXY, read
                # once, here) come from the settings.
                upstream = HttpUpstream.from_settings(settings, os.environ)
        self.upstream = upstream
        self.keys = keys or NoKeys()
        gw = settings.gateway
        buffers.configure(gw.upstream_max_buffered_bytes)
        caller = Caller(
            upstream,
            Cooldowns(gw.cooldown_after_failures, gw.cooldown_s),
            max_attempts=gw.max_attempts,
            attempt_timeout_s=gw.attempt_timeout_s,
            retry_after_cap_s=gw.retry_after_cap_s,
            max_event_bytes=gw.upstream_max_event_bytes,
        )
        # Classifiers that call a model (llm, cascade) go through the gateway's own upstream.
        provider = UpstreamProvider(
            caller,
            anthropic_version=gw.upstream_anthropic_version,
            timeout_s=settings.classifier.llm_timeout_s,
        )
        self.router = Router(settings, provider=provider, sink=None)
        catalogue = self.router.catalogue
        known = {t.model for t in settings.tiers} | {m.model for m in catalogue.models()}
        for info in catalogue.models():
            known.update(info.aliases)
        self.books = Books(
            catalogue=catalogue,
            baseline_model=settings.baseline_model(),
            budgets=budgets,
            sink=sink,
            observers=[
                telemetry.MetricsObserver(known, set(settings.tier_names)),
                *(observers or ()),
            ],
            simulated=upstream.simulated,
            capture=capture,
        )
        self.sink = sink
        self.sessions = SessionRouter(settings, catalogue) if settings.sessions.enabled else None
        self.engine = Engine(
            settings, self.router, upstream, self.books, caller=caller, sessions=self.sessions
        )
        self.access = access.Gate(settings, self.keys)
        self.started = time.time()
        # Shadow evaluation (off by default): this gateway's capture and one more observer.
        self.shadow: ShadowEvaluator | None = None
        if settings.shadow.enabled:
            from tierwise.shadow.runner import attach

            self.shadow = attach(self)

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
        self, dialect: str, handler: Callable[[Request, str], Awaitable[Response]]
    ) -> Handler:
        """Wrap a handler: errors become the dialect's error shape. (Model requests record
        themselves: their :class:`~tierwise.gateway.engine.Exchange` closes on every path.)"""

        slices = self.engine.slices

        async def run(request: Request) -> Response:
            await slices.turn()  # a burst of arrivals: started turn by turn (slices.py)
            request_id = new_request_id()
            try:
                return await handler(request, request_id)
            except GatewayError as exc:
                error = exc
            except ClientDisconnected:
                return Response(status_code=499)
            except Exception:
                log.exception("unhandled error in %s %s", request.method, request.url.path)
                error = GatewayError(
                    500, "internal error in the tierwise gateway", error_type="api_error"
                )
            return error_response(error, dialect, request_id)

        return run

    # -- endpoints ------------------------------------------------------------------------
    async def messages(self, request: Request, request_id: str) -> Response:
        key = self.authenticate(request)
        async with self.engine.exchange(api="messages", request_id=request_id, key=key) as ex:
            body = await self.read_json(request)
            anthropic_api.require_fields(body)
            headers = anthropic_api.forward_headers(request)
            await ex.admit(
                body,
                api_version=headers["anthropic-version"],
                betas=anthropic_api.betas(headers),
                headers=request.headers,
            )
            return await anthropic_api.messages(self.engine, request, ex)

    async def count_tokens(self, request: Request, request_id: str) -> Response:
        key = self.authenticate(request)
        ex = self.engine.exchange(api="count_tokens", request_id=request_id, key=None)
        ex.life.silent = True  # not a model request: no ledger row, no budget
        del key
        async with ex:
            body = await self.read_json(request)
            anthropic_api.require_fields(body, count_only=True)
            await ex.admit(body)
            return await anthropic_api.count_tokens(self.engine, request, ex)

    async def chat(self, request: Request, request_id: str) -> Response:
        key = self.authenticate(request)
        async with self.engine.exchange(
            api="chat.completions", request_id=request_id, key=key
        ) as ex:
            body = await self.read_json(request)
            return await openai_api.chat_completions(self.engine, request, ex, body)

    async def responses(self, request: Request, request_id: str) -> Response:
        key = self.authenticate(request)
        async with self.engine.exchange(api="responses", request_id=request_id, key=key) as ex:
            body = await self.read_json(request)
            return await responses_api.responses(self.engine, request, ex, body)

    async def root(self, request: Request) -> Response:
        """``GET /`` and ``HEAD /``: clients probe the base URL before their first call."""
        body = {"service": "tierwise", "health": "/health", "docs": "/openapi.json"}
        return Response(orjson.dumps(body), media_type="application/json")

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
        """Liveness plus the state of what requests depend on: ``ok``, ``degraded`` (serving,
        but a dependency is failing: budgets refuse budgeted keys, or the ledger is behind)
        or ``failing`` (503: requests cannot be recorded). Under ``tierwise serve`` the
        connection protocol answers ``GET /health`` itself with :meth:`health_reply`
        (tierwise.gateway.connections), so a health check never waits behind request tasks."""
        status, body = self.health_reply()
        return Response(body, status_code=status, media_type="application/json")

    def health_reply(self) -> tuple[int, bytes]:
        """``(status, JSON body)`` of ``GET /health``; synchronous and cheap."""
        parts: dict[str, Any] = {}
        budgets = self.books.budgets
        if budgets is not None:
            b = budgets.health()
            parts["budgets"] = {
                "status": b.status,
                "reason": b.reason,
                "pending_settlements": b.pending_settlements,
            }
        ledger_health: Callable[[], Any] | None = getattr(self.books.sink, "health", None)
        if ledger_health is not None:
            h = ledger_health()
            parts["ledger"] = {"status": h.status, "reason": h.reason}
        states = [p["status"] for p in parts.values()]
        status = "failing" if "failing" in states else "degraded" if "degraded" in states else "ok"
        body = {
            "status": status,
            "simulated": self.upstream.simulated,
            "tiers": self.settings.tier_names,
            "uptime_s": round(time.time() - self.started, 3),
            **parts,
        }
        return (503 if status == "failing" else 200), orjson.dumps(body)

    async def not_found(self, request: Request, request_id: str) -> Response:
        allowed = _METHODS.get(request.url.path.rstrip("/") or "/")
        if allowed is not None:
            raise GatewayError(
                405,
                f"{request.method} is not allowed on {request.url.path}; use {allowed}",
                error_type="invalid_request_error",
                headers={"allow": allowed},
            )
        raise GatewayError(
            404, f"no route for {request.method} {request.url.path}", error_type="not_found_error"
        )


_OPENAPI = b""
_METHODS = {
    "/v1/messages": "POST",
    "/v1/messages/count_tokens": "POST",
    "/v1/chat/completions": "POST",
    "/v1/responses": "POST",
    "/": "GET, HEAD",
    "/v1/models": "GET",
    "/health": "GET",
    "/metrics": "GET",
    "/openapi.json": "GET",
}


async def _openapi(request: Request) -> Response:
    global _OPENAPI  # noqa: PLW0603 - built once, on first use
    if not _OPENAPI:
        from tierwise.gateway.openapi import openapi_document

        _OPENAPI = orjson.dumps(openapi_document())
    return Response(_OPENAPI, media_type="application/json")


def build_app(
    settings: Settings,
    *,
    upstream: Upstream | None = None,
    sink: LedgerSink | None = None,
    keys: Authenticator | None = None,
    budgets: Budgets | None = None,
    observers: list[Observer] | None = None,
    on_shutdown: Callable[[], Awaitable[None]] | None = None,
) -> Starlette:
    from tierwise.dashboard import dashboard_routes, feedback_route

    gw = Gateway(
        settings, upstream=upstream, sink=sink, keys=keys, budgets=budgets, observers=observers
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            if gw.shadow is not None:  # before the upstream and the ledger it uses
                await gw.shadow.aclose()
            await gw.upstream.aclose()
            if gw.sessions is not None:
                await gw.sessions.aclose()
            if budgets is not None:
                await budgets.aclose()
            if on_shutdown is not None:
                await on_shutdown()

    not_found = gw.endpoint("anthropic", gw.not_found)
    routes = [
        Route("/v1/messages", gw.endpoint("anthropic", gw.messages), methods=["POST"]),
        Route(
            "/v1/messages/count_tokens", gw.endpoint("anthropic", gw.count_tokens), methods=["POST"]
        ),
        Route(
            "/v1/chat/completions",
            gw.endpoint("openai", gw.chat),
            methods=["POST"],
        ),
        Route("/v1/responses", gw.endpoint("openai", gw.responses), methods=["POST"]),
        Route("/", gw.root, methods=["GET", "HEAD"]),
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
    app.tierwise_health = gw.health_reply  # answered by the connection protocol itself
    return app

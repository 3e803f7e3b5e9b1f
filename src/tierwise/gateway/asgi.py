"""The Starlette application with a direct path to the routes that carry the traffic.

Profiled under load, Starlette's generic layers in front of an endpoint (the error and
exception middlewares, then the router trying each route's pattern in turn) cost about 6 % of
the gateway's CPU per request. :class:`GatewayApp` sends a request whose method and path
match a fixed route exactly (``POST /v1/messages``, ``GET /health``, …) straight to that
route's own ASGI app, the one the router would have picked, and everything else through the
full stack. The routes' endpoints catch their own errors and answer in the API's error shape,
so the middlewares had nothing to do for them. With any user middleware added, or a
``root_path``, every request takes the full stack.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from starlette.applications import Starlette
from starlette.routing import Route

Scope = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Any, Any], Awaitable[None]]


class GatewayApp(Starlette):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._direct: dict[tuple[str, str], ASGIApp] = {}
        # ``GET /health`` answered by the connection protocol (tierwise.gateway.connections):
        # ``() -> (status, JSON body)``, set by the gateway.
        self.tierwise_health: Callable[[], tuple[int, bytes]] | None = None
        for route in self.routes:
            if not isinstance(route, Route) or "{" in route.path or not route.methods:
                continue
            for method in route.methods:
                # The first route for a (method, path) wins, as it does in the router.
                self._direct.setdefault((method, route.path), route.app)

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and not scope.get("root_path") and not self.user_middleware:
            app = self._direct.get((scope["method"], scope["path"]))
            if app is not None:
                scope["app"] = self
                await app(scope, receive, send)
                return
        await super().__call__(scope, receive, send)

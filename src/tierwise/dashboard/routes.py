"""Routes for the dashboard and for feedback, added to the gateway by
:func:`tierwise.gateway.app.build_app`.

``GET /dashboard``                the page (``static/index.html``), or a login form
``POST /dashboard/login``         a gateway key from the form → a session cookie
``POST /dashboard/logout``        ends the session
``GET /dashboard/data?since=24h`` everything the page shows, as JSON (money as exact strings)
``GET /dashboard/static/NAME``    the page's script and style sheet
``POST /v1/feedback``             ``{"request_id", "score" (0–1), "comment"?}`` for one answer

**Access.** While no gateway key was ever created the dashboard is open, like the API
(``tierwise serve`` refuses a non-loopback address without keys). Once one was, the data need a
live key: the API's ``x-api-key`` / ``Authorization: Bearer`` header, or a session cookie. A
browser gets the cookie by opening ``/dashboard?key=tw-…`` once (answered with a redirect to the
same URL without the key) or through the login form. The cookie is ``HttpOnly``,
``SameSite=Strict``, limited to ``/dashboard``, and holds no key: it is the key's *name* and
*role*, an expiry, and an HMAC of the three under the key's stored SHA-256, so every gateway
replica can check it and revoking the key ends the session. Keys are never logged. Wrong keys
(header, ``?key=``, login form) count as failed authentications of the client's address, like
the API's (:mod:`tierwise.gateway.access`); when the key table cannot be read, 503.

**Scope.** A ``user`` key sees only its own requests: every number, chart, table and the
latency and quality figures are computed over its rows alone (:class:`KeyScopedStore`), and the
keys table shows its own row and budget. An ``admin`` key (``tierwise keys create --admin``)
sees every key's. ``dropped_requests`` (rows the ledger could not take) cannot be attributed to
a key and is the gateway's total for everyone.

**The ledger from async code.** Every query runs in a worker thread
(:func:`asyncio.to_thread`), on the gateway ledger's own connection (thread-safe); before
reading, the write-behind queue is flushed (at most 2 s), so the page shows requests that
were answered a moment ago.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import datetime as dt
import hashlib
import hmac
import html
import logging
import time
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlencode

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tierwise.errors import InputError
from tierwise.gateway.access import AccessDenied, Viewer, gate, presented_key
from tierwise.gateway.errors import GatewayError
from tierwise.ledger.db import Database
from tierwise.ledger.store import LedgerStore
from tierwise.quality import FeedbackError, parse_feedback

if TYPE_CHECKING:
    from tierwise.gateway.app import Gateway
    from tierwise.keys import KeyInfo

log = logging.getLogger("tierwise.dashboard")

COOKIE = "tierwise_dashboard"
SESSION_S = 12 * 3600
RECENT_DEFAULT = 50
RECENT_MAX = 500
TOP_KEYS = 10
FLUSH_WAIT_S = 2.0
_STATIC = {
    "app.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
    "favicon.svg": "image/svg+xml",
}
_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
_HTML_HEADERS = {
    "content-security-policy": _CSP,
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "cache-control": "no-store",
    "x-frame-options": "DENY",
}


def _asset(name: str) -> bytes:
    return resources.files("tierwise.dashboard").joinpath("static", name).read_bytes()


# -- the ledger ---------------------------------------------------------------------------
def ledger_store(gw: Gateway) -> LedgerStore | None:
    """The gateway ledger's store (None when the gateway records elsewhere or nowhere)."""
    store = getattr(gw.engine.sink, "store", None)
    return store if isinstance(store, LedgerStore) else None


async def _flush(gw: Gateway) -> None:
    flush: Callable[[float], bool] | None = getattr(gw.engine.sink, "flush", None)
    if flush is not None:
        await asyncio.to_thread(flush, FLUSH_WAIT_S)


class KeyScopedStore(LedgerStore):
    """The ledger seen by one key: every query over ``requests`` (and the feedback joined to
    it) is limited to that key's rows. It shares the gateway's connection."""

    def __init__(self, db: Database, key_name: str) -> None:
        super().__init__(db)
        self.key_name = key_name

    def _window(
        self, since: dt.datetime | None, until: dt.datetime | None, column: str = "ts"
    ) -> tuple[str, list[Any]]:
        where, params = super()._window(since, until, column)
        prefix = column.rpartition(".")[0]
        key_column = f"{prefix}.key_name" if prefix else "key_name"
        return f"{where} AND {key_column} = ?", [*params, self.key_name]

    def dropped(self, since: dt.datetime | None = None, until: dt.datetime | None = None) -> int:
        # ledger_gaps has no key: the gateway's total (see the module's docstring)
        return LedgerStore(self.db).dropped(since, until)


# -- sessions -----------------------------------------------------------------------------
def _mac(secret_hex: str, name: str, role: str, expires: int) -> str:
    message = f"tierwise-dashboard|{name}|{role}|{expires}".encode()
    return hmac.new(bytes.fromhex(secret_hex), message, hashlib.sha256).hexdigest()


def session_token(secret_hex: str, name: str, role: str, expires: int) -> str:
    encoded = base64.urlsafe_b64encode(name.encode()).decode().rstrip("=")
    return f"{encoded}.{role}.{expires}.{_mac(secret_hex, name, role, expires)}"


def _live_key(gw: Gateway, name: str) -> tuple[str, KeyInfo] | None:
    live_key: Callable[[str], tuple[str, KeyInfo] | None] | None = getattr(
        gw.keys, "live_key", None
    )
    return live_key(name) if live_key is not None else None


def _session_viewer(gw: Gateway, token: str | None) -> Viewer | None:
    """Who a valid, unexpired session cookie was issued to (its key must still be live)."""
    if not token or token.count(".") != 3 or len(token) > 512:
        return None
    encoded, role, expires_text, mac = token.split(".")
    try:
        name = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)).decode()
        expires = int(expires_text)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        return None
    if expires < time.time():
        return None
    live = _live_key(gw, name)
    if live is None:
        return None
    secret, info = live
    if info.role != role or not hmac.compare_digest(mac, _mac(secret, name, role, expires)):
        return None
    return Viewer(name, info.admin)


def _viewer(gw: Gateway, request: Request) -> Viewer | None:
    """Who is asking (None: nobody logged in). Blocking (the key table may be read): call it
    in a thread. A wrong key in the headers raises :class:`AccessDenied` (401/429), like the
    API; the key table unreadable raises it too (503)."""
    access = gate(gw)
    if not access.required():
        return Viewer(None, True)
    if presented_key(request):
        return access.viewer(access.identify(request))
    return _session_viewer(gw, request.cookies.get(COOKIE))


def _cookie_response(gw: Gateway, request: Request, raw_key: str, target: str) -> Response:
    try:
        key = gate(gw).identify(request, raw_key)
    except AccessDenied as exc:
        return _login_page(_denied_text(exc), status=exc.status, headers=exc.headers)
    live = None if key is None else _live_key(gw, key.name)
    if key is None or live is None:  # the gateway is open: there is nothing to log in to
        return Response(status_code=303, headers={"location": target, **_HTML_HEADERS})
    secret, info = live
    expires = int(time.time()) + SESSION_S
    response = Response(status_code=303, headers={"location": target, **_HTML_HEADERS})
    secure = request.url.scheme == "https" or (
        request.headers.get("x-forwarded-proto", "").lower() == "https"
    )
    response.set_cookie(
        COOKIE,
        session_token(secret, info.name, info.role, expires),
        max_age=SESSION_S,
        path="/dashboard",
        httponly=True,
        samesite="strict",
        secure=secure,
    )
    return response


def _denied_text(exc: AccessDenied) -> str:
    if exc.status == 401:
        return "That key is not a live gateway key."
    return exc.message


def _login_page(
    message: str = "", status: int = 401, headers: dict[str, str] | None = None
) -> Response:
    page = _asset("login.html").decode()
    error = f'<p class="login-error" role="alert">{html.escape(message)}</p>' if message else ""
    return Response(
        page.replace("<!--error-->", error),
        status_code=status,
        media_type="text/html; charset=utf-8",
        headers={**_HTML_HEADERS, **(headers or {})},
    )


def _page_target(request: Request) -> str:
    """``/dashboard`` with the query string minus ``key``."""
    kept = [(k, v) for k, v in request.query_params.multi_items() if k != "key"]
    return "/dashboard" + (f"?{urlencode(kept)}" if kept else "")


# -- handlers -----------------------------------------------------------------------------
def dashboard_routes(gw: Gateway) -> list[Route]:
    """The dashboard's routes for one gateway."""

    async def page(request: Request) -> Response:
        raw_key = request.query_params.get("key")
        if raw_key is not None:
            return await asyncio.to_thread(
                _cookie_response, gw, request, raw_key, _page_target(request)
            )
        try:
            viewer = await asyncio.to_thread(_viewer, gw, request)
        except AccessDenied as exc:
            return _login_page(_denied_text(exc), status=exc.status, headers=exc.headers)
        if viewer is None:
            return _login_page()
        return Response(
            _asset("index.html"), media_type="text/html; charset=utf-8", headers=_HTML_HEADERS
        )

    async def login(request: Request) -> Response:
        body = b""
        timeout_s = gw.settings.gateway.body_timeout_s
        try:
            async with asyncio.timeout(timeout_s):
                async for chunk in request.stream():
                    body += chunk
                    if len(body) > 4096:
                        return _login_page("That form is too large.", status=413)
        except TimeoutError:
            return _login_page(f"The form was not received within {timeout_s:g}s.", status=408)
        fields = parse_qs(body.decode("utf-8", "replace"))
        raw_key = (fields.get("key") or [""])[0].strip()
        if not raw_key:
            return _login_page("Enter a gateway key.")
        return await asyncio.to_thread(_cookie_response, gw, request, raw_key, "/dashboard")

    async def logout(request: Request) -> Response:
        del request
        response = Response(status_code=303, headers={"location": "/dashboard", **_HTML_HEADERS})
        response.delete_cookie(COOKIE, path="/dashboard", httponly=True, samesite="strict")
        return response

    async def static(request: Request) -> Response:
        name = request.path_params["name"]
        media_type = _STATIC.get(name)
        if media_type is None:
            return Response(b"not found", status_code=404, media_type="text/plain")
        return Response(
            _asset(name),
            media_type=media_type,
            headers={"cache-control": "no-cache", "x-content-type-options": "nosniff"},
        )

    async def data_viewer(request: Request) -> Viewer | Response:
        try:
            viewer = await asyncio.to_thread(_viewer, gw, request)
        except AccessDenied as exc:
            return _json({"error": exc.message}, exc.status, exc.headers)
        return _json({"error": "log in with a gateway key"}, 401) if viewer is None else viewer

    async def data(request: Request) -> Response:
        viewer = await data_viewer(request)
        if isinstance(viewer, Response):
            return viewer
        store = ledger_store(gw)
        if store is None:
            return _json({"error": "this gateway has no ledger (ledger.enabled = false)"}, 503)
        since_text = request.query_params.get("since", "24h")
        try:
            limit = int(request.query_params.get("limit", RECENT_DEFAULT))
        except ValueError:
            return _json({"error": "limit: expected an integer"}, 400)
        limit = max(1, min(limit, RECENT_MAX))
        await _flush(gw)
        try:
            body = await asyncio.to_thread(
                collect, gw, store, since_text, limit, dt.datetime.now(dt.UTC), viewer
            )
        except InputError as exc:
            return _json({"error": str(exc)}, 400)
        except Exception:
            log.exception("dashboard data could not be read from the ledger")
            return _json({"error": "the ledger could not be read; see the gateway's log"}, 500)
        body["viewer"] = viewer.name
        body["role"] = "admin" if viewer.admin else "user"
        return _json(body, 200)

    return [
        Route("/dashboard", page, methods=["GET"]),
        Route("/dashboard/", page, methods=["GET"]),
        Route("/dashboard/login", login, methods=["POST"]),
        Route("/dashboard/logout", logout, methods=["POST"]),
        Route("/dashboard/data", data, methods=["GET"]),
        Route("/dashboard/static/{name}", static, methods=["GET"]),
    ]


def _json(body: dict[str, Any], status: int, headers: dict[str, str] | None = None) -> Response:
    return Response(
        orjson.dumps(body),
        status_code=status,
        media_type="application/json",
        headers={"cache-control": "no-store", **(headers or {})},
    )


def collect(
    gw: Gateway,
    store: LedgerStore,
    since_text: str,
    limit: int,
    now: dt.datetime,
    viewer: Viewer | None = None,
) -> dict[str, Any]:
    """Everything the page shows to ``viewer`` (all of it for an admin or an open gateway;
    a user key's own rows otherwise). Blocking: run it in a thread."""
    from tierwise.budgets import period_bounds
    from tierwise.quality import quality_report
    from tierwise.reports import build_report, build_series, parse_since

    viewer = viewer or Viewer(None, True)
    if not viewer.admin and viewer.name is not None:
        store = KeyScopedStore(store.db, viewer.name)
    settings = gw.settings
    since = parse_since(since_text, now)
    tiers = settings.tier_names
    report = build_report(
        store,
        since=since,
        by="key",
        catalogue=gw.router.catalogue,
        tier_order=tiers,
    )
    start = since
    if start is None:  # "all": from the first row, hourly while that is recent
        first = store.entries(limit=1)
        start = first[0].ts if first else now
    bucket = "hour" if now - start <= dt.timedelta(days=2) else "day"
    series_since = since
    if since is None and bucket == "hour":  # at least half a day on the axis
        series_since = min(start, now - dt.timedelta(hours=11))
    series = build_series(store, since=series_since, bucket=bucket, tier_order=tiers, now=now)
    latency = {
        column: {
            "all": store.latency_percentiles(column, since=since).get("all", {"n": 0}),
            "by_tier": store.latency_percentiles(column, "tier", since=since),
        }
        for column in ("decision_ms", "upstream_ms")
    }
    recent = store.recent(limit, since=since)
    scores = store.feedback_scores(request_ids=[e.request_id for e in recent])
    keys: list[dict[str, Any]] = []
    listing: Callable[[], list[KeyInfo]] | None = getattr(gw.keys, "list", None)
    budgets = {
        k.name: k
        for k in (listing() if listing is not None else [])
        if viewer.admin or k.name == viewer.name
    }
    groups = report.get("groups", {})
    ranked = sorted(groups.items(), key=lambda kv: (-float(kv[1]["cost_usd"]), kv[0]))
    names = [name for name, _ in ranked[:TOP_KEYS]]
    names += [n for n, k in sorted(budgets.items()) if k.budget_usd is not None and n not in names]
    for name in names:
        group = groups.get(name, {"requests": 0, "cost_usd": "0"})
        info = budgets.get(name)
        row: dict[str, Any] = {
            "name": name,
            "requests": group["requests"],
            "cost_usd": group["cost_usd"],
            "budget_usd": None,
            "period": None,
            "period_spent_usd": None,
        }
        if info is not None and info.budget_usd is not None:
            _, start, _ = period_bounds(info.period, now)
            row["budget_usd"] = format(info.budget_usd, "f")
            row["period"] = info.period
            row["period_spent_usd"] = format(store.spent(name, start), "f")
        keys.append(row)
    report.pop("groups", None)
    report.pop("by", None)
    return {
        "generated_at": now.isoformat(),
        "window": since_text,
        "tiers": [
            {"name": t.name, "model": t.model, "description": t.description} for t in settings.tiers
        ],
        "baseline_model": settings.baseline_model(),
        "simulated_upstream": gw.upstream.simulated,
        "keys_required": viewer.name is not None,
        "report": report,
        "series": series,
        "latency": latency,
        "quality": quality_report(store, since=since, tier_order=tiers),
        # shadow evaluation's sampling and today's budget (None when it is off)
        "shadow_runner": gw.shadow.stats() if gw.shadow is not None else None,
        "keys": keys,
        "recent": [
            {
                "request_id": e.request_id,
                "ts": e.ts.isoformat(),
                "source": e.source,
                "api": e.api,
                "key": e.key_name,
                "tier": e.tier,
                "model": e.model,
                "classifier": e.classifier,
                "confidence": e.confidence,
                "reason": e.reason,
                "cost_usd": None if e.total_cost_usd is None else format(e.total_cost_usd, "f"),
                "saved_usd": None if e.saved_usd is None else format(e.saved_usd, "f"),
                "status": e.status,
                "error_type": e.error_type,
                "http_status": e.http_status,
                "decision_ms": e.decision_ms,
                "upstream_ms": e.upstream_ms,
                "streaming": e.streaming,
                "simulated": e.simulated,
                "feedback": scores.get(e.request_id),
            }
            for e in recent
        ],
    }


# -- feedback -----------------------------------------------------------------------------
def feedback_route(gw: Gateway) -> Route:
    """``POST /v1/feedback``: authenticated like the API, errors in the Anthropic shape (400
    naming the field, 404 for a request this key cannot see, 503 without a ledger)."""

    async def handle(request: Request, request_id: str) -> Response:
        del request_id  # feedback is not a model request: it gets no ledger row of its own
        key = gw.authenticate(request)
        body = await gw.read_json(request)
        try:
            feedback = parse_feedback(body)
        except FeedbackError as exc:
            raise GatewayError(400, str(exc), param=exc.field) from exc
        store = ledger_store(gw)
        if store is None:
            raise GatewayError(503, "feedback needs the ledger, which this gateway does not use")
        row = await asyncio.to_thread(store.get, feedback.request_id)
        if row is None:  # answered a moment ago: its row may still be queued
            await _flush(gw)
            row = await asyncio.to_thread(store.get, feedback.request_id)
        if row is None or (key is not None and row.key_name != key.name):
            raise GatewayError(
                404, f"request_id: no request {feedback.request_id!r}", param="request_id"
            )
        await asyncio.to_thread(
            store.add_feedback,
            feedback.request_id,
            feedback.score,
            comment=feedback.comment,
            source="api",
            key_name=None if key is None else key.name,
        )
        reply = {
            "type": "feedback",
            "request_id": feedback.request_id,
            "score": feedback.score,
            "tier": row.tier,
            "model": row.model,
        }
        return Response(orjson.dumps(reply), media_type="application/json")

    endpoint: Callable[[Request], Awaitable[Response]] = gw.endpoint("anthropic", handle)
    return Route("/v1/feedback", endpoint, methods=["POST"])

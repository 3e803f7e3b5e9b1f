"""Who may use the gateway: the authentication policy, rate limits on keys and on failed
authentication, and ``/metrics`` behind an admin key.

**The policy** (:class:`Gate`):

* *Open* only while no gateway key was ever created: then every request is accepted (and
  ``tierwise serve`` refuses a non-loopback address unless ``--insecure``). Once a key exists,
  revoked or not, every request needs a live one (:meth:`tierwise.keys.KeyStore.any_keys` never
  goes back to false): revoking the last key leaves a gateway that accepts nothing.
* *Fails closed*: when the key table cannot be read (database failing, its file deleted or
  replaced) every request is answered 503 naming the reason, never let through.
* *Failed authentication is throttled per client address* (``gateway.auth_failures_per_minute``,
  a token bucket per address, IPv6 per /64): past it the answer is 429 with ``retry-after``
  instead of 401. A valid key is always checked first, so an attacker sharing an address (a
  NAT, a proxy) cannot lock out the clients that have a key. The buckets live in an LRU table of
  :data:`MAX_TRACKED_CLIENTS` addresses: memory is bounded, and churn through many addresses only
  forgets the least recently seen ones.
* Every refusal is counted in ``tierwise_auth_failures_total{reason}`` (``missing``,
  ``invalid``, ``throttled``, ``keys_unavailable``): a fixed label set. Refusals raise
  :class:`AccessDenied`, which the request path must not record in the ledger: an anonymous
  flood would otherwise write one row per request.

**/metrics** needs an *admin* key once keys exist (``tierwise keys create --admin``;
Prometheus sends it with ``authorization: {credentials_file: …}``): the page shows every key's
traffic and spend in aggregate, so a user key is refused with 403. A separate metrics port was
the alternative; one port keeps ``--workers N`` (one shared socket) and the firewall simple, and
Prometheus speaks bearer tokens natively. While the gateway is open, ``/metrics`` is open too.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from prometheus_client import Counter
from starlette.requests import Request
from starlette.responses import Response

from tierwise.gateway.errors import GatewayError, error_response

if TYPE_CHECKING:
    from tierwise.config import Settings
    from tierwise.keys import KeyInfo

log = logging.getLogger("tierwise.gateway")

#: client addresses whose failed-authentication bucket is remembered (LRU beyond that)
MAX_TRACKED_CLIENTS = 16_384
#: names (keys, or client addresses while the gateway is open) with a request-rate bucket
MAX_TRACKED_NAMES = 16_384

AUTH_FAILURE_REASONS = ("missing", "invalid", "throttled", "keys_unavailable")
AUTH_FAILURES = Counter(
    "tierwise_auth_failures_total",
    "Requests refused by authentication: no key, a wrong key, throttled after too many "
    "failures from one address, or the key table unreadable (fail closed)",
    ["reason"],
)
for _reason in AUTH_FAILURE_REASONS:
    AUTH_FAILURES.labels(_reason)


class AccessDenied(GatewayError):
    """A request refused before it is anyone's (401, 429 after failed authentications, 503
    when the keys cannot be read). Counted in ``tierwise_auth_failures_total``; the request
    path must not write a ledger row for it."""

    recorded = False


class Keys(Protocol):
    """What the gate needs from the key store (:class:`tierwise.keys.KeyStore`)."""

    def any_keys(self) -> bool: ...

    def authenticate(self, raw_key: str | None) -> KeyInfo | None: ...


def presented_key(request: Request) -> str | None:
    """``x-api-key`` wins over ``Authorization: Bearer`` when both are sent (as the API does)."""
    key = request.headers.get("x-api-key")
    if key:
        return key
    auth = request.headers.get("authorization", "")
    scheme, _, token = auth.partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


def client_address(request: Request) -> str:
    """The address a client's buckets are kept under: IPv4 as is, IPv6 per /64 (one host's
    usual allocation: rotating addresses inside it gains nothing)."""
    host = request.client.host if request.client else ""
    return address_bucket(host)


def address_bucket(host: str) -> str:
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return host[:64] or "unknown"
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


class TokenBuckets:
    """Token buckets by name in an LRU table of at most ``max_names`` (the least recently
    used bucket is forgotten first; nothing else is)."""

    def __init__(
        self,
        per_minute: int,
        *,
        max_names: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.capacity = float(per_minute)
        self.rate = per_minute / 60.0
        self.max_names = max_names
        self._clock = clock
        self._lock = threading.Lock()
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def take(self, name: str) -> float:
        """Take a token: 0.0 when there was one, else the seconds until there will be."""
        with self._lock:
            now = self._clock()
            tokens, last = self._buckets.pop(name, (self.capacity, now))
            tokens = min(self.capacity, tokens + (now - last) * self.rate)
            wait = 0.0
            if tokens >= 1.0:
                tokens -= 1.0
            else:
                wait = (1.0 - tokens) / self.rate
            self._buckets[name] = (tokens, now)
            while len(self._buckets) > self.max_names:
                self._buckets.popitem(last=False)
            return wait

    def __len__(self) -> int:
        return len(self._buckets)


class RateLimiter:
    """Requests per minute per key (a token bucket per name, in this process; per client
    address while the gateway is open). At most :data:`MAX_TRACKED_NAMES` buckets (LRU)."""

    def __init__(self, rpm: int | None, *, max_names: int = MAX_TRACKED_NAMES) -> None:
        self.rpm = rpm
        self._buckets = None if rpm is None else TokenBuckets(rpm, max_names=max_names)

    def check(self, name: str) -> None:
        if self._buckets is None or self.rpm is None:
            return
        wait = self._buckets.take(name)
        if wait > 0:
            raise GatewayError(
                429,
                f"rate limit of {self.rpm} requests per minute exceeded; retry in {wait:.1f}s",
                error_type="rate_limit_error",
                headers={"retry-after": str(max(1, math.ceil(wait)))},
            )

    def __len__(self) -> int:
        return 0 if self._buckets is None else len(self._buckets)


@dataclass(frozen=True, slots=True)
class Viewer:
    """Who is looking (the dashboard): a key's name and whether it is an admin. ``name`` is
    None while the gateway is open (no key ever created): then everything is visible."""

    name: str | None
    admin: bool


class Gate:
    """The authentication policy of one gateway (see the module's docstring)."""

    def __init__(self, settings: Settings, keys: Keys) -> None:
        self.settings = settings
        self.keys = keys
        self.limiter = RateLimiter(settings.gateway.rate_limit_rpm)
        self.failures = TokenBuckets(
            settings.gateway.auth_failures_per_minute, max_names=MAX_TRACKED_CLIENTS
        )
        self._warned_open = False

    def required(self) -> bool:
        """Whether requests need a key; :class:`AccessDenied` (503) when that cannot be known."""
        from tierwise.keys import KeysUnavailable

        try:
            required = self.keys.any_keys()
        except KeysUnavailable as exc:
            AUTH_FAILURES.labels("keys_unavailable").inc()
            raise AccessDenied(503, str(exc), error_type="api_error") from exc
        if not required and not self._warned_open:
            self._warned_open = True
            log.warning("no gateway key was ever created: accepting requests without a key")
        return required

    def identify(self, request: Request, raw_key: str | None = None) -> KeyInfo | None:
        """The request's live key; None while the gateway is open. Raises
        :class:`AccessDenied` (401, or 429 once the address failed too often; 503 when the
        keys cannot be read). No request-rate limit here (see :meth:`authenticate`)."""
        from tierwise.keys import KeysUnavailable

        if not self.required():
            return None
        raw = presented_key(request) if raw_key is None else raw_key
        try:
            key = self.keys.authenticate(raw)
        except KeysUnavailable as exc:
            AUTH_FAILURES.labels("keys_unavailable").inc()
            raise AccessDenied(503, str(exc), error_type="api_error") from exc
        if key is None:
            self.refuse(request, "missing" if not raw else "invalid")
        return key

    def authenticate(self, request: Request) -> KeyInfo | None:
        """:meth:`identify`, then the key's request rate (``gateway.rate_limit_rpm``; per
        client address while the gateway is open)."""
        key = self.identify(request)
        self.limiter.check(key.name if key is not None else f"client:{client_address(request)}")
        return key

    def refuse(self, request: Request, reason: str) -> None:
        """Count a failed authentication from the request's address and raise: 401 while the
        address has failures left, 429 with ``retry-after`` after that."""
        wait = self.failures.take(client_address(request))
        if wait > 0:
            AUTH_FAILURES.labels("throttled").inc()
            raise AccessDenied(
                429,
                "too many failed authentications from this address "
                f"(limit {self.settings.gateway.auth_failures_per_minute} per minute); "
                f"retry in {wait:.1f}s",
                error_type="rate_limit_error",
                headers={"retry-after": str(max(1, math.ceil(wait)))},
            )
        AUTH_FAILURES.labels(reason).inc()
        raise AccessDenied(
            401, "invalid or missing gateway key (send x-api-key or Authorization: Bearer)"
        )

    def viewer(self, key: KeyInfo | None) -> Viewer:
        return Viewer(None, True) if key is None else Viewer(key.name, key.admin)


_GATES: weakref.WeakKeyDictionary[Any, Gate] = weakref.WeakKeyDictionary()
_GATES_LOCK = threading.Lock()


def gate(gw: Any) -> Gate:
    """The gateway's :class:`Gate` (``gw.access`` when the gateway made one, else one made
    on first use from ``gw.settings`` and ``gw.keys``)."""
    own = getattr(gw, "access", None)
    if isinstance(own, Gate):
        return own
    found = _GATES.get(gw)
    if found is None:
        with _GATES_LOCK:
            found = _GATES.get(gw)
            if found is None:
                found = _GATES[gw] = Gate(gw.settings, gw.keys)
    return found


def metrics_route(gw: Any) -> Callable[[Request], Awaitable[Response]]:
    """``GET /metrics``: open while the gateway is open; otherwise an admin key."""
    from tierwise.gateway import telemetry
    from tierwise.router import new_request_id

    async def metrics(request: Request) -> Response:
        try:
            key = gate(gw).identify(request)
            if key is not None and not key.admin:
                raise GatewayError(
                    403,
                    "/metrics needs an admin key (create one with `tierwise keys create "
                    "--name NAME --admin`)",
                    error_type="permission_error",
                )
        except GatewayError as exc:
            return error_response(exc, "anthropic", new_request_id())
        return await telemetry.metrics_endpoint(request)

    return metrics


__all__ = [
    "AUTH_FAILURES",
    "AccessDenied",
    "Gate",
    "RateLimiter",
    "TokenBuckets",
    "Viewer",
    "client_address",
    "gate",
    "metrics_route",
    "presented_key",
]

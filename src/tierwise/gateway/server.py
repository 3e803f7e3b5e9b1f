"""Running the gateway under uvicorn: the ledger, keys and budgets it needs, the start-up
checks that keep it safe, and a clean shutdown that flushes the ledger.

``--workers N`` starts N processes (uvicorn's supervisor), each with its own ledger writer on
the shared database (SQLite WAL handles several writers; PostgreSQL is better at scale) and its
own key cache. Budgets are only shared across workers through Redis, so a budgeted key with
``workers > 1`` requires ``budgets.redis_url``; cooldowns and /metrics are per worker.
"""

from __future__ import annotations

import errno
import gc
import inspect
import json
import logging
import os
import socket
import sys
import threading
import time
from typing import Any

from starlette.applications import Starlette

from tierwise import config as config_mod
from tierwise.config import Settings
from tierwise.errors import ConfigError
from tierwise.gateway import telemetry
from tierwise.gateway.app import build_app, is_loopback

log = logging.getLogger("tierwise.gateway")
_ENV_SETTINGS = "TIERWISE_SERVE_SETTINGS"


def make_app(settings: Settings) -> Starlette:
    """The full gateway: ledger (write-behind), gateway keys, budgets, and their shutdown."""
    from tierwise.budgets import open_budgets
    from tierwise.keys import KeyStore
    from tierwise.ledger import open_ledger

    ledger = open_ledger(settings) if settings.ledger.enabled else None
    store = ledger.store if ledger is not None else None
    keys = KeyStore(settings, store=store) if store is not None else KeyStore(settings)
    budgets = open_budgets(settings, store, workers=settings.gateway.workers)
    if ledger is not None:
        telemetry.watch_ledger(ledger)

    async def shutdown() -> None:
        if ledger is not None:
            ledger.close()  # drains the queue: nothing recorded is lost on a graceful stop
        keys.close()

    return build_app(settings, sink=ledger, keys=keys, budgets=budgets, on_shutdown=shutdown)


def app_factory() -> Starlette:
    """For uvicorn workers: the settings come from the parent through the environment."""
    from tierwise.ledger.faults import enable_crash_tracebacks

    enable_crash_tracebacks()  # a fatal signal (SIGBUS, SIGSEGV) leaves tracebacks in the log
    raw = os.environ.get(_ENV_SETTINGS)
    if not raw:
        raise ConfigError(f"{_ENV_SETTINGS} is not set")
    spec = json.loads(raw)
    settings = config_mod.load(spec.get("config"))
    if spec.get("gateway"):
        settings = config_mod.revalidate(
            settings, gateway=settings.gateway.model_copy(update=spec["gateway"])
        )
    app = make_app(settings)
    settle_heap()
    return app


def fast_io() -> dict[str, str]:
    """uvloop and httptools (both from ``uvicorn[standard]``) when installed: uvicorn's "auto"
    picks them too, but saying so makes a missing one visible in the profile, not silent."""
    import importlib.util

    out = {}
    if importlib.util.find_spec("uvloop") is not None:
        out["loop"] = "uvloop"
    if importlib.util.find_spec("httptools") is not None:
        out["http"] = "httptools"
    return out


def settle_heap() -> None:
    """Move everything built at start-up (settings, catalogue, compiled patterns, modules) out
    of the garbage collector's reach, so its collections under load only walk what requests
    allocate. Measured: ~37,000 tracked objects after start-up, a full collection of them took
    ~9 ms (a latency spike under load each time one ran); after ``gc.freeze()``, ~0.01 ms."""
    gc.collect()
    gc.freeze()


LOG_LEVELS = ("critical", "error", "warning", "info", "debug", "trace")
SERVICE_TIMEOUT_S = 5.0  # how long start-up waits for PostgreSQL or Redis to answer
READY_TIMEOUT_S = 120.0  # --workers > 1: how long the banner waits for a worker to answer


def run_server(
    settings: Settings,
    *,
    insecure: bool = False,
    log_level: str = "warning",
    config_path: str | None = None,
    gateway_overrides: dict[str, Any] | None = None,
) -> None:
    """Check everything, bind, serve. Every check happens before the port is bound, and each
    failure is a :class:`ConfigError` naming the setting: the log level, the address (an IP
    address or a name this machine resolves), PostgreSQL and Redis when configured, gateway
    keys on a non-loopback address, budgets with several workers, and finally the port itself
    (in use, not allowed). The banner is printed once the gateway answers on the port."""
    from tierwise.ledger.faults import enable_crash_tracebacks

    enable_crash_tracebacks()  # a fatal signal (SIGBUS, SIGSEGV) leaves tracebacks in the log
    import uvicorn

    from tierwise.gateway.connections import uvicorn_options

    gw = settings.gateway
    if log_level not in LOG_LEVELS:
        raise ConfigError(f"--log-level {log_level!r}: use one of {', '.join(LOG_LEVELS)}")
    addresses = resolve_host(gw.host, gw.port)
    config_mod.check_services(settings, redis=True, timeout_s=SERVICE_TIMEOUT_S)
    app = make_app(settings)
    gateway = app.state.gateway
    keys_required = gateway.keys.any_keys()
    if not is_loopback(gw.host) and not keys_required and not insecure:
        raise ConfigError(
            f"refusing to listen on {gw.host} without gateway keys: create one with "
            "`tierwise keys create --name NAME`, bind 127.0.0.1, or pass --insecure"
        )
    if gw.workers > 1 and settings.budgets.redis_url is None and _any_budget(gateway):
        raise ConfigError(
            "--workers > 1 with budgeted keys needs budgets.redis_url (TIERWISE_REDIS_URL): "
            "in-process budget counters are not shared between worker processes"
        )
    mode = (
        "SIMULATED upstream (no ANTHROPIC_API_KEY)"
        if settings.use_simulated_provider()
        else f"upstream {settings.provider.base_url or 'https://api.anthropic.com'}"
    )
    shown = f"[{gw.host}]" if ":" in gw.host else gw.host
    banner = (
        f"tierwise gateway on http://{shown}:{gw.port}  ({mode})\n"
        f"dashboard: http://{shown}:{gw.port}/dashboard"
    )
    common: dict[str, Any] = {
        "host": gw.host,
        "port": gw.port,
        "log_level": log_level,
        "access_log": False,
        "timeout_graceful_shutdown": 30,
        **fast_io(),
        # connection cap, request-head deadline and size, idle timeout (gateway/connections.py)
        **uvicorn_options(gw),
    }
    sock = bind(addresses, gw)
    try:
        if gw.workers == 1:
            settle_heap()
            server = _announcing_server(uvicorn.Config(app, **common), banner)
            server.run(sockets=[sock])
            if not server.started:
                raise SystemExit(1)  # uvicorn has logged why the application did not start
            return
        from uvicorn.supervisors import Multiprocess

        os.environ[_ENV_SETTINGS] = json.dumps(
            {"config": config_path, "gateway": gateway_overrides or {}}
        )
        config = uvicorn.Config(
            "tierwise.gateway.server:app_factory", factory=True, workers=gw.workers, **common
        )
        probe = sock.getsockname()[:2]
        threading.Thread(target=_announce_when_answering, args=(probe, banner), daemon=True).start()
        supervisor_args: dict[str, Any] = {"sockets": [sock]}
        if "target" in inspect.signature(Multiprocess).parameters:  # uvicorn < 0.36
            supervisor_args["target"] = uvicorn.Server(config).run
        Multiprocess(config, **supervisor_args).run()
    finally:
        sock.close()


def resolve_host(host: str, port: int) -> list[tuple[Any, ...]]:
    """The addresses ``host`` stands for (IPv4 first), or a :class:`ConfigError`."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (socket.gaierror, UnicodeError) as exc:
        reason = exc.strerror if isinstance(exc, socket.gaierror) else str(exc)
        raise ConfigError(
            f"gateway.host {host!r} (--host): not an IP address or a name this machine can "
            f"resolve ({reason}); use 127.0.0.1 (this machine only), 0.0.0.0 (every "
            "interface) or a valid address of this machine"
        ) from exc
    local = [info for info in infos if _is_local(info)]
    if not local:
        raise ConfigError(
            f"gateway.host {host!r} (--host): not an address of this machine; use "
            "127.0.0.1, 0.0.0.0 or one of this machine's addresses"
        )
    return sorted(local, key=lambda info: info[0] != socket.AF_INET)


def _is_local(info: tuple[Any, ...]) -> bool:
    """Whether this machine can listen on the address (a throwaway bind to port 0)."""
    family, kind, proto, _name, sockaddr = info
    with socket.socket(family, kind, proto) as probe:
        try:
            probe.bind((sockaddr[0], 0, *sockaddr[2:]))
        except OSError as exc:
            return exc.errno != errno.EADDRNOTAVAIL
    return True


def listen_backlog(path: str = "/proc/sys/net/core/somaxconn") -> int:
    """The accept queue to ask for: the kernel's ``net.core.somaxconn`` (it caps any larger
    request), at least uvicorn's default of 2,048. Thousands of streams opening within seconds
    wait there while the event loop is busy; past the queue the kernel drops their SYNs and
    clients retry for seconds (measured: 24,433 drops at 5,000 streams with 2,048)."""
    try:
        with open(path, encoding="ascii") as f:
            somaxconn = int(f.read().strip())
    except (OSError, ValueError):
        return 4096
    return max(2048, min(somaxconn, 65535))


def bind(addresses: list[tuple[Any, ...]], gw: Any) -> socket.socket:
    """A listening socket on the first of ``addresses`` that can be bound (the last step of
    start-up: errors name the setting, and nothing is printed before this succeeds)."""
    problem: OSError | None = None
    for family, kind, proto, _name, sockaddr in addresses:
        sock = socket.socket(family, kind, proto)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(sockaddr)
            sock.listen(listen_backlog())
        except OSError as exc:
            sock.close()
            problem = exc
            continue
        sock.set_inheritable(True)
        return sock
    where = f"{gw.host}:{gw.port}"
    if problem is not None and problem.errno == errno.EADDRINUSE:
        raise ConfigError(
            f"gateway.port {gw.port} (--port): {where} is already in use; stop what listens "
            "there or choose another --port"
        )
    if problem is not None and problem.errno in (errno.EACCES, errno.EPERM):
        raise ConfigError(
            f"gateway.port {gw.port} (--port): not allowed to listen on {where} (ports "
            "below 1024 need privileges); choose a port from 1024 to 65535"
        )
    reason = problem.strerror if problem is not None else "no usable address"
    raise ConfigError(f"gateway.host/port {where}: cannot listen there ({reason})")


def _announcing_server(config: Any, banner: str) -> Any:
    """uvicorn's server, printing the banner once start-up is complete (lifespan done, the
    socket accepting): never before an error, never for a gateway that does not answer."""
    import uvicorn

    class AnnouncingServer(uvicorn.Server):
        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets=sockets)
            if self.started and not self.should_exit:
                print(banner, file=sys.stderr, flush=True)

    return AnnouncingServer(config)


def _announce_when_answering(address: tuple[Any, ...], banner: str) -> None:
    """--workers > 1: print the banner once a worker answers ``GET /health`` on the port."""
    import http.client

    host = str(address[0])
    if host in ("0.0.0.0", ""):  # noqa: S104 - reaching a wildcard bind through loopback
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        conn = http.client.HTTPConnection(host, int(address[1]), timeout=2)
        try:
            conn.request("GET", "/health")
            if conn.getresponse().status == 200:
                print(banner, file=sys.stderr, flush=True)
                return
        except OSError:
            pass
        finally:
            conn.close()
        time.sleep(0.1)


def _any_budget(gateway: Any) -> bool:
    keys = gateway.keys
    listing = getattr(keys, "list", None)
    return bool(listing and any(k.budget_usd is not None for k in listing()))

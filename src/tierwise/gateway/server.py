"""Running the gateway under uvicorn: the ledger, keys and budgets it needs, the start-up
checks that keep it safe, and a clean shutdown that flushes the ledger.

``--workers N`` starts N processes (uvicorn's supervisor), each with its own ledger writer on
the shared database (SQLite WAL handles several writers; PostgreSQL is better at scale) and its
own key cache. Budgets are only shared across workers through Redis, so a budgeted key with
``workers > 1`` requires ``budgets.redis_url``; cooldowns and /metrics are per worker.
"""

from __future__ import annotations

import gc
import json
import logging
import os
import sys
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
        telemetry.watch_ledger(lambda: ledger.stats().queued, lambda: ledger.stats().dropped)

    async def shutdown() -> None:
        if ledger is not None:
            ledger.close()  # drains the queue: nothing recorded is lost on a graceful stop
        keys.close()

    return build_app(settings, sink=ledger, keys=keys, budgets=budgets, on_shutdown=shutdown)


def app_factory() -> Starlette:
    """For uvicorn workers: the settings come from the parent through the environment."""
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


def run_server(
    settings: Settings,
    *,
    insecure: bool = False,
    log_level: str = "warning",
    config_path: str | None = None,
    gateway_overrides: dict[str, Any] | None = None,
) -> None:
    import uvicorn

    from tierwise.gateway.connections import uvicorn_options

    gw = settings.gateway
    app = make_app(settings)
    gateway = app.state.gateway
    keys_required = gateway.keys.any_keys()
    if not is_loopback(gw.host) and not keys_required and not insecure:
        raise ConfigError(
            f"refusing to listen on {gw.host} without gateway keys: create one with "
            "`tierwise keys create --name NAME`, bind 127.0.0.1, or pass --insecure"
        )
    mode = (
        "SIMULATED upstream (no ANTHROPIC_API_KEY)"
        if settings.use_simulated_provider()
        else f"upstream {settings.provider.base_url or 'https://api.anthropic.com'}"
    )
    print(f"tierwise gateway on http://{gw.host}:{gw.port}  ({mode})", file=sys.stderr, flush=True)
    print(f"dashboard: http://{gw.host}:{gw.port}/dashboard", file=sys.stderr, flush=True)
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
    if gw.workers == 1:
        settle_heap()
        uvicorn.run(app, **common)
        return
    if settings.budgets.redis_url is None and _any_budget(gateway):
        raise ConfigError(
            "--workers > 1 with budgeted keys needs budgets.redis_url (TIERWISE_REDIS_URL): "
            "in-process budget counters are not shared between worker processes"
        )
    os.environ[_ENV_SETTINGS] = json.dumps(
        {"config": config_path, "gateway": gateway_overrides or {}}
    )
    uvicorn.run("tierwise.gateway.server:app_factory", factory=True, workers=gw.workers, **common)


def _any_budget(gateway: Any) -> bool:
    keys = gateway.keys
    listing = getattr(keys, "list", None)
    return bool(listing and any(k.budget_usd is not None for k in listing()))

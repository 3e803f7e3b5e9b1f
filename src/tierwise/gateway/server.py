"""Running the gateway under uvicorn, with the start-up checks that keep it safe."""

from __future__ import annotations

import logging
import sys

from tierwise.config import Settings
from tierwise.errors import ConfigError
from tierwise.gateway.app import build_app, is_loopback

log = logging.getLogger("tierwise.gateway")


def run_server(settings: Settings, *, insecure: bool = False, log_level: str = "warning") -> None:
    import uvicorn

    gw = settings.gateway
    app = build_app(settings)
    keys_required = app.state.gateway.keys.required()
    if not is_loopback(gw.host) and not keys_required and not insecure:
        raise ConfigError(
            f"refusing to listen on {gw.host} without gateway keys: create one with "
            "`tierwise keys create --name NAME`, bind 127.0.0.1, or pass --insecure"
        )
    mode = (
        "SIMULATED upstream (no ANTHROPIC_API_KEY)"
        if settings.use_simulated_provider()
        else (f"upstream {settings.provider.base_url or 'https://api.anthropic.com'}")
    )
    print(f"tierwise gateway on http://{gw.host}:{gw.port}  ({mode})", file=sys.stderr, flush=True)
    uvicorn.run(
        app,
        host=gw.host,
        port=gw.port,
        log_level=log_level,
        access_log=False,
        loop="auto",
        http="auto",
        timeout_graceful_shutdown=30,
    )

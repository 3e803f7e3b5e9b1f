"""``tierwise serve``: the HTTP gateway."""

from __future__ import annotations

import logging
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer


class LogLevel(StrEnum):
    """uvicorn's log levels."""

    critical = "critical"
    error = "error"
    warning = "warning"
    info = "info"
    debug = "debug"
    trace = "trace"


def register(app: typer.Typer) -> None:
    app.command()(serve)


def serve(
    host: Annotated[
        str | None,
        typer.Option(help="Address or host name to bind (default 127.0.0.1, or [gateway] host)."),
    ] = None,
    port: Annotated[
        int | None,
        typer.Option(min=1, max=65535, help="Port, 1-65535 (default 8080, or [gateway] port)."),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option("--config", help="TOML configuration file (default: $TIERWISE_CONFIG)."),
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(min=1, max=64, help="Worker processes, 1-64 (default 1)."),
    ] = None,
    insecure: Annotated[
        bool, typer.Option("--insecure", help="Allow a non-loopback bind without gateway keys.")
    ] = False,
    log_level: Annotated[
        LogLevel, typer.Option(help="uvicorn's log level.", case_sensitive=False)
    ] = LogLevel.warning,
) -> None:
    """Run the Anthropic- and OpenAI-compatible gateway (point an SDK's base_url at it).

    Everything is checked before the port is bound: the configuration, the ledger database
    and Redis when configured, the address and the port. The "gateway on http://…" line is
    printed once the gateway answers.
    """
    from tierwise import config as config_mod
    from tierwise.gateway.server import run_server

    settings = config_mod.load(config)
    overrides = {
        k: v for k, v in (("host", host), ("port", port), ("workers", workers)) if v is not None
    }
    if overrides:
        gateway = settings.gateway.model_copy(update=overrides)
        settings = config_mod.revalidate(settings, gateway=gateway)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    run_server(
        settings,
        insecure=insecure,
        log_level=log_level.value,
        config_path=str(config) if config else None,
        gateway_overrides=overrides,
    )

"""``tierwise serve``: the HTTP gateway."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer


def register(app: typer.Typer) -> None:
    app.command()(serve)


def serve(
    host: Annotated[str | None, typer.Option(help="Address to bind (default 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default 8080).")] = None,
    config: Annotated[
        Path | None, typer.Option("--config", help="TOML configuration file.")
    ] = None,
    workers: Annotated[int | None, typer.Option(help="Worker processes (default 1).")] = None,
    insecure: Annotated[
        bool, typer.Option("--insecure", help="Allow a non-loopback bind without gateway keys.")
    ] = False,
    log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "warning",
) -> None:
    """Run the Anthropic- and OpenAI-compatible gateway (point an SDK's base_url at it)."""
    from rich.console import Console

    from tierwise import config as config_mod
    from tierwise.errors import TierwiseError
    from tierwise.gateway.server import run_server

    err = Console(stderr=True)
    try:
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
            log_level=log_level,
            config_path=str(config) if config else None,
            gateway_overrides=overrides,
        )
    except TierwiseError as exc:
        err.print(f"[bold red]error:[/] {exc}", highlight=False)
        raise typer.Exit(2) from exc

"""``tierwise`` commands for the eval area; registered by :func:`tierwise.cli.main`."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add this area's commands to the CLI."""
    del app  # nothing yet

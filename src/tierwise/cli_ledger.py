"""``tierwise`` commands for the ledger area: ``report`` and ``keys``.

Registered by :mod:`tierwise.cli`. Each command calls one library function and prints.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from tierwise.errors import ConfigError, InputError, TierwiseError

out = Console()
err = Console(stderr=True)

ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", help="TOML configuration file (default: $TIERWISE_CONFIG)."),
]

keys_app = typer.Typer(help="Gateway keys: create, list, revoke.", no_args_is_help=True)


def _fail(exc: TierwiseError) -> typer.Exit:
    err.print(f"[bold red]error:[/] {exc}", markup=True, highlight=False)
    return typer.Exit(2 if isinstance(exc, InputError | ConfigError) else 1)


def _settings(config: Path | None) -> Any:
    from tierwise import config as config_mod

    return config_mod.load(config)


def report(
    since: Annotated[
        str, typer.Option("--since", help="30m, 24h, 7d, 2w, a date (UTC), or 'all'.")
    ] = "7d",
    by: Annotated[
        str | None, typer.Option("--by", help="Group rows by tier, model, key or day.")
    ] = None,
    baseline: Annotated[
        str | None,
        typer.Option(
            "--baseline",
            help="stored (as recorded), requested (the model the client named), or a model id.",
        ),
    ] = None,
    quality: Annotated[
        bool,
        typer.Option(
            "--quality",
            help="Users' feedback per tier instead: average satisfaction, how many below 0.7, "
            "ratings, average cost (the lesson's tier quality report).",
        ),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    config: ConfigOption = None,
) -> None:
    """What the recorded requests cost, and what routing saved against the baseline."""
    from tierwise.reports import parse_since
    from tierwise.reports import report as build

    if quality:
        _quality_report(since, as_json, config)
        return
    try:
        data = build(_settings(config), since=parse_since(since), by=by, baseline=baseline)
    except TierwiseError as exc:
        raise _fail(exc) from exc
    if as_json:
        sys.stdout.write(json.dumps(data, indent=2) + "\n")
        return
    _print_report(data)


def _quality_report(since: str, as_json: bool, config: Path | None) -> None:
    from tierwise.ledger import open_store
    from tierwise.quality import quality_report
    from tierwise.reports import parse_since

    try:
        settings = _settings(config)
        store = open_store(settings)
        try:
            data = quality_report(store, since=parse_since(since), tier_order=settings.tier_names)
        finally:
            store.close()
    except TierwiseError as exc:
        raise _fail(exc) from exc
    if as_json:
        sys.stdout.write(json.dumps(data, indent=2) + "\n")
        return
    window = f"since {data['since'][:19].replace('T', ' ')} UTC" if data["since"] else "all time"
    floor = data["threshold"]
    table = Table(title=f"tier quality ({window}): users' satisfaction, 0–1")
    for column in ("tier", "avg satisfaction", f"below {floor}", "ratings", "avg cost"):
        table.add_column(column, justify="left" if column == "tier" else "right")
    rows = [*data["tiers"].items(), ("all tiers", data["overall"])]
    for name, row in rows:
        avg = row["avg_satisfaction"]
        table.add_row(
            name,
            "-" if avg is None else f"{avg:.2f}",
            str(row["below_threshold"]),
            str(row["total"]),
            "-" if row["avg_cost_usd"] is None else _usd(row["avg_cost_usd"]),
            end_section=len(rows) > 1 and name == rows[-2][0],
        )
    out.print(table)
    if not data["overall"]["total"]:
        out.print(
            "No feedback yet: POST /v1/feedback, or RouterQualityMonitor.evaluate() "
            "in the library.",
            highlight=False,
            markup=False,
        )


def _usd(text: str) -> str:
    from decimal import Decimal

    return f"${Decimal(text).quantize(Decimal('0.000001')):,}"


def _print_report(data: dict[str, Any]) -> None:
    window = f"since {data['since'][:19].replace('T', ' ')} UTC" if data["since"] else "all time"
    table = Table(title=f"tierwise report ({window}, baseline: {data['baseline']})")
    table.add_column("tier")
    table.add_column("requests", justify="right")
    table.add_column("share", justify="right")
    table.add_column("cost", justify="right")
    for tier, row in data["by_tier"].items():
        table.add_row(tier, str(row["requests"]), f"{row['pct']:.1f}%", _usd(row["cost_usd"]))
    out.print(table)
    status = data["by_status"]
    lines = [
        f"Requests:        {data['total_requests']} ({status['ok']} ok, {status['error']} failed)",
        f"Total cost:      {_usd(data['total_cost_usd'])}"
        f"  (classifier {_usd(data['classifier_cost_usd'])})",
        f"Baseline cost:   {_usd(data['baseline_cost_usd'])}",
        f"Saved:           {_usd(data['saved_usd'])} ({data['saved_pct']:.1f}%)",
    ]
    if data["simulated_requests"]:
        lines.append(f"SIMULATED:       {data['simulated_requests']} answered offline")
    if data["unpriced_requests"]:
        lines.append(
            f"UNPRICED:        {data['unpriced_requests']} request(s) left out of the savings "
            "(no price for their model or baseline)"
        )
    if data["dropped_requests"]:
        lines.append(
            f"DROPPED:         {data['dropped_requests']} request(s) never reached the ledger "
            "(write-behind queue full); the numbers above miss them"
        )
    out.print("\n".join(lines), highlight=False, markup=False)
    if "groups" in data:
        groups = Table(title=f"by {data['by']}")
        for column in ("", "requests", "ok", "error", "cost", "baseline", "saved", "unpriced"):
            groups.add_column(column or data["by"], justify="left" if not column else "right")
        for key, g in data["groups"].items():
            groups.add_row(
                key,
                str(g["requests"]),
                str(g["ok"]),
                str(g["error"]),
                _usd(g["cost_usd"]),
                _usd(g["baseline_cost_usd"]),
                f"{_usd(g['saved_usd'])} ({g['saved_pct']:.1f}%)",
                str(g["unpriced_requests"]),
            )
        out.print(groups)


@keys_app.command("create")
def keys_create(
    name: Annotated[str, typer.Option("--name", help="A name for the key (unique while live).")],
    budget_usd: Annotated[
        str | None, typer.Option("--budget-usd", help="Spending limit per period, in USD.")
    ] = None,
    period: Annotated[
        str, typer.Option("--period", help="Budget period: day, month (UTC) or total.")
    ] = "month",
    admin: Annotated[
        bool,
        typer.Option("--admin", help="An admin key: sees every key on the dashboard, /metrics."),
    ] = False,
    config: ConfigOption = None,
) -> None:
    """Create a gateway key and print it (once: only its hash is stored)."""
    from tierwise.keys import KeyStore

    try:
        store = KeyStore(_settings(config))
        try:
            raw, info = store.create(
                name, budget_usd=budget_usd, period=period, role="admin" if admin else "user"
            )
        finally:
            store.close()
    except TierwiseError as exc:
        raise _fail(exc) from exc
    sys.stdout.write(raw + "\n")
    budget = "no budget" if info.budget_usd is None else f"budget ${info.budget_usd}/{info.period}"
    err.print(
        f"created {info.role} key {info.name!r} ({budget}). "
        "Store it now: it cannot be shown again.",
        highlight=False,
        markup=False,
    )


@keys_app.command("list")
def keys_list(
    include_revoked: Annotated[bool, typer.Option("--all", help="Include revoked keys.")] = False,
    as_json: Annotated[bool, typer.Option("--json")] = False,
    config: ConfigOption = None,
) -> None:
    """List gateway keys (names, prefixes and budgets; never the keys)."""
    from tierwise.keys import KeyStore

    try:
        store = KeyStore(_settings(config))
        try:
            keys = store.list(include_revoked=include_revoked)
        finally:
            store.close()
    except TierwiseError as exc:
        raise _fail(exc) from exc
    rows: list[dict[str, Any]] = [
        {
            "name": k.name,
            "role": k.role,
            "prefix": k.key_prefix,
            "budget_usd": None if k.budget_usd is None else format(k.budget_usd, "f"),
            "period": k.period,
            "created_at": k.created_at.isoformat(),
            "revoked_at": None if k.revoked_at is None else k.revoked_at.isoformat(),
        }
        for k in keys
    ]
    if as_json:
        sys.stdout.write(json.dumps(rows, indent=2) + "\n")
        return
    table = Table(title="gateway keys")
    for column in ("name", "role", "prefix", "budget", "period", "created", "revoked"):
        table.add_column(column)
    for r in rows:
        table.add_row(
            r["name"],
            r["role"],
            r["prefix"] + "…",
            "-" if r["budget_usd"] is None else f"${r['budget_usd']}",
            r["period"],
            r["created_at"][:19],
            (r["revoked_at"] or "")[:19],
        )
    out.print(table)


@keys_app.command("revoke")
def keys_revoke(
    name: Annotated[str, typer.Argument(help="The key's name.")],
    config: ConfigOption = None,
) -> None:
    """Revoke a key (gateways stop accepting it within keys.cache_ttl_s)."""
    from tierwise.keys import KeyStore

    try:
        store = KeyStore(_settings(config))
        try:
            revoked = store.revoke(name)
        finally:
            store.close()
        if not revoked:
            raise InputError(f"no live key named {name!r}")
    except TierwiseError as exc:
        raise _fail(exc) from exc
    out.print(f"revoked key {name!r}", highlight=False, markup=False)


def register(app: typer.Typer) -> None:
    """Add this area's commands to the CLI."""
    app.command("report")(report)
    app.add_typer(keys_app, name="keys")

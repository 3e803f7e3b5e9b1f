"""``tierwise`` commands for the ledger area: ``report`` and ``keys``.

Registered by :mod:`tierwise.cli`. Each command calls one library function and prints.
"""

from __future__ import annotations

import json
import sys
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from tierwise.cli_output import Column, console, print_table, text_width, wrapped
from tierwise.errors import InputError

ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", help="TOML configuration file (default: $TIERWISE_CONFIG)."),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]
WideOption = Annotated[
    bool, typer.Option("--wide", help="Print at full width: every column, long headers.")
]

keys_app = typer.Typer(help="Gateway keys: create, list, revoke.", no_args_is_help=True)


def _settings(config: Path | None) -> Any:
    from tierwise import config as config_mod

    return config_mod.load(config)


def _ledger_settings(config: Path | None) -> Any:
    """The settings of a command that opens the ledger: its directory created, its
    PostgreSQL answering (errors name the setting)."""
    from tierwise import config as config_mod

    settings = _settings(config)
    config_mod.check_services(settings)
    return settings


def report(
    since: Annotated[
        str, typer.Option("--since", help="30m, 24h, 7d, 2w, a date (UTC), or 'all'.")
    ] = "7d",
    by: Annotated[
        str | None,
        typer.Option(
            "--by",
            help="Group rows by tier, model, key, day, session (agent sessions) or rule (the "
            "session rule that chose the tier).",
        ),
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
            help="Quality per tier instead: users' feedback (average satisfaction, how many "
            "below 0.7, ratings, average cost: the lesson's tier quality report) and, from "
            "shadow evaluation, the quality retained with its 95% interval, the shadow cost "
            "and the savings net of it.",
        ),
    ] = False,
    session: Annotated[
        str | None,
        typer.Option(
            "--session",
            help="One agent session's requests in order instead: the rule that chose each "
            "tier and why, what each cost and saved.",
        ),
    ] = None,
    as_json: JsonOption = False,
    wide: WideOption = False,
    config: ConfigOption = None,
) -> None:
    """What the recorded requests cost, and what routing saved against the baseline."""
    from tierwise.reports import parse_since
    from tierwise.reports import report as build

    if quality:
        _quality_report(since, as_json, wide, config)
        return
    if session is not None:
        _session_report(session, since, as_json, wide, config)
        return
    data = build(_ledger_settings(config), since=parse_since(since), by=by, baseline=baseline)
    if as_json:
        sys.stdout.write(json.dumps(data, indent=2) + "\n")
        return
    _print_report(console(wide=wide), data, wide=wide)


def _session_report(
    session: str, since: str, as_json: bool, wide: bool, config: Path | None
) -> None:
    """One session's requests, oldest first: each decision's rule, tier, cost and reason."""
    from tierwise.ledger import open_store
    from tierwise.reports import money, parse_since

    settings = _ledger_settings(config)
    store = open_store(settings)
    try:
        rows = store.entries(since=parse_since(since), session_id=session)
    finally:
        store.close()
    if not rows:
        window = "" if since == "all" else f" since {since} (--since all looks further back)"
        raise InputError(
            f"no requests recorded for session {session!r}{window}; "
            "tierwise report --by session lists the sessions"
        )
    zero = Decimal(0)
    requests: list[dict[str, Any]] = [
        {
            "ts": r.ts.isoformat(),
            "request_id": r.request_id,
            "thread": str((r.session_shape or {}).get("thread") or "")[:8] or None,
            "rule": r.session_rule,
            "tier": r.tier,
            "model": r.model,
            "status": r.status,
            "cost_usd": None if r.cost_usd is None else money(r.cost_usd),
            "baseline_cost_usd": None
            if r.baseline_cost_usd is None
            else money(r.baseline_cost_usd),
            "saved_usd": None if r.saved_usd is None else money(r.saved_usd),
            "reason": r.reason,
        }
        for r in rows
    ]
    cost = money(sum((r.cost_usd or zero for r in rows), zero))
    saved = money(sum((r.saved_usd or zero for r in rows), zero))
    data = {"session": session, "requests": requests, "cost_usd": cost, "saved_usd": saved}
    if as_json:
        sys.stdout.write(json.dumps(data, indent=2) + "\n")
        return
    out = console(wide=wide)
    out.print(
        f"session {session}: {len(rows)} requests, cost {_usd(cost)}, saved {_usd(saved)}",
        markup=False,
        highlight=False,
    )
    columns = [
        Column("time (UTC)"),
        Column("thread"),
        Column("rule"),
        Column("tier"),
        Column("cost", "money"),
        Column("saved", "money"),
        Column("reason"),
    ]
    cells = [
        [
            row["ts"][11:19],
            row["thread"] or "-",
            row["rule"] or "-",
            row["tier"] or "-",
            "-" if row["cost_usd"] is None else _usd(row["cost_usd"]),
            "-" if row["saved_usd"] is None else _usd(row["saved_usd"]),
            (row["reason"] or "") if wide else _short(row["reason"] or "", 60),
        ]
        for row in requests
    ]
    print_table(out, columns, cells, wide=wide)


def _short(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _quality_report(since: str, as_json: bool, wide: bool, config: Path | None) -> None:
    from tierwise.ledger import open_store
    from tierwise.quality import quality_report
    from tierwise.reports import parse_since

    settings = _ledger_settings(config)
    window_start = parse_since(since)
    store = open_store(settings)
    try:
        data = quality_report(store, since=window_start, tier_order=settings.tier_names)
    finally:
        store.close()
    if as_json:
        sys.stdout.write(json.dumps(data, indent=2) + "\n")
        return
    out = console(wide=wide)
    window = f"since {data['since'][:19].replace('T', ' ')} UTC" if data["since"] else "all time"
    floor = data["threshold"]
    out.print(f"tier quality ({window}): users' satisfaction, 0–1")
    columns = [
        Column("tier"),
        Column("avg satisfaction", "number"),
        Column(f"below {floor}", "number"),
        Column("ratings", "number"),
        Column("avg cost", "money"),
    ]
    cells = []
    for name, row in [*data["tiers"].items(), ("all tiers", data["overall"])]:
        avg = row["avg_satisfaction"]
        cells.append(
            [
                name,
                "-" if avg is None else f"{avg:.2f}",
                str(row["below_threshold"]),
                str(row["total"]),
                "-" if row["avg_cost_usd"] is None else _usd(row["avg_cost_usd"]),
            ]
        )
    print_table(out, columns, cells, wide=wide, total=len(cells) > 1)
    if not data["overall"]["total"]:
        out.print(
            "No feedback yet: POST /v1/feedback, or RouterQualityMonitor.evaluate() "
            "in the library.",
            markup=False,
        )
    from tierwise.cli_quality import print_shadow_quality

    out.print()
    print_shadow_quality(out, data["shadow"], wide=wide)


def _usd(text: str) -> str:
    from decimal import Decimal

    return f"${Decimal(text).quantize(Decimal('0.000001')):,}"


def _print_report(out: Console, data: dict[str, Any], *, wide: bool) -> None:
    window = f"since {data['since'][:16].replace('T', ' ')} UTC" if data["since"] else "all time"
    out.print(f"tierwise report ({window}, baseline: {data['baseline']})", markup=False)
    print_table(
        out,
        [Column("tier"), Column("requests", "number"), Column("share", "number"),
         Column("cost", "money")],
        [
            [tier, str(row["requests"]), f"{row['pct']:.1f}%", _usd(row["cost_usd"])]
            for tier, row in data["by_tier"].items()
        ],
        wide=wide,
    )  # fmt: skip
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
    width = text_width(out, wide=wide)
    if data["unpriced_requests"]:
        lines.append(
            wrapped(
                "UNPRICED:        ",
                f"{data['unpriced_requests']} request(s) left out of the savings (no price "
                "for their model or baseline)",
                indent=0,
                width=width,
            )
        )
    if data["dropped_requests"]:
        lines.append(
            wrapped(
                "DROPPED:         ",
                f"{data['dropped_requests']} request(s) never reached the ledger (write-behind "
                "queue full); the numbers above miss them",
                indent=0,
                width=width,
            )
        )
    out.print("\n".join(lines), markup=False, soft_wrap=True)
    if "groups" in data:
        out.print()
        out.print(f"by {data['by']}", markup=False)
        _print_groups(out, data["by"], data["groups"], wide=wide)


def _print_groups(out: Console, by: str, groups: dict[str, dict[str, Any]], *, wide: bool) -> None:
    """One row per group. At the terminal's width the "failed" and "unpriced" columns appear
    only when some group has such requests; --wide shows every column."""
    failures = wide or any(g["error"] for g in groups.values())
    unpriced = wide or any(g["unpriced_requests"] for g in groups.values())
    columns = [Column(by), Column("requests" if wide else "reqs", "number")]
    if wide:
        columns.append(Column("ok", "number"))
    if failures:
        columns.append(Column("error" if wide else "failed", "number"))
    columns += [
        Column("cost", "money"),
        Column("baseline", "money"),
        Column("saved", "money"),
        Column("saved %", "number"),
    ]
    if unpriced:
        columns.append(Column("unpriced", "number"))
    rows = []
    for key, g in groups.items():
        cells = [key, str(g["requests"])]
        if wide:
            cells.append(str(g["ok"]))
        if failures:
            cells.append(str(g["error"]))
        cells += [
            _usd(g["cost_usd"]),
            _usd(g["baseline_cost_usd"]),
            _usd(g["saved_usd"]),
            f"{g['saved_pct']:.1f}%",
        ]
        if unpriced:
            cells.append(str(g["unpriced_requests"]))
        rows.append(cells)
    print_table(out, columns, rows, wide=wide)


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

    store = KeyStore(_ledger_settings(config))
    try:
        raw, info = store.create(
            name, budget_usd=budget_usd, period=period, role="admin" if admin else "user"
        )
    finally:
        store.close()
    sys.stdout.write(raw + "\n")
    budget = "no budget" if info.budget_usd is None else f"budget ${info.budget_usd}/{info.period}"
    console(stderr=True).print(
        f"created {info.role} key {info.name!r} ({budget}). "
        "Store it now: it cannot be shown again.",
        markup=False,
    )


@keys_app.command("list")
def keys_list(
    include_revoked: Annotated[bool, typer.Option("--all", help="Include revoked keys.")] = False,
    as_json: Annotated[
        bool,
        typer.Option("--json", help="Machine-readable output (budgets as exact strings)."),
    ] = False,
    wide: WideOption = False,
    config: ConfigOption = None,
) -> None:
    """List gateway keys (names, prefixes and budgets; never the keys)."""
    from tierwise.keys import KeyStore

    store = KeyStore(_ledger_settings(config))
    try:
        keys = store.list(include_revoked=include_revoked)
    finally:
        store.close()
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
    out = console(wide=wide)
    out.print("gateway keys (times in UTC)" if rows else "no gateway keys yet", markup=False)
    if not rows:
        return
    stamp = 19 if wide else 16  # to the second with --wide, else to the minute
    with_revoked = wide or include_revoked
    columns = [Column("name"), Column("role"), Column("prefix")]
    columns += (
        [Column("budget", "money"), Column("period")] if wide else [Column("budget", "money")]
    )
    columns += [Column("created")] + ([Column("revoked")] if with_revoked else [])
    cells = []
    for r in rows:
        budget = "-" if r["budget_usd"] is None else f"${r['budget_usd']}"
        row = [r["name"], r["role"], r["prefix"] + "…"]
        row += (
            [budget, r["period"]]
            if wide
            else [f"{budget}/{r['period']}" if r["budget_usd"] else "-"]
        )
        row.append(r["created_at"][:stamp].replace("T", " "))
        if with_revoked:
            row.append((r["revoked_at"] or "")[:stamp].replace("T", " "))
        cells.append(row)
    print_table(out, columns, cells, wide=wide)


@keys_app.command("revoke")
def keys_revoke(
    name: Annotated[str, typer.Argument(help="The key's name.")],
    config: ConfigOption = None,
) -> None:
    """Revoke a key (gateways stop accepting it within keys.cache_ttl_s)."""
    from tierwise.keys import KeyStore

    store = KeyStore(_ledger_settings(config))
    try:
        revoked = store.revoke(name)
    finally:
        store.close()
    if not revoked:
        raise InputError(f"no live key named {name!r}; `tierwise keys list` shows them")
    console().print(f"revoked key {name!r}", markup=False)


def register(app: typer.Typer) -> None:
    """Add this area's commands to the CLI."""
    app.command("report")(report)
    app.add_typer(keys_app, name="keys")

"""``tierwise calibrate``: set the routing knob (``classifier.quality_tolerance``) from data.

One command, two sources:

* ``--target "30% top" --prompts FILE``: from a sample of your prompts, the setting that sends
  at most that share to the top tier, or keeps that share of the best tier's predicted quality
  (:mod:`tierwise.evals.calibrate`);
* ``--from-ledger``: from users' feedback on this deployment's answers, replaying the recorded
  decisions' structured columns (:func:`tierwise.quality.propose_from_ledger`).

Either way the expected change is printed first, and ``--write FILE`` sets the knob in a TOML
file (keeping the rest of it). Progress goes to stderr.
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


def _fail(exc: TierwiseError) -> typer.Exit:
    err.print(f"[bold red]error:[/] {exc}", markup=True, highlight=False)
    return typer.Exit(2 if isinstance(exc, InputError | ConfigError) else 1)


def calibrate(
    target: Annotated[
        str | None,
        typer.Option(
            "--target",
            help='With --prompts: "30% top" (share to the top tier) or "95% quality".',
        ),
    ] = None,
    prompts: Annotated[
        Path | None,
        typer.Option("--prompts", help='A sample of your prompts: JSON lines {"prompt"}.'),
    ] = None,
    from_ledger: Annotated[
        bool,
        typer.Option(
            "--from-ledger",
            help="From users' feedback stored in the ledger (POST /v1/feedback, "
            "RouterQualityMonitor): fewer requests to a tier rated below the target.",
        ),
    ] = False,
    since: Annotated[
        str,
        typer.Option("--since", help="With --from-ledger: requests since (7d, 24h, all)."),
    ] = "7d",
    target_satisfaction: Annotated[
        float,
        typer.Option(
            "--target-satisfaction",
            min=0.0,
            max=1.0,
            help="With --from-ledger: the average satisfaction every rated tier should reach.",
        ),
    ] = 0.7,
    min_ratings: Annotated[
        int,
        typer.Option("--min-ratings", min=1, help="With --from-ledger: ratings needed first."),
    ] = 20,
    write: Annotated[
        Path | None,
        typer.Option("--write", help="Write classifier.quality_tolerance to this TOML file."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    config: ConfigOption = None,
) -> None:
    """Set the cost/quality knob (classifier.quality_tolerance) from data: a sample of your
    prompts (--target … --prompts FILE) or users' feedback in the ledger (--from-ledger).

    Prints the tier shares (and, from the ledger, cost and satisfaction) at the proposed and
    the current setting before anything is written; --write FILE sets the knob there.
    """
    try:
        if from_ledger and (prompts is not None or target is not None):
            raise InputError(
                "--from-ledger calibrates from feedback; --target/--prompts from a sample of "
                "prompts: give one of the two"
            )
        if not from_ledger and (prompts is None or target is None):
            missing = " and ".join(
                name
                for name, value in (("--target", target), ("--prompts", prompts))
                if value is None
            )
            raise InputError(
                f"missing {missing}: calibrate from a sample of prompts (--target "
                '"30% top" --prompts FILE) or from users\' feedback (--from-ledger)'
            )
    except InputError as exc:
        raise _fail(exc) from exc
    if from_ledger:
        _from_ledger(since, target_satisfaction, min_ratings, write, as_json, config)
    else:
        assert target is not None
        assert prompts is not None
        _from_prompts(target, prompts, write, as_json, config)


def _settings_for(config: Path | None, write: Path | None) -> Any:
    from tierwise import config as config_mod

    return config_mod.load(
        config if config is not None else write if write and write.exists() else None
    )


def _from_prompts(
    target: str, prompts: Path, write: Path | None, as_json: bool, config: Path | None
) -> None:
    from tierwise import config as config_mod
    from tierwise.evals import calibrate as calibrate_mod
    from tierwise.evals import datasets as ds
    from tierwise.evals.progress import bar
    from tierwise.router import Router

    try:
        goal = calibrate_mod.parse_target(target)
        pairs = ds.read_prompts(prompts)
        settings = _settings_for(config, write)
        provider = settings.provider.model_copy(update={"kind": "simulated"})
        router = Router(config_mod.revalidate(settings, provider=provider))
        with bar(err, "classifying the sample", len(pairs)) as tick:
            result = calibrate_mod.calibrate(router, pairs, goal, tick)
        if write is not None:
            calibrate_mod.write_knob(write, result["quality_tolerance"])
            config_mod.load(write)  # the file must still be a valid configuration
            result["written_to"] = str(write)
    except (TierwiseError, OSError, ValueError) as exc:
        raise _fail(exc if isinstance(exc, TierwiseError) else InputError(str(exc))) from exc
    if as_json:
        sys.stdout.write(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
        return
    out.print(
        f"target {result['target']} on {result['prompts']} prompts "
        f"({result['not_decided_by_knob']} below the confidence threshold → default tier)",
        highlight=False,
    )
    table = Table()
    table.add_column("")
    table.add_column("quality_tolerance", justify="right")
    for name in result["tier_shares"]:
        table.add_column(name, justify="right")
    table.add_column("quality kept", justify="right")
    for label, row in (("calibrated", result), ("current", result["current"])):
        table.add_row(
            label,
            f"{row['quality_tolerance']:.3f}",
            *(f"{v:.1%}" for v in row["tier_shares"].values()),
            f"{row['quality_kept']:.1%}",
        )
    out.print(table)
    if write is not None:
        out.print(
            f"wrote classifier.quality_tolerance = {result['quality_tolerance']:.3f} to {write}"
        )


def _from_ledger(
    since: str,
    target_satisfaction: float,
    min_ratings: int,
    write: Path | None,
    as_json: bool,
    config: Path | None,
) -> None:
    from tierwise import config as config_mod
    from tierwise.evals.progress import Stages
    from tierwise.ledger import open_store
    from tierwise.quality import propose_from_ledger
    from tierwise.reports import parse_since

    try:
        settings = _settings_for(config, write)
        window = parse_since(since)
        store = open_store(settings)
        try:
            with (
                Stages(err, ["replaying decisions"], transient=True) as stages,
                stages.stage("replaying decisions") as advance,
            ):

                def step(done: int, total: int) -> None:
                    advance(1, total=total)

                proposal = propose_from_ledger(
                    settings,
                    store,
                    since=window,
                    target=target_satisfaction,
                    min_ratings=min_ratings,
                    progress=step,
                )
        finally:
            store.close()
    except TierwiseError as exc:
        raise _fail(exc) from exc
    data = proposal.as_dict()
    if not as_json:
        _print_proposal(proposal, window_text=since)  # before anything is written
    data["written_to"] = None
    if write is not None and proposal.changed:
        from tierwise.evals.calibrate import write_knob

        assert proposal.proposed is not None
        try:
            write_knob(write, proposal.proposed.value)
            config_mod.load(write)  # the file must still be a valid configuration
        except (TierwiseError, OSError) as exc:
            raise _fail(exc if isinstance(exc, TierwiseError) else InputError(str(exc))) from exc
        data["written_to"] = str(write)
    if as_json:
        sys.stdout.write(json.dumps(data, indent=2) + "\n")
        return
    if data["written_to"]:
        assert proposal.proposed is not None
        out.print(
            f"wrote {proposal.knob} = {proposal.proposed.value:.2f} to {write}",
            highlight=False,
            markup=False,
        )
    elif proposal.changed:
        assert proposal.proposed is not None
        out.print(
            f"Nothing written; add --write FILE to set {proposal.knob} = "
            f"{proposal.proposed.value:.2f} there.",
            highlight=False,
            markup=False,
        )


def _print_proposal(p: Any, *, window_text: str) -> None:
    from tierwise.metrics import usd

    head = (
        f"{p.requests} answered request(s) since {window_text}, {p.ratings} rated, "
        f"{p.replayed} replayable; target satisfaction {p.target:.2f}"
    )
    out.print(head, highlight=False, markup=False)
    if p.current is None or p.proposed is None:
        out.print(f"No proposal: {p.reason}", highlight=False, markup=False)
        return
    now, new = p.current, p.proposed
    table = Table(title=f"{p.knob}: {now.value:.2f} → {new.value:.2f}")
    for column in ("tier", "share now", "proposed", "change", "satisfaction", "expected", "rated"):
        table.add_column(column, justify="left" if column == "tier" else "right")
    shares_now, shares_new = now.shares(), new.shares()
    for i, tier in enumerate(p.tiers):
        seen = p.observed.get(tier, {}).get("avg_satisfaction")
        expected = new.satisfaction[i]
        table.add_row(
            tier,
            f"{shares_now[i]:.1f}%",
            f"{shares_new[i]:.1f}%",
            f"{shares_new[i] - shares_now[i]:+.1f} pp",
            "-" if seen is None else f"{seen:.2f}",
            "-" if expected is None else f"{expected:.2f}",
            str(p.observed.get(tier, {}).get("total", 0)),
        )
    out.print(table)
    change = p.as_dict()["cost_change_pct"]
    cost_line = f"Cost of these requests: {usd(now.cost_usd)} → {usd(new.cost_usd)}"
    if change is not None:
        cost_line += f" ({change:+.1f}%)"
    lines = [cost_line]
    if now.overall is not None and new.overall is not None:
        lines.append(f"Satisfaction (all rated): {now.overall:.2f} → {new.overall:.2f} expected")
    lines.append(("Proposal: " if p.changed else "No change: ") + p.reason)
    out.print("\n".join(lines), highlight=False, markup=False)


def print_shadow_quality(out: Console, shadow: dict[str, Any], *, wide: bool) -> None:
    """The shadow half of ``tierwise report --quality``: quality retained per tier (with its
    95% interval), how many judged, the shadow and judge cost, and the savings net of it
    (:func:`tierwise.quality.shadow_quality` makes ``shadow``)."""
    from decimal import Decimal

    from tierwise.cli_output import Column, print_table

    def usd(text: str) -> str:
        value = Decimal(text)
        shown = f"{abs(value).quantize(Decimal('0.000001')):,}"
        return f"-${shown}" if value < 0 else f"${shown}"

    def retained(row: dict[str, Any]) -> tuple[str, str]:
        if row["quality_retained"] is None:
            return "-", "-"
        low, high = row["interval_95"]
        return f"{row['quality_retained']:.1%}", f"{low:.1%}–{high:.1%}"

    overall = shadow["overall"]
    out.print(
        "quality retained (shadow evaluation): the cheaper answer at least as good as the "
        "reference tier's",
        markup=False,
    )
    if not overall["comparisons"]:
        out.print(
            "No shadow verdicts in this window: turn shadow evaluation on with "
            "[shadow] enabled = true (or TIERWISE_SHADOW=true) for tierwise serve.",
            markup=False,
        )
        return
    columns = [
        Column("tier"),
        Column("vs"),
        Column("quality retained", "number"),
        Column("95% interval", "number"),
        Column("judged", "number"),
        Column("errors", "number"),
        Column("shadow+judge cost", "money"),
    ]
    cells = []
    for name, row in shadow["tiers"].items():
        cells.append(
            [
                name,
                row["reference_tier"],
                *retained(row),
                str(row["judged"]),
                str(row["errors"]),
                usd(row["cost_usd"]),
            ]
        )
    cells.append(
        [
            "all tiers",
            "",
            *retained(overall),
            str(overall["judged"]),
            str(overall["errors"]),
            usd(shadow["cost_usd"]),
        ]
    )
    print_table(out, columns, cells, wide=wide, total=True)
    lines = [
        f"Routing saved {usd(shadow['saved_usd'])}; shadow calls and judges cost "
        f"{usd(shadow['cost_usd'])} (shadow {usd(shadow['shadow_cost_usd'])}, judge "
        f"{usd(shadow['judge_cost_usd'])}): net {usd(shadow['net_saved_usd'])}."
    ]
    if overall["unpriced"]:
        lines.append(f"{overall['unpriced']} comparison(s) with an unknown cost are left out.")
    out.print("\n".join(lines), markup=False, highlight=False)


def register(app: typer.Typer) -> None:
    """Add ``calibrate``."""
    from tierwise.evals.progress import unwrap

    app.command("calibrate", help=unwrap(calibrate.__doc__))(calibrate)

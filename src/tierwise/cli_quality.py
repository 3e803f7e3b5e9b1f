"""``tierwise calibrate --from-ledger``: the routing knob that users' feedback argues for.

Registered by :mod:`tierwise.cli` after the other areas. When another area already registered
a ``calibrate`` command (calibration from a file of prompts, issue 5), :func:`register` does
not replace it: it adds ``--from-ledger`` and this command's options to it, and the merged
command runs this one when ``--from-ledger`` is given and the other one otherwise. Without
such a command, ``calibrate`` is this one alone.
"""

from __future__ import annotations

import inspect
import json
import sys
from collections.abc import Callable
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
    from_ledger: Annotated[
        bool,
        typer.Option(
            "--from-ledger",
            help="Propose the knob from users' feedback stored in the ledger (POST "
            "/v1/feedback, RouterQualityMonitor): fewer requests to a tier rated below the "
            "target. Prints the expected change in tier shares and cost first.",
        ),
    ] = False,
    since: Annotated[
        str, typer.Option("--since", help="Requests (and their feedback) since: 7d, 24h, all.")
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
    """Set the routing knob (classifier.quality_tolerance) from data."""
    if not from_ledger:
        raise _fail(InputError("say where to calibrate from: --from-ledger (users' feedback)"))
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from tierwise import config as config_mod
    from tierwise.ledger import open_store
    from tierwise.quality import propose_from_ledger
    from tierwise.reports import parse_since

    try:
        settings = config_mod.load(
            config if config is not None else write if write and write.exists() else None
        )
        window = parse_since(since)
        store = open_store(settings)
        try:
            with Progress(
                TextColumn("[progress.description]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                console=err,
                transient=True,
            ) as bar:
                task = bar.add_task("replaying decisions", total=None)

                def step(done: int, total: int) -> None:
                    bar.update(task, completed=done, total=total)

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


# -- registration ---------------------------------------------------------------------------
def _command_name(info: Any) -> str | None:
    if info.name:
        return str(info.name)
    callback = info.callback
    return None if callback is None else callback.__name__.replace("_", "-")


def with_from_ledger(theirs: Callable[..., Any]) -> Callable[..., Any]:
    """A command with ``theirs``'s options plus this module's: ``--from-ledger`` runs
    :func:`calibrate`, anything else runs ``theirs`` (whose required options become optional
    here, and are checked when it runs)."""
    their_params = list(inspect.signature(theirs, eval_str=True).parameters.values())
    my_params = list(inspect.signature(calibrate, eval_str=True).parameters.values())
    their_names = {p.name for p in their_params}
    mine = {p.name for p in my_params}
    required = [p.name for p in their_params if p.default is inspect.Parameter.empty]
    merged_params = [
        p.replace(default=None) if p.default is inspect.Parameter.empty else p for p in their_params
    ] + [p for p in my_params if p.name not in their_names]

    def merged(**kwargs: Any) -> Any:
        if kwargs.get("from_ledger"):
            return calibrate(**{k: v for k, v in kwargs.items() if k in mine})
        missing = [name for name in required if kwargs.get(name) is None]
        if missing:
            options = ", ".join("--" + name.replace("_", "-") for name in missing)
            raise typer.BadParameter(f"missing {options} (or use --from-ledger)")
        return theirs(**{k: v for k, v in kwargs.items() if k in their_names})

    merged.__signature__ = inspect.Signature(merged_params)  # type: ignore[attr-defined]
    merged.__annotations__ = {p.name: p.annotation for p in merged_params}
    merged.__name__ = theirs.__name__
    merged.__doc__ = (theirs.__doc__ or "").rstrip() + (
        "\n\nWith --from-ledger: from users' feedback stored in the ledger instead."
    )
    return merged


def register(app: typer.Typer) -> None:
    """Add ``calibrate --from-ledger`` (merged into an existing ``calibrate`` if there is one)."""
    for info in app.registered_commands:
        if _command_name(info) == "calibrate" and info.callback is not None:
            info.callback = with_from_ledger(info.callback)
            return
    app.command("calibrate")(calibrate)

"""``tierwise replay`` (what recorded sessions cost under a configuration) and ``tierwise code``
(Claude Code against a running gateway).

Registered by :mod:`tierwise.cli`.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from collections import Counter
from decimal import Decimal
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
CLAUDE_INSTALL = "npm install -g @anthropic-ai/claude-code"
LOCAL_KEY = "tierwise-local"  # what Claude Code sends when the gateway has no keys


def register(app: typer.Typer) -> None:
    app.command()(replay)
    app.command(
        context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    )(code)


def _fail(exc: TierwiseError) -> typer.Exit:
    err.print(f"[bold red]error:[/] {exc}", markup=True, highlight=False, soft_wrap=True)
    return typer.Exit(2 if isinstance(exc, InputError | ConfigError) else 1)


# -- replay ----------------------------------------------------------------------------------
def replay(
    path: Annotated[
        Path | None,
        typer.Argument(
            help="A trace file or directory (read with its subdirectories): JSON lines of "
            "requests, a compact session trace, captured exchanges (claude-trace, HAR), or "
            "Claude Code's session transcripts (~/.claude/projects); .gz too."
        ),
    ] = None,
    from_ledger: Annotated[
        bool,
        typer.Option("--from-ledger", help="Replay the sessions the gateway recorded instead."),
    ] = False,
    since: Annotated[
        str, typer.Option("--since", help="With --from-ledger: 30m, 24h, 7d, a date, or 'all'.")
    ] = "7d",
    gap: Annotated[
        float, typer.Option("--gap", min=0.0, help="Seconds between requests without a 't'.")
    ] = 10.0,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    labels: Annotated[
        bool,
        typer.Option(
            "--labels",
            help="Route by the trace's labels (the tier each task needs) instead of the "
            "classifier: what perfect classification would cost.",
        ),
    ] = False,
    auto: Annotated[
        list[str] | None,
        typer.Option(
            "--auto",
            metavar="GLOB",
            help="Replay the requests for these models (id globs, repeatable) as if sent "
            "with model 'auto'. Default, for a trace recorded without tierwise: each "
            "session's main model.",
        ),
    ] = None,
    as_recorded: Annotated[
        bool,
        typer.Option("--as-recorded", help="Keep every request's recorded model (no --auto)."),
    ] = False,
    config: ConfigOption = None,
) -> None:
    """Replay sessions under a configuration: cost and tier shares for all-top-tier (with
    prompt caching), per-request routing and session routing."""
    from tierwise import config as config_mod
    from tierwise.router import Router
    from tierwise.sessions.replay import (
        Replayer,
        load_requests,
        replay_as_auto,
        requests_from_ledger,
    )

    skipped: Counter[str] = Counter()
    routed: Counter[str] = Counter()
    try:
        if (path is None) == (not from_ledger):
            raise InputError("give either a FILE or --from-ledger (not both)")
        if auto and as_recorded:
            raise InputError("give --auto or --as-recorded, not both")
        settings = config_mod.load(config)
        provider = settings.provider.model_copy(update={"kind": "simulated"})
        settings = config_mod.revalidate(settings, provider=provider)
        if path is not None:
            requests = load_requests(path, gap_s=gap, skipped=skipped)
            source = str(path)
            if not as_recorded:
                routed = replay_as_auto(requests, settings, auto, settings.catalogue())
        else:
            from tierwise.ledger import open_store
            from tierwise.reports import parse_since

            store = open_store(settings)
            try:
                requests = requests_from_ledger(store, since=parse_since(since))
            finally:
                store.close()
            source = f"ledger since {since}"
        if not requests:
            raise InputError(f"{source}: no requests to replay")
        decide = label_oracle(settings, requests) if labels else Router(settings).decide
        report = asyncio.run(Replayer(settings, decide=decide).run(requests))
    except TierwiseError as exc:
        raise _fail(exc) from exc
    rebuilt = Counter(r.rebuilt for r in requests if r.rebuilt)
    data = {
        **report.as_json(),
        "replayed_as_auto": dict(routed),
        "skipped": dict(skipped),
        "rebuilt": dict(rebuilt),
    }
    if as_json:
        sys.stdout.write(json.dumps({"source": source, **data}, indent=2) + "\n")
        return
    _print_replay(source, data, settings.tier_names, settings.top_tier.name)
    if routed:
        models = ", ".join(f"{m} ({n} requests)" for m, n in routed.most_common())
        how = "--auto" if auto else "each session's main model, as `tierwise code` sends it"
        out.print(
            f"replayed as 'auto': {models} ({how}; --as-recorded keeps the recorded models)",
            highlight=False,
            markup=False,
        )
    if skipped:
        left = ", ".join(f"{n} {why}" for why, n in skipped.most_common())
        out.print(f"left out of the trace: {left}", highlight=False, markup=False)
    if rebuilt:
        how = ", ".join(f"{n} {why}" for why, n in rebuilt.most_common())
        out.print(f"not recorded as sent, rebuilt: {how}", highlight=False, markup=False)


def label_oracle(settings: Any, requests: list[Any]) -> Any:
    """A classifier that answers each turn with its trace label (the default tier when a
    turn has none): the cost of routing every task to exactly the tier it needs."""
    import dataclasses

    from tierwise.policy import Policy

    policy = Policy(settings, settings.catalogue())
    by_text = {r.shape.classify_input.prompt: r.label for r in requests if r.label}

    async def decide(view: Any, *args: Any, **kwargs: Any) -> Any:
        tier = by_text.get(view.prompt, settings.default_tier)
        if tier not in settings.tier_names:
            tier = settings.default_tier
        decision = policy.decide(None, force_tier=tier)
        return dataclasses.replace(decision, classifier="labels", reason="the trace's label")

    return decide


_LABELS = {
    "top": "all {top}",
    "envelope": "per-request (envelope)",
    "per-request": "per-request",
    "session": "session",
}


def _print_replay(source: str, data: dict[str, Any], tiers: list[str], top: str) -> None:
    out.print(
        f"[bold]replay[/] of {data['sessions']} sessions, {data['requests']} requests "
        f"({source}), {data['seconds']} s",
        highlight=False,
    )
    table = Table(show_lines=False, pad_edge=False)
    table.add_column("policy")
    table.add_column("USD", justify="right")
    table.add_column("vs top", justify="right")
    for tier in tiers:
        table.add_column(tier, justify="right")
    table.add_column("cache r/w Mtok", justify="right")
    table.add_column("classified", justify="right")
    table.add_column("cont. changes", justify="right")
    for p in data["policies"]:
        if not p["requests"]:
            continue
        share = p["tier_share"]
        changes = p["continuation_tier_changes"]
        unexplained = p["unexplained_continuation_changes"]
        table.add_row(
            _LABELS[p["policy"]].format(top=top),
            f"{Decimal(p['cost_usd']):.2f}",
            "" if p["vs_top"] is None else f"{p['vs_top'] * 100:.1f}%",
            *(f"{share.get(t, 0) * 100:.0f}%" for t in tiers),
            f"{p['cache_read_tokens'] / 1e6:.0f}/{p['cache_write_tokens'] / 1e6:.1f}",
            str(p["classifier_runs"]),
            f"{changes} ({changes - unexplained} by rule)" if changes else "0",
        )
    out.print(table)
    out.print(
        "per-request (envelope): the classifier reads the whole envelope, as before sessions; "
        "per-request: the task only (shape.py); cont. changes: tier changes on tool-loop "
        "continuations, and how many an escalation rule made",
        highlight=False,
        markup=False,
    )
    worse = data["sessions_session_costlier_than_per_request"]
    total = data["sessions"]
    out.print(
        f"session routing cost no more than per-request routing on {total - len(worse)} of "
        f"{total} sessions",
        highlight=False,
    )
    for w in worse[:10]:
        extra = Decimal(w["session_usd"]) - Decimal(w["per_request_usd"])
        why = ", ".join(f"{k} {v}" for k, v in (w.get("loop_escalations") or {}).items())
        out.print(
            f"  {w['session']}: +${extra:.4f}" + (f" (escalated in a loop: {why})" if why else ""),
            highlight=False,
            markup=False,
        )
    session = next(p for p in data["policies"] if p["policy"] == "session")
    rules = ", ".join(f"{k} {v}" for k, v in session["rules"].items())
    out.print(f"session rules: {rules}", highlight=False, markup=False)


# -- code ------------------------------------------------------------------------------------
def code(
    ctx: typer.Context,
    url: Annotated[
        str | None,
        typer.Option(
            "--url", help="The gateway's base URL (default: gateway.host and gateway.port)."
        ),
    ] = None,
    key: Annotated[
        str | None,
        typer.Option(
            "--key",
            envvar="TIERWISE_KEY",
            help="A gateway key for Claude Code to send ($TIERWISE_KEY); not needed when the "
            "gateway has no keys.",
            show_envvar=False,
        ),
    ] = None,
    claude: Annotated[
        str, typer.Option("--claude", help="The Claude Code command or its path.")
    ] = "claude",
    model: Annotated[
        str, typer.Option("--model-name", help="What Claude Code asks for (ANTHROPIC_MODEL).")
    ] = "auto",
    check: Annotated[
        bool, typer.Option("--check/--no-check", help="Check that the gateway answers first.")
    ] = True,
    config: ConfigOption = None,
) -> None:
    """Start Claude Code (the ``claude`` CLI) against a running tierwise gateway.

    Arguments after the options go to ``claude`` unchanged, e.g. ``tierwise code -p "hi"``.
    Sets ANTHROPIC_BASE_URL to the gateway, ANTHROPIC_MODEL=auto (tierwise routes each turn),
    the small fast model to the cheapest tier, and ANTHROPIC_API_KEY to the gateway key.
    """
    from tierwise import config as config_mod

    try:
        settings = config_mod.load(config)
        base = (url or _default_url(settings.gateway.host, settings.gateway.port)).rstrip("/")
        program = shutil.which(claude)
        if program is None:
            err.print(
                f"[bold red]error:[/] Claude Code is not installed: no {claude!r} command on "
                f"PATH. Install it with `{CLAUDE_INSTALL}` (or pass --claude PATH).",
                markup=True,
                highlight=False,
                soft_wrap=True,
            )
            raise typer.Exit(127)
        if check:
            _check_gateway(base)
        env = claude_env(os.environ, base, key, model, settings.tiers[0].name)
    except TierwiseError as exc:
        raise _fail(exc) from exc
    err.print(
        f"tierwise: starting Claude Code against {base} (ANTHROPIC_MODEL={model})",
        highlight=False,
        markup=False,
        soft_wrap=True,
    )
    argv = [program, *ctx.args]
    if os.name == "posix":
        sys.stdout.flush()
        sys.stderr.flush()
        os.execve(program, argv, env)  # noqa: S606 - the user's own Claude Code, by design
    result = subprocess.run(argv, env=env, check=False)  # noqa: S603
    raise typer.Exit(result.returncode)


def _default_url(host: str, port: int) -> str:
    if host in ("0.0.0.0", "::", ""):  # noqa: S104 - a bind address, not a bind
        host = "127.0.0.1"
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{port}"


def claude_env(
    environ: Any, base: str, key: str | None, model: str, cheapest_tier: str
) -> dict[str, str]:
    """The environment Claude Code runs with: the gateway as its API, ``auto`` as its model,
    the cheapest tier as its small fast model, and the gateway key (never the upstream key)."""
    env = {k: v for k, v in dict(environ).items() if k != "ANTHROPIC_AUTH_TOKEN"}
    env.update(
        {
            "ANTHROPIC_BASE_URL": base,
            "ANTHROPIC_MODEL": model,
            "ANTHROPIC_DEFAULT_HAIKU_MODEL": cheapest_tier,
            "ANTHROPIC_SMALL_FAST_MODEL": cheapest_tier,
            "ANTHROPIC_API_KEY": key or LOCAL_KEY,
        }
    )
    return env


def _check_gateway(base: str) -> None:
    """GET /health; a clear error when nothing (or not tierwise) answers."""
    request = urllib.request.Request(f"{base}/health", method="GET")  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=3) as response:  # noqa: S310
            response.read(4096)
    except urllib.error.HTTPError as exc:
        if exc.code >= 500:
            raise InputError(f"the gateway at {base} is unhealthy (HTTP {exc.code})") from exc
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise InputError(
            f"no tierwise gateway answers at {base} ({reason}); start one with "
            "`tierwise serve` (or pass --url, or --no-check)"
        ) from exc

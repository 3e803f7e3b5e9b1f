"""The ``tierwise`` command. Thin: each command calls the library and prints."""

from __future__ import annotations

import asyncio
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from tierwise import config as config_mod
from tierwise.errors import ConfigError, InputError, ProviderError, TierwiseError
from tierwise.metrics import usd

app = typer.Typer(
    help="tierwise: route each request to the cheapest Claude tier that answers it well enough.",
    no_args_is_help=True,
    add_completion=False,
)
out = Console()
err = Console(stderr=True)

ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", help="TOML configuration file (default: $TIERWISE_CONFIG)."),
]

# The lesson's usage example: four requests that show each tier and a manual override.
DEMO_REQUESTS: list[dict[str, Any]] = [
    {
        "label": "JSON formatting",
        "prompt": "Format this customer record as JSON: name John Smith, age 34, city Portland, "
        "email john.smith@example.com",
    },
    {
        "label": "merge sorted lists",
        "prompt": "Write a Python function that merges two sorted lists into a single sorted list.",
    },
    {
        "label": "architecture review",
        "system": "You are a principal software architect with 20 years of experience designing "
        "large-scale distributed systems.",
        "prompt": "Review this distributed system architecture for race conditions and consistency "
        "issues: three services share one PostgreSQL database, an event bus fans out every write "
        "to downstream consumers, and a read-through cache sits in front of the hot tables.",
    },
    {
        "label": "security audit (forced)",
        "prompt": "Audit this login handler for security vulnerabilities: it builds the SQL query "
        "by string concatenation and compares password hashes with ==.",
        "force_tier": "opus",
    },
]


def _fail(exc: TierwiseError) -> typer.Exit:
    code = 2 if isinstance(exc, InputError | ConfigError) else 1
    err.print(f"[bold red]error:[/] {exc}", markup=True, highlight=False)
    return typer.Exit(code)


@app.command()
def demo(
    live: Annotated[
        bool, typer.Option("--live", help="Call the real API (needs ANTHROPIC_API_KEY).")
    ] = False,
    config: ConfigOption = None,
) -> None:
    """Run the lesson's example end to end: four decisions, then the savings report.

    Offline by default: the simulated provider answers, whatever keys are set.
    """
    from tierwise.facade import ModelRouter

    try:
        overrides: dict[str, Any] = {}
        settings = config_mod.load(config)
        if not live:
            provider = settings.provider.model_copy(update={"kind": "simulated"})
            settings = config_mod.revalidate(settings, provider=provider)
        router = ModelRouter(settings=settings, **overrides)
    except TierwiseError as exc:
        raise _fail(exc) from exc
    with router:
        if not live:
            out.print(
                "[bold yellow]SIMULATED[/]: no API call is made; replies and token counts come "
                "from tierwise's offline simulator, priced at real catalogue prices.\n"
            )
        for number, item in enumerate(DEMO_REQUESTS, start=1):
            try:
                result = router.route(
                    item["prompt"], system=item.get("system", ""), force_tier=item.get("force_tier")
                )
            except TierwiseError as exc:
                raise _fail(exc) from exc
            out.print(f"[bold]{number}. {item['label']}[/]", highlight=False)
            out.print(
                f"   tier [bold cyan]{result.tier}[/] → {result.model}   cost {usd(result.cost)}\n"
                f"   confidence {result.confidence:.2f}   classifier {result.classifier}",
                highlight=False,
            )
            out.print(f"   reason: {result.routing_reason}", highlight=False, markup=False)
        out.print()
        out.print(router.report(), highlight=False)


@dataclass(frozen=True)
class _Item:
    id: Any
    prompt: str
    system: str


def read_prompt_file(path: Path) -> list[_Item]:
    """JSON lines ``{"id", "prompt", "system"?}``; errors name the file and line."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise InputError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        bad_line = raw[: exc.start].count(b"\n") + 1
        raise InputError(f"{path}:{bad_line}: not valid UTF-8") from exc
    items: list[_Item] = []
    seen: set[str] = set()
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputError(f"{where}: not valid JSON ({exc.msg} at column {exc.colno})") from exc
        if not isinstance(obj, dict):
            raise InputError(f"{where}: expected a JSON object, got {type(obj).__name__}")
        if "id" not in obj:
            raise InputError(f'{where}: missing "id"')
        if not isinstance(obj["id"], str | int) or isinstance(obj["id"], bool):
            raise InputError(f'{where}: "id" must be a string or an integer')
        if not isinstance(obj.get("prompt"), str):
            raise InputError(f'{where}: "prompt" must be a string')
        system = obj.get("system") or ""
        if not isinstance(system, str):
            raise InputError(f'{where}: "system" must be a string')
        key = json.dumps(obj["id"])
        if key in seen:
            raise InputError(f"{where}: duplicate id {obj['id']!r}")
        seen.add(key)
        items.append(_Item(obj["id"], obj["prompt"], system))
    return items


@app.command()
def route(
    prompt: Annotated[str | None, typer.Argument(help="The request to route.")] = None,
    system: Annotated[str, typer.Option("--system", "-s", help="System prompt.")] = "",
    tier: Annotated[str | None, typer.Option("--tier", "-t", help="Force this tier.")] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Only decide; do not call the model.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    input_file: Annotated[
        Path | None,
        typer.Option("--input", "-i", help='JSON lines file of {"id", "prompt", "system"?}.'),
    ] = None,
    max_tokens: Annotated[int, typer.Option("--max-tokens", min=1)] = 4096,
    config: ConfigOption = None,
) -> None:
    """Route one prompt (or a file of prompts): the decision, and the answer unless --dry-run."""
    from tierwise.ledger import open_ledger, sigterm_exits
    from tierwise.router import Router

    try:
        if (prompt is None) == (input_file is None):
            raise InputError("give either a PROMPT argument or --input FILE (not both)")
        items = (
            read_prompt_file(input_file)
            if input_file is not None
            else [_Item(None, prompt or "", system)]
        )
        if input_file is not None and system:
            items = [_Item(i.id, i.prompt, i.system or system) for i in items]
        settings = config_mod.load(config)
        # Answered requests are recorded in the ledger; SIGTERM and Ctrl-C still flush it.
        ledger = open_ledger(settings) if settings.ledger.enabled and not dry_run else None
        try:
            with sigterm_exits():
                router = Router(settings, sink=ledger)
                rows = asyncio.run(_route_all(router, items, tier, dry_run, max_tokens))
        finally:
            if ledger is not None:
                ledger.close()
    except TierwiseError as exc:
        raise _fail(exc) from exc
    if as_json:
        for row in rows:
            sys.stdout.write(json.dumps(row, ensure_ascii=False) + "\n")
        return
    for row in rows:
        _print_row(row)


async def _route_all(
    router: Any, items: list[_Item], tier: str | None, dry_run: bool, max_tokens: int
) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    try:
        for item in items:
            if dry_run:
                d = await router.decide(item.prompt, item.system, force_tier=tier)
                row: dict[str, Any] = {
                    "tier": d.tier,
                    "model": d.model,
                    "confidence": d.confidence,
                    "classifier": d.classifier,
                    "reason": d.reason,
                }
            else:
                r = await router.run(
                    item.prompt, item.system, max_tokens=max_tokens, force_tier=tier, source="cli"
                )
                row = {
                    "tier": r.tier,
                    "model": r.model,
                    "confidence": r.confidence,
                    "classifier": r.classifier,
                    "reason": r.routing_reason,
                    "cost_usd": None if r.cost is None else str(r.cost),
                    "baseline_cost_usd": None if r.cost_if_opus is None else str(r.cost_if_opus),
                    "saved_usd": None if r.savings is None else str(r.savings),
                    "usage": r.usage.as_dict(),
                    "latency_ms": round(r.latency_ms, 3),
                    "simulated": r.simulated,
                    "text": r.text,
                }
            rows.append({"id": item.id, **row} if item.id is not None else row)
    finally:
        await router.aclose()
    return rows


def _print_row(row: dict[str, Any]) -> None:
    head = (
        f"[bold]{row['tier']}[/] → {row['model']}  confidence {row['confidence']:.2f}"
        f"  ({row['classifier']})"
    )
    if "id" in row:
        head = f"[dim]{row['id']}[/]  " + head
    out.print(head, highlight=False)
    out.print(f"  reason: {row['reason']}", highlight=False, markup=False)
    if "text" in row:
        cost = "unpriced" if row["cost_usd"] is None else f"${row['cost_usd']}"
        base = "unpriced" if row["baseline_cost_usd"] is None else f"${row['baseline_cost_usd']}"
        out.print(
            f"  cost: {cost}  (baseline {base})" + ("  [SIMULATED]" if row["simulated"] else ""),
            highlight=False,
            markup=False,
        )
        out.print(row["text"], highlight=False, markup=False)


@app.command()
def prices(
    config: ConfigOption = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Show the price catalogue in force (USD per million tokens)."""
    try:
        catalogue = config_mod.load(config).catalogue()
    except TierwiseError as exc:
        raise _fail(exc) from exc
    rows = []
    for info in catalogue.models():
        row = catalogue.price(info.model)
        rows.append(
            {
                "model": info.model,
                "price_version": row.version if row else None,
                **(
                    {
                        k: str(getattr(row, k))
                        for k in (
                            "input",
                            "output",
                            "cache_write_5m",
                            "cache_write_1h",
                            "cache_read",
                        )
                    }
                    if row
                    else {}
                ),
            }
        )
    if as_json:
        sys.stdout.write(
            json.dumps({"catalogue_version": catalogue.version, "models": rows}, indent=2) + "\n"
        )
        return
    table = Table(title=f"prices (catalogue {catalogue.version}), USD per million tokens")
    for column in ("model", "input", "output", "cache_write_5m", "cache_write_1h", "cache_read"):
        table.add_column(column, justify="left" if column == "model" else "right")
    for r in rows:
        table.add_row(
            *(
                r.get(c, "unpriced")
                for c in (
                    "model",
                    "input",
                    "output",
                    "cache_write_5m",
                    "cache_write_1h",
                    "cache_read",
                )
            )
        )
    out.print(table)


def _register_areas() -> None:
    """Each area of the product adds its own commands (serve, report, keys, train, eval …)."""
    from tierwise import cli_eval, cli_gateway, cli_ledger, cli_quality, cli_replay

    # cli_quality last: it adds --from-ledger to a `calibrate` another area registered
    for area in (cli_gateway, cli_ledger, cli_eval, cli_replay, cli_quality):
        area.register(app)


_register_areas()


def main() -> None:
    try:
        app()
    except ProviderError as exc:  # pragma: no cover - typer surfaces most errors itself
        err.print(f"error: {exc}")
        raise SystemExit(1) from exc

"""The ``tierwise`` command. Thin: each command calls the library and prints.

Every error a user can cause (a flag, an environment variable, the configuration file, a path,
a service) ends in :func:`main` as one line per problem on stderr, naming the setting and what
would be accepted, and exit code 2; failures outside the user's hands (the upstream API) exit
with 1. ``tierwise --debug COMMAND`` shows the traceback as well.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer

from tierwise import config as config_mod
from tierwise.cli_output import (
    Column,
    console,
    print_error,
    print_table,
    text_width,
    wrapped,
)
from tierwise.errors import ConfigError, InputError, TierwiseError
from tierwise.metrics import usd

app = typer.Typer(
    help="tierwise: route each request to the cheapest Claude tier that answers it well enough.",
    no_args_is_help=True,
    add_completion=False,
)


class _State:
    debug = False


_state = _State()


def _show_version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        sys.stdout.write(f"tierwise {version('tierwise')}\n")
        raise typer.Exit()


@app.callback()
def _root(
    _version: Annotated[
        bool,
        typer.Option(
            "--version",
            help="Print the installed version and exit.",
            is_eager=True,
            callback=_show_version,
        ),
    ] = False,
    debug: Annotated[
        bool,
        typer.Option("--debug", help="On an error, print the Python traceback too."),
    ] = False,
) -> None:
    _state.debug = debug


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


WideOption = Annotated[
    bool, typer.Option("--wide", help="Print at full width: long headers, nothing wrapped.")
]


@app.command()
def demo(
    live: Annotated[
        bool,
        typer.Option("--live", help="Call the real Anthropic API (needs ANTHROPIC_API_KEY)."),
    ] = False,
    wide: WideOption = False,
    config: ConfigOption = None,
) -> None:
    """Run the lesson's example end to end: four decisions, then the savings report.

    Offline by default: the simulated provider answers, whatever keys are set.
    """
    from tierwise.facade import ModelRouter

    settings = config_mod.load(config)
    if live:
        if settings.provider.api_key is None:
            raise ConfigError(
                "demo --live calls the Anthropic API and needs ANTHROPIC_API_KEY (or "
                "[provider] api_key): set it, or run `tierwise demo` without --live for the "
                "offline simulator"
            )
        provider = settings.provider.model_copy(update={"kind": "anthropic"})
    else:
        provider = settings.provider.model_copy(update={"kind": "simulated"})
    settings = config_mod.revalidate(settings, provider=provider)
    if settings.ledger.enabled:
        config_mod.check_services(settings)
    out = console(wide=wide)
    width = text_width(out, wide=wide)
    with ModelRouter(settings=settings) as router:
        if not live:
            out.print(
                wrapped(
                    "SIMULATED: ",
                    "no API call is made; replies and token counts come from tierwise's "
                    "offline simulator, priced at real catalogue prices.",
                    indent=0,
                    width=width,
                )
                + "\n",
                soft_wrap=True,
                markup=False,
            )
        for number, item in enumerate(DEMO_REQUESTS, start=1):
            result = router.route(
                item["prompt"], system=item.get("system", ""), force_tier=item.get("force_tier")
            )
            out.print(f"[bold]{number}. {item['label']}[/]")
            out.print(
                f"   tier [bold cyan]{result.tier}[/] → {result.model}   cost {usd(result.cost)}\n"
                f"   confidence {result.confidence:.2f}   classifier {result.classifier}",
                soft_wrap=True,
            )
            out.print(
                wrapped("reason: ", result.routing_reason, indent=3, width=width),
                soft_wrap=True,
                markup=False,
            )
        out.print()
        out.print(router.report(), markup=False)


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
    if not items:
        raise InputError(
            f'{path}: no prompts in the file; expected one JSON object per line: {{"id", '
            '"prompt", "system"?}'
        )
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
    max_tokens: Annotated[
        int, typer.Option("--max-tokens", min=1, help="Most tokens each answer may use.")
    ] = 4096,
    wide: WideOption = False,
    config: ConfigOption = None,
) -> None:
    """Route one prompt (or a file of prompts): the decision, and the answer unless --dry-run."""
    from tierwise.ledger import open_ledger, sigterm_exits
    from tierwise.router import Router

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
    if tier is not None and tier not in settings.tier_names:
        raise InputError(
            f"--tier {tier!r}: not a configured tier; use one of: {', '.join(settings.tier_names)}"
        )
    # Answered requests are recorded in the ledger; SIGTERM and Ctrl-C still flush it.
    recording = settings.ledger.enabled and not dry_run
    if recording:
        config_mod.check_services(settings)
    ledger = open_ledger(settings) if recording else None
    try:
        with sigterm_exits():
            router = Router(settings, sink=ledger)
            rows = asyncio.run(_route_all(router, items, tier, dry_run, max_tokens))
    finally:
        if ledger is not None:
            ledger.close()
    if as_json:
        for row in rows:
            sys.stdout.write(json.dumps(row, ensure_ascii=False) + "\n")
        return
    out = console(wide=wide)
    for row in rows:
        _print_row(out, row, text_width(out, wide=wide))


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


def _print_row(out: Any, row: dict[str, Any], width: int | None) -> None:
    head = (
        f"[bold]{row['tier']}[/] → {row['model']}  confidence {row['confidence']:.2f}"
        f"  ({row['classifier']})"
    )
    if "id" in row:
        head = f"[dim]{row['id']}[/]  " + head
    out.print(head, soft_wrap=True)
    out.print(
        wrapped("reason: ", row["reason"], indent=2, width=width), soft_wrap=True, markup=False
    )
    if "text" in row:
        cost = "unpriced" if row["cost_usd"] is None else f"${row['cost_usd']}"
        base = "unpriced" if row["baseline_cost_usd"] is None else f"${row['baseline_cost_usd']}"
        out.print(
            f"  cost: {cost}  (baseline {base})" + ("  [SIMULATED]" if row["simulated"] else ""),
            soft_wrap=True,
            markup=False,
        )
        out.print(row["text"], markup=False, soft_wrap=width is None)


_PRICE_COLUMNS = ("input", "output", "cache_write_5m", "cache_write_1h", "cache_read")
# at 80 columns: two-line headers, so that every model id and price fits whole
_SHORT_PRICE_HEADERS = {
    "input": "input",
    "output": "output",
    "cache_write_5m": "cache\nwrite 5m",
    "cache_write_1h": "cache\nwrite 1h",
    "cache_read": "cache\nread",
}


@app.command()
def prices(
    config: ConfigOption = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Machine-readable output (prices as exact strings).")
    ] = False,
    wide: WideOption = False,
) -> None:
    """Show the price catalogue in force (USD per million tokens)."""
    catalogue = config_mod.load(config).catalogue()
    rows = []
    for info in catalogue.models():
        row = catalogue.price(info.model)
        rows.append(
            {
                "model": info.model,
                "price_version": row.version if row else None,
                **({k: str(getattr(row, k)) for k in _PRICE_COLUMNS} if row else {}),
            }
        )
    if as_json:
        sys.stdout.write(
            json.dumps({"catalogue_version": catalogue.version, "models": rows}, indent=2) + "\n"
        )
        return
    out = console(wide=wide)
    out.print(f"prices (catalogue {catalogue.version}), USD per million tokens", soft_wrap=True)
    columns = [Column("model")]
    columns += [Column(c if wide else _SHORT_PRICE_HEADERS[c], "money") for c in _PRICE_COLUMNS]
    if wide:
        columns.append(Column("price_version"))
    cells = [
        [str(r["model"]), *(str(r.get(c, "unpriced")) for c in _PRICE_COLUMNS)]
        + ([str(r["price_version"] or "-")] if wide else [])
        for r in rows
    ]
    print_table(out, columns, cells, wide=wide)


def _register_areas() -> None:
    """Each area of the product adds its own commands (serve, report, keys, train, eval …)."""
    from tierwise import cli_eval, cli_gateway, cli_ledger, cli_quality, cli_replay

    # cli_quality last: it adds --from-ledger to a `calibrate` another area registered
    for area in (cli_gateway, cli_ledger, cli_eval, cli_replay, cli_quality):
        area.register(app)


_register_areas()


def build_command() -> Any:
    """The click command behind ``tierwise``, with its help tidied for every area's commands:
    flags show no ``<bool>`` type (they take no value), and help paragraphs are re-flowed
    to the terminal instead of keeping the line breaks of the source."""
    command = typer.main.get_command(app)
    _tidy_help(command)
    return command


def _reflow(text: str | None) -> str | None:
    if not text:
        return text
    import inspect

    paragraphs = inspect.cleandoc(text).split("\n\n")
    return "\n\n".join(
        p if p.startswith("\b") else " ".join(line.strip() for line in p.splitlines())
        for p in paragraphs
    )


def _tidy_help(command: Any) -> None:
    command.help = _reflow(command.help)
    params = list(command.params)
    helper = command.get_help_option(typer.Context(command))
    if helper is not None:
        params.append(helper)
    for param in params:
        if getattr(param, "is_flag", False):
            param.metavar = ""
        if getattr(param, "help", None):
            param.help = _reflow(param.help)
    for sub in getattr(command, "commands", {}).values():
        _tidy_help(sub)


def main(argv: Sequence[str] | None = None) -> None:
    """The ``tierwise`` entry point: runs the command and turns every error into one line
    per problem on stderr and an exit code (2: fix the input or the set-up; 1: anything else)."""
    _state.debug = False
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        result = build_command().main(args=args, prog_name="tierwise", standalone_mode=False)
    except typer.Abort:
        print_error("aborted")
        raise SystemExit(130) from None
    except typer.TyperException as exc:  # a usage error typer found: a flag, an argument
        code = int(getattr(exc, "exit_code", 2))
        if type(exc).__name__ != "NoArgsIsHelpError":  # that one has printed the help
            ctx = getattr(exc, "ctx", None)
            hint = f"see '{ctx.command_path} --help'" if ctx is not None else ""
            message = exc.format_message().replace("Value error, ", "")
            print_error(message.replace("Input should be", "must be"), hint=hint)
        raise SystemExit(code) from None
    except TierwiseError as exc:
        if _state.debug:
            raise
        print_error(str(exc))
        raise SystemExit(2 if isinstance(exc, InputError | ConfigError) else 1) from None
    except OSError as exc:  # a path or a service of the user's set-up
        if _state.debug:
            raise
        where = f"{exc.filename}: " if exc.filename else ""
        print_error(f"{where}{exc.strerror or exc}", hint="rerun with --debug for the traceback")
        raise SystemExit(2) from None
    except Exception as exc:
        if _state.debug:
            raise
        print_error(
            f"unexpected {type(exc).__name__}: {exc}",
            hint="a bug in tierwise: rerun with `tierwise --debug ...` and report the traceback",
        )
        raise SystemExit(1) from None
    raise SystemExit(result if isinstance(result, int) else 0)

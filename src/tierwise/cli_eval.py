"""``tierwise`` commands for the eval area: ``train``, ``eval …`` and ``calibrate``.

Thin: each command parses options, calls one function of :mod:`tierwise.evals`, and prints a
table (or JSON with ``--json``). Progress bars go to stderr so ``--json`` output stays clean.
The heavy imports (numpy, scikit-learn, matplotlib) happen inside the commands.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from tierwise.errors import ConfigError, InputError, TierwiseError

out = Console()
err = Console(stderr=True)

eval_app = typer.Typer(
    help="Measure routing quality: the RouteLLM paper's metric, RouterBench cost–quality, "
    "Arena judge scores, the lesson's taxonomy, and decision latency.",
    no_args_is_help=True,
)

DataOption = Annotated[
    Path,
    typer.Option("--data", help="Data directory (as ../shared/data: routellm/, routerbench/ …)."),
]
ModelOption = Annotated[
    Path | None,
    typer.Option("--model", help="Model artifact (default: the one shipped in the package)."),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]
PlotOption = Annotated[Path | None, typer.Option("--plot", help="Write a PNG plot here.")]
ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", help="TOML configuration file (default: $TIERWISE_CONFIG)."),
]


def _fail(exc: Exception) -> typer.Exit:
    code = 2 if isinstance(exc, InputError | ConfigError | FileNotFoundError) else 1
    err.print(f"[bold red]error:[/] {exc}", markup=True, highlight=False)
    return typer.Exit(code)


@contextmanager
def _progress(label: str, total: int) -> Iterator[Callable[[], None]]:
    """A progress bar on stderr; yields the function that advances it by one."""
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=True,
    ) as bar:
        task = bar.add_task(label, total=total)
        yield lambda: bar.advance(task)


def _emit_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def _load_model(path: Path | None) -> Any:
    from tierwise.classifiers.learned import RouterModel, default_model

    return default_model() if path is None else RouterModel.load(path)


def _fmt(value: float | None, spec: str = ".3f", suffix: str = "") -> str:
    return "—" if value is None else f"{value:{spec}}{suffix}"


# -- train -------------------------------------------------------------------------------------


def train_command(
    data: DataOption,
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="Artifact path (default: the package's models/)."),
    ] = None,
    corpus: Annotated[
        Path | None, typer.Option("--corpus", help="Tier-labelled corpus (default: shipped).")
    ] = None,
    evaluate_after: Annotated[
        bool,
        typer.Option(
            "--eval/--no-eval", help="Measure the new artifact on the test splits for its card."
        ),
    ] = True,
) -> None:
    """Rebuild the learned classifier's artifact and its model card from the train splits.

    The card (next to the artifact) records the data files' hashes, the rows used, the
    cross-validation choices and, unless --no-eval, the test-split metrics.
    """
    from tierwise.classifiers.learned import RouterModel
    from tierwise.evals import card as card_mod
    from tierwise.evals import train as train_mod

    target = output or card_mod.default_artifact_path()
    try:
        with err.status("training …") as status:
            artifact = train_mod.train(
                data, corpus=corpus, progress=lambda m: status.update(f"training: {m}")
            )
        train_mod.write_artifact(artifact, target)
        model = RouterModel.load(target)
        results: dict[str, Any] = {}
        if evaluate_after:
            results = card_mod.measure_test_split(model, data, progress=_progress)
        card_path = card_mod.write_card(target, artifact, results)
    except (TierwiseError, OSError, ValueError) as exc:
        raise _fail(exc) from exc
    size = target.stat().st_size
    out.print(f"wrote {target} ({size / 1024:.0f} KiB) and {card_path}", highlight=False)
    for line in card_mod.summary_lines(artifact, results):
        out.print(f"  {line}", highlight=False)


# -- eval routellm / arena ----------------------------------------------------------------------


def _show_pair_result(result: dict[str, Any], as_json: bool) -> None:
    if as_json:
        _emit_json(result)
    else:
        _print_pair_result(result)


def _print_pair_result(res: dict[str, Any]) -> None:
    table = Table(title=f"{res['benchmark']} ({res['split']}, n={res['n']})")
    for col in ("router", "APGR", "CPT(50%)", "CPT(80%)"):
        table.add_column(col, justify="left" if col == "router" else "right")
    table.add_row(
        "tierwise learned",
        _fmt(res["apgr"]),
        _fmt(res["cpt50"], ".2f", "%"),
        _fmt(res["cpt80"], ".2f", "%"),
    )
    table.add_row(
        f"random (mean of {res['random_seeds']} seeds)",
        _fmt(res["random_apgr"]),
        _fmt(res["random_cpt50"], ".2f", "%"),
        _fmt(res["random_cpt80"], ".2f", "%"),
    )
    o = res["oracle"]
    table.add_row(
        "oracle", _fmt(o["apgr"]), _fmt(o["cpt50"], ".2f", "%"), _fmt(o["cpt80"], ".2f", "%")
    )
    paper = res.get("paper")
    if paper:
        table.add_row(
            f"paper best: {paper['router']}",
            _fmt(paper["apgr"]),
            _fmt(paper.get("cpt50"), ".2f", "%"),
            _fmt(paper.get("cpt80"), ".2f", "%"),
        )
    out.print(table)
    out.print(
        f"weak {res['weak_quality']:.4f}  strong {res['strong_quality']:.4f}  ties: {res['ties']}",
        highlight=False,
    )


def _run_pairs(
    items: list[Any],
    model_path: Path | None,
    benchmark: str,
    split: str,
    ties: str,
    scores_file: Path | None,
    plot: Path | None,
) -> dict[str, Any]:
    from tierwise.evals import routellm

    model = _load_model(model_path)
    with _progress(f"scoring {benchmark}", len(items)) as tick:
        scores = routellm.score_prompts(model, [i.prompt for i in items], tick)
    result = routellm.evaluate_pairs(
        items,
        scores,
        benchmark=benchmark,
        split=split,
        ties="drop" if ties == "drop" else "break",
    )
    result["model"] = model.name
    if scores_file is not None:
        routellm.write_scores(scores_file, items, scores)
    if plot is not None:
        from tierwise.evals.plots import plot_routellm

        plot_routellm(result, plot)
    return result


@eval_app.command("routellm")
def eval_routellm(
    benchmark: Annotated[str, typer.Option("--benchmark", "-b", help="mmlu | gsm8k | mt-bench")],
    data: DataOption,
    split: Annotated[
        str | None,
        typer.Option("--split", help="test | train | all (default: test; mt-bench: all)."),
    ] = None,
    plot: PlotOption = None,
    as_json: JsonOption = False,
    scores_file: Annotated[
        Path | None, typer.Option("--scores", help="Also write prompt,score CSV here.")
    ] = None,
    model: ModelOption = None,
    ties: Annotated[
        str, typer.Option("--ties", help="break (deterministic tie-break) | drop (dedupe edges)")
    ] = "break",
    weak: Annotated[str | None, typer.Option("--weak", help="Weak model's column/name.")] = None,
    strong: Annotated[
        str | None, typer.Option("--strong", help="Strong model's column/name.")
    ] = None,
) -> None:
    """The RouteLLM paper's metric (APGR, CPT(50%), CPT(80%)): router, random and oracle.

    DIR is laid out as RouteLLM's repository (mmlu/responses/mmlu_<domain>.csv,
    gsm8k/gsm8k_responses.csv, mt_bench/question.jsonl + judgements.jsonl).
    """
    from tierwise.evals import datasets as ds

    try:
        if benchmark not in ds.BENCHMARKS:
            raise InputError(f"--benchmark must be one of {', '.join(ds.BENCHMARKS)}")
        if ties not in ("break", "drop"):
            raise InputError("--ties must be break or drop")
        chosen = split or ("all" if benchmark == "mt-bench" else "test")
        if chosen not in ("train", "test", "all"):
            raise InputError("--split must be test, train or all")
        items = ds.load_routellm(
            data,
            benchmark,
            chosen,  # type: ignore[arg-type]
            weak=weak or ds.ROUTELLM_WEAK,
            strong=strong or ds.ROUTELLM_STRONG,
        )
        result = _run_pairs(items, model, benchmark, chosen, ties, scores_file, plot)
    except (TierwiseError, OSError, ValueError, KeyError) as exc:
        raise _fail(exc) from exc
    _show_pair_result(result, as_json)


@eval_app.command("arena")
def eval_arena(
    data: DataOption,
    split: Annotated[str, typer.Option("--split", help="test | train | all")] = "test",
    weak: Annotated[str, typer.Option("--weak")] = "mistralai/Mixtral-8x7B-Instruct-v0.1",
    strong: Annotated[str, typer.Option("--strong")] = "gpt-4-1106-preview",
    plot: PlotOption = None,
    as_json: JsonOption = False,
    model: ModelOption = None,
) -> None:
    """Arena-bench v1 judge scores (1–10) with the paper's metric, for two of its models."""
    from tierwise.evals import routellm

    try:
        if split not in ("train", "test", "all"):
            raise InputError("--split must be test, train or all")
        items = routellm.arena_pairs(data, split, weak, strong)  # type: ignore[arg-type]
        if not items:
            raise InputError(f"no Arena prompts with scores for both {weak} and {strong}")
        result = _run_pairs(items, model, "arena", split, "break", None, plot)
        result["weak_model"], result["strong_model"] = weak, strong
    except (TierwiseError, OSError, ValueError, KeyError) as exc:
        raise _fail(exc) from exc
    _show_pair_result(result, as_json)


# -- eval routerbench -----------------------------------------------------------------------------


@eval_app.command("routerbench")
def eval_routerbench(
    data: DataOption,
    split: Annotated[str, typer.Option("--split", help="test | train")] = "test",
    models: Annotated[
        str | None, typer.Option("--models", help="Comma-separated models (default: all 11).")
    ] = None,
    plot: PlotOption = None,
    as_json: JsonOption = False,
    model: ModelOption = None,
) -> None:
    """Cost–quality over many models with their real per-query costs (RouterBench).

    The learned router with tierwise's policy, every single model, random mixing, the oracle.
    """
    from tierwise.evals import datasets as ds
    from tierwise.evals import routerbench

    try:
        if split not in ("train", "test"):
            raise InputError("--split must be test or train")
        chosen = [m.strip() for m in models.split(",") if m.strip()] if models else None
        router_model = _load_model(model)
        n = len(ds.load_routerbench(data, split))  # type: ignore[arg-type]
        with _progress("scoring RouterBench", n) as tick:
            result = routerbench.evaluate(
                data,
                router_model,
                split=split,  # type: ignore[arg-type]
                models=chosen,
                tick=tick,
            )
        if plot is not None:
            from tierwise.evals.plots import plot_routerbench

            plot_routerbench(result, plot)
    except (TierwiseError, OSError, ValueError, KeyError) as exc:
        raise _fail(exc) from exc
    if as_json:
        _emit_json(result)
        return
    table = Table(title=f"RouterBench ({split}, n={result['n']})")
    for col in ("", "accuracy", "avg cost (USD)", "cost vs top"):
        table.add_column(col, justify="left" if not col else "right")
    top_cost = result["top_cost_usd"]
    for s in sorted(result["singles"], key=lambda s: s["cost_usd"]):
        table.add_row(
            s["model"],
            f"{s['accuracy']:.4f}",
            f"{s['cost_usd']:.6f}",
            f"{s['cost_usd'] / top_cost:.1%}",
        )
    o = result["oracle"]
    table.add_row(
        "oracle", f"{o['accuracy']:.4f}", f"{o['cost_usd']:.6f}", f"{o['cost_usd'] / top_cost:.1%}"
    )
    out.print(table)
    frac = result["cost_fraction_at_top_accuracy"]
    mix = result["random_mix_cost_fraction_at_top_accuracy"]
    out.print(
        f"top model {result['top_model']} ({result['top_accuracy']:.4f}); the learned router "
        f"reaches it at {_fmt(None if frac is None else frac * 100, '.1f', '%')} of its cost "
        f"(random mixing: {_fmt(None if mix is None else mix * 100, '.1f', '%')}); "
        f"best router accuracy {result['router_best_accuracy']:.4f}",
        highlight=False,
    )


# -- eval tiers / latency ------------------------------------------------------------------------


@eval_app.command("tiers")
def eval_tiers(
    input_file: Annotated[
        Path | None,
        typer.Option(
            "--input",
            "-i",
            help='JSON lines {"prompt", "system"?, "tier"} (default: tierwise\'s held-out set).',
        ),
    ] = None,
    as_json: JsonOption = False,
    config: ConfigOption = None,
) -> None:
    """Accuracy of the whole decision on tier-labelled prompts (the lesson's taxonomy).

    Prints the confusion matrix and severe errors (a top-tier prompt sent to the cheapest tier).
    """
    from tierwise import config as config_mod
    from tierwise.evals import card as card_mod
    from tierwise.evals import datasets as ds
    from tierwise.evals import tiers
    from tierwise.router import Router

    try:
        items = ds.load_tier_file(input_file or card_mod.holdout_path())
        settings = config_mod.load(config)
        provider = settings.provider.model_copy(update={"kind": "simulated"})
        router = Router(config_mod.revalidate(settings, provider=provider))
        with _progress("deciding", len(items)) as tick:
            result = tiers.evaluate(router, items, tick)
    except (TierwiseError, OSError, ValueError) as exc:
        raise _fail(exc) from exc
    if as_json:
        _emit_json(result)
        return
    names = list(result["confusion"])
    table = Table(title=f"expected → decided (n={result['n']}, classifier {result['classifier']})")
    table.add_column("expected")
    for n in names:
        table.add_column(n, justify="right")
    for e in names:
        table.add_row(e, *(str(result["confusion"][e][p]) for p in names))
    out.print(table)
    out.print(
        f"accuracy {result['accuracy']:.1%}   severe errors {result['severe_errors']}",
        highlight=False,
    )
    for e in result["errors"]:
        out.print(
            f"  {e['expected']} → {e['got']}: {e['prompt'][:90]}", highlight=False, markup=False
        )


@eval_app.command("latency")
def eval_latency(
    prompts: Annotated[
        Path, typer.Option("--prompts", help='JSON lines with a "prompt" (e.g. ShareGPT turns).')
    ],
    repeat: Annotated[int, typer.Option("--repeat", min=1)] = 3,
    max_chars: Annotated[
        int, typer.Option("--max-chars", help="Only prompts up to this length (0: all).")
    ] = 8_000,
    as_json: JsonOption = False,
    config: ConfigOption = None,
) -> None:
    """Decision latency of the configured classifier + policy (no model call)."""
    from tierwise import config as config_mod
    from tierwise.evals import datasets as ds
    from tierwise.evals import latency
    from tierwise.router import Router

    try:
        pairs = ds.read_prompts(prompts)
        settings = config_mod.load(config)
        provider = settings.provider.model_copy(update={"kind": "simulated"})
        router = Router(config_mod.revalidate(settings, provider=provider))
        with _progress("timing decisions", repeat) as tick:
            result = latency.measure(
                router, pairs, repeat=repeat, max_chars=max_chars or None, tick=tick
            )
    except (TierwiseError, OSError, ValueError) as exc:
        raise _fail(exc) from exc
    if as_json:
        _emit_json(result)
        return
    out.print(
        f"{result['samples']} decisions over {result['prompts']} prompts "
        f"(≤ {result['max_chars']} chars, {result['excluded_over_max_chars']} longer excluded), "
        f"classifier {result['classifier']}",
        highlight=False,
    )
    out.print(
        f"p50 {result['p50_ms'] * 1000:.1f} µs   p90 {result['p90_ms'] * 1000:.1f} µs   "
        f"p99 {result['p99_ms'] * 1000:.1f} µs   max {result['max_ms'] * 1000:.1f} µs",
        highlight=False,
    )
    best = result["min_of_repeats"]
    out.print(
        f"fastest of {result['repeat']} runs per prompt: p50 {best['p50_ms'] * 1000:.1f} µs   "
        f"p99 {best['p99_ms'] * 1000:.1f} µs   max {best['max_ms'] * 1000:.1f} µs   "
        f"(load average at start {result['load_average_1m_at_start']} on {result['cpus']} CPUs)",
        highlight=False,
    )
    for bucket, row in result["by_length"].items():
        out.print(
            f"  {bucket:>10} chars: n={row['n']:<6} p50 {row['p50_ms'] * 1000:.1f} µs  "
            f"p99 {row['p99_ms'] * 1000:.1f} µs",
            highlight=False,
        )


# -- calibrate ------------------------------------------------------------------------------------


def calibrate_command(
    target: Annotated[
        str, typer.Option("--target", help='"30% top" (share to the top tier) or "95% quality".')
    ],
    prompts: Annotated[
        Path, typer.Option("--prompts", help='A sample of your prompts: JSON lines {"prompt"}.')
    ],
    write: Annotated[
        Path | None,
        typer.Option("--write", help="Write classifier.quality_tolerance to this TOML file."),
    ] = None,
    as_json: JsonOption = False,
    config: ConfigOption = None,
) -> None:
    """Set the cost/quality knob (classifier.quality_tolerance) from a sample of prompts.

    Prints the tier shares and quality kept at the calibrated and the current setting, and
    writes the knob to a config file with --write.
    """
    from tierwise import config as config_mod
    from tierwise.evals import calibrate
    from tierwise.evals import datasets as ds
    from tierwise.router import Router

    try:
        goal = calibrate.parse_target(target)
        pairs = ds.read_prompts(prompts)
        settings = config_mod.load(
            config if config is not None else write if write and write.exists() else None
        )
        provider = settings.provider.model_copy(update={"kind": "simulated"})
        router = Router(config_mod.revalidate(settings, provider=provider))
        with _progress("classifying the sample", len(pairs)) as tick:
            result = calibrate.calibrate(router, pairs, goal, tick)
        if write is not None:
            calibrate.write_knob(write, result["quality_tolerance"])
            config_mod.load(write)  # the file must still be a valid configuration
            result["written_to"] = str(write)
    except (TierwiseError, OSError, ValueError) as exc:
        raise _fail(exc) from exc
    if as_json:
        _emit_json(result)
        return
    out.print(
        f"target {result['target']} on {result['prompts']} prompts "
        f"({result['abstained']} abstained → default tier)",
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


def register(app: typer.Typer) -> None:
    """Add this area's commands to the CLI."""
    app.command("train")(train_command)
    app.command("calibrate")(calibrate_command)
    app.add_typer(eval_app, name="eval")

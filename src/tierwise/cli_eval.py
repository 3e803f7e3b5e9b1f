"""``tierwise`` commands for the eval area: ``train`` and ``eval …`` (``calibrate`` lives in
:mod:`tierwise.cli_quality`).

Thin: each command parses options, calls one function of :mod:`tierwise.evals`, and prints a
table (or JSON with ``--json``). Progress (per stage, with elapsed time and an estimate of the
time left) goes to stderr so ``--json`` output stays clean. The heavy imports (numpy,
scikit-learn, matplotlib) happen inside the commands.
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
    """A progress bar on stderr with an estimate of the time left; yields ``tick()``."""
    from tierwise.evals.progress import bar

    with bar(err, label, total) as tick:
        yield tick


def _emit_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def _load_model(path: Path | None) -> Any:
    from tierwise.classifiers.learned import RouterModel, default_model

    return default_model() if path is None else RouterModel.load(path)


def _fmt(value: float | None, spec: str = ".3f", suffix: str = "") -> str:
    return "—" if value is None else f"{value:{spec}}{suffix}"


# -- train -------------------------------------------------------------------------------------


def train_command(
    data: Annotated[
        Path | None,
        typer.Option(
            "--data", help="Data directory (as ../shared/data): rebuild the shipped prior."
        ),
    ] = None,
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
            "--eval/--no-eval", help="Measure the new prior on the test splits for its card."
        ),
    ] = True,
    cache: Annotated[
        Path | None,
        typer.Option("--cache", help="Keep featurised prompts here between runs (a directory)."),
    ] = None,
    from_ledger: Annotated[
        bool,
        typer.Option(
            "--from-ledger",
            help="Fit an adapter on this deployment's judge verdicts and feedback, validate it "
            "on the newest slice, write it under $TIERWISE_HOME/models and activate it if it "
            "beats the prior there.",
        ),
    ] = False,
    since: Annotated[
        str, typer.Option("--since", help="With --from-ledger: requests since (30d, 24h, all).")
    ] = "all",
    holdout: Annotated[
        float,
        typer.Option(
            "--holdout", min=0.05, max=0.5, help="With --from-ledger: newest share held out."
        ),
    ] = 0.2,
    min_examples: Annotated[
        int,
        typer.Option(
            "--min-examples", min=5, help="With --from-ledger: examples a tier needs to adapt."
        ),
    ] = 30,
    feedback_weight: Annotated[
        float,
        typer.Option(
            "--feedback-weight",
            min=0.0,
            max=1.0,
            help="With --from-ledger: a feedback score's weight (a verdict weighs 1).",
        ),
    ] = 0.5,
    text: Annotated[
        str,
        typer.Option(
            "--text",
            help="With --from-ledger: learn from stored prompts' words: auto | on | off.",
        ),
    ] = "auto",
    activate: Annotated[
        bool,
        typer.Option(
            "--activate/--no-activate", help="With --from-ledger: activate an accepted version."
        ),
    ] = True,
    force: Annotated[
        bool,
        typer.Option("--force", help="With --from-ledger: activate even if not accepted."),
    ] = False,
    list_versions: Annotated[
        bool, typer.Option("--list", help="List this deployment's adapter versions.")
    ] = False,
    rollback: Annotated[
        bool,
        typer.Option(
            "--rollback", help="Make the previously active version (or the prior) active again."
        ),
    ] = False,
    as_json: JsonOption = False,
    config: ConfigOption = None,
) -> None:
    """Rebuild the shipped prior from the data (--data DIR), or learn this deployment's adapter
    from its ledger (--from-ledger); --list and --rollback manage the adapter versions.

    The prior's card (next to the artifact) records the data files' hashes and licences, the
    rows used, the choices made and, unless --no-eval, the test-split metrics. Progress goes
    to stderr.
    """
    modes = [
        name
        for name, on in (
            ("--data", data is not None),
            ("--from-ledger", from_ledger),
            ("--list", list_versions),
            ("--rollback", rollback),
        )
        if on
    ]
    if len(modes) != 1:
        what = "none" if not modes else " and ".join(modes)
        raise _fail(
            InputError(
                f"give exactly one of --data DIR, --from-ledger, --list, --rollback (got {what})"
            )
        )
    if data is not None:
        _train_prior(data, output, corpus, evaluate_after, cache, as_json)
    elif from_ledger:
        _train_ledger(
            since, holdout, min_examples, feedback_weight, text, activate, force, as_json, config
        )
    else:
        _manage_versions(rollback, as_json, config)


def _train_prior(
    data: Path,
    output: Path | None,
    corpus: Path | None,
    evaluate_after: bool,
    cache: Path | None,
    as_json: bool,
) -> None:
    from tierwise.classifiers.learned import RouterModel
    from tierwise.evals import card as card_mod
    from tierwise.evals import train as train_mod
    from tierwise.evals.progress import Stages

    target = output or card_mod.default_artifact_path()
    names = [*train_mod.TRAIN_STAGES, "writing the artifact"]
    bench = ["test split: mmlu", "test split: gsm8k", "test split: arena"]
    bench += ["routerbench: heads on train, test split", "held-out tier prompts"]
    if evaluate_after:
        names += bench
    try:
        with Stages(err, names) as stages:
            artifact = train_mod.train(data, corpus=corpus, stages=stages, cache_dir=cache)
            with stages.stage("writing the artifact", 1) as advance:
                train_mod.write_artifact(artifact, target)
                model = RouterModel.load(target)
                advance()
            results: dict[str, Any] = {}
            if evaluate_after:

                @contextmanager
                def stage_bar(label: str, total: int) -> Iterator[Callable[[], None]]:
                    with stages.stage(label, total) as adv:
                        yield adv

                results = card_mod.measure_test_split(model, data, progress=stage_bar)
        card_path = card_mod.write_card(target, artifact, results)
    except (TierwiseError, OSError, ValueError) as exc:
        raise _fail(exc) from exc
    size = target.stat().st_size
    if as_json:
        _emit_json(
            {
                "artifact": str(target),
                "card": str(card_path),
                "bytes": size,
                "id": artifact["id"],
                "results": results,
            }
        )
        return
    out.print(f"wrote {target} ({size / 1024:.0f} KiB) and {card_path}", highlight=False)
    for line in card_mod.summary_lines(artifact, results):
        out.print(f"  {line}", highlight=False)


def _train_ledger(
    since: str,
    holdout: float,
    min_examples: int,
    feedback_weight: float,
    text: str,
    activate: bool,
    force: bool,
    as_json: bool,
    config: Path | None,
) -> None:
    from tierwise import config as config_mod
    from tierwise.classifiers import adapter as adapter_mod
    from tierwise.evals.ledger_train import train_from_ledger
    from tierwise.evals.progress import Stages
    from tierwise.ledger import open_store
    from tierwise.reports import parse_since

    try:
        settings = config_mod.load(config)
        window = parse_since(since)
        model, _ = adapter_mod.resolve(settings)  # the prior the adapters sit on
        store = open_store(settings)
        try:
            names = ["reading the ledger", "fitting the tiers", "writing the version"]
            with Stages(err, names) as stages:
                result = train_from_ledger(
                    settings,
                    store,
                    model,
                    since=window,
                    holdout=holdout,
                    min_examples=min_examples,
                    feedback_weight=feedback_weight,
                    text=text,
                    stages=stages,
                )
        finally:
            store.close()
        activated = None
        if activate and (result.accepted or force):
            previous = adapter_mod.set_active(settings.home, result.name)
            activated = {"active": result.name, "previous": previous}
    except TierwiseError as exc:
        raise _fail(exc) from exc
    data = result.as_dict() | {"activated": activated}
    if as_json:
        _emit_json(data)
        return
    out.print(
        f"{result.name}: {result.data.verdicts} verdicts and {result.data.feedback} feedback "
        f"scores from {result.data.rows_read} ledger rows; written to {result.path}",
        highlight=False,
        markup=False,
    )
    table = Table(title="held-out validation (newest requests), per tier")
    for col in ("tier", "examples", "train", "held out", "l2", "log loss prior", "adapted"):
        table.add_column(col, justify="left" if col == "tier" else "right")
    for f in result.fits:
        table.add_row(
            f.tier,
            str(f.examples),
            str(f.train),
            str(f.held_out),
            _fmt(f.l2, ".1f"),
            _fmt(f.prior_log_loss, ".4f"),
            _fmt(f.adapted_log_loss, ".4f"),
        )
    out.print(table)
    out.print(result.reason, highlight=False, markup=False)
    if activated:
        out.print(
            f"active: {result.name} (was {activated['previous']}); restart serve to load it; "
            "undo with `tierwise train --rollback`",
            highlight=False,
            markup=False,
        )
    else:
        out.print(
            f"not activated (active stays {adapter_mod.active(settings.home)})"
            + ("" if result.accepted else "; --force activates it anyway"),
            highlight=False,
            markup=False,
        )


def _manage_versions(rollback: bool, as_json: bool, config: Path | None) -> None:
    from tierwise import config as config_mod
    from tierwise.classifiers import adapter as adapter_mod

    try:
        settings = config_mod.load(config)
        home = settings.home
        if rollback:
            was, now = adapter_mod.rollback(home)
            if as_json:
                _emit_json({"rolled_back": was, "active": now})
            else:
                out.print(
                    f"active: {now} (was {was}); restart serve to load it",
                    highlight=False,
                    markup=False,
                )
            return
        current = adapter_mod.active(home)
        rows = []
        for name in adapter_mod.versions(home):
            card = adapter_mod.Adapter.load(adapter_mod.version_path(home, name)).card
            rows.append(
                {
                    "version": name,
                    "active": name == current,
                    "created": card.get("created"),
                    "accepted": card.get("accepted"),
                    "verdicts": card.get("verdicts"),
                    "feedback": card.get("feedback"),
                    "reason": card.get("reason"),
                }
            )
    except TierwiseError as exc:
        raise _fail(exc) from exc
    if as_json:
        _emit_json({"active": current, "setting": settings.classifier.model, "versions": rows})
        return
    out.print(
        f"classifier.model = {settings.classifier.model!r}; active: {current}",
        highlight=False,
        markup=False,
    )
    table = Table()
    for col in ("version", "active", "created", "accepted", "verdicts", "feedback"):
        table.add_column(col)
    for r in rows:
        table.add_row(
            str(r["version"]),
            "yes" if r["active"] else "",
            str(r["created"]),
            str(r["accepted"]),
            str(r["verdicts"]),
            str(r["feedback"]),
        )
    out.print(table)


# -- eval routellm / arena ----------------------------------------------------------------------


def _show_pair_result(result: dict[str, Any], as_json: bool) -> None:
    if as_json:
        _emit_json(result)
    else:
        _print_pair_result(result)


def _print_pair_result(res: dict[str, Any]) -> None:
    table = Table(title=f"{res['benchmark']} ({res['split']}, n={res['n']})")
    for col in ("router", "APGR [95% CI]", "CPT(50%)", "CPT(80%)"):
        table.add_column(col, justify="left" if col == "router" else "right")
    ci = res.get("apgr_ci")
    table.add_row(
        "tierwise learned",
        _fmt(res["apgr"]) + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else ""),
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
    from tierwise.evals.metrics import BOOTSTRAP_RESAMPLES
    from tierwise.evals.progress import Stages

    model = _load_model(model_path)
    stages = [f"scoring {benchmark}", "bootstrap interval"]
    with Stages(err, stages, transient=True) as run:
        with run.stage(stages[0], len(items)) as tick:
            scores = routellm.score_prompts(model, [i.prompt for i in items], tick)
        with run.stage(stages[1], BOOTSTRAP_RESAMPLES) as tick:
            result = routellm.evaluate_pairs(
                items,
                scores,
                benchmark=benchmark,
                split=split,
                ties="drop" if ties == "drop" else "break",
                tick=tick,
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
    weak: Annotated[
        str, typer.Option("--weak", help="The weaker model's scores (a model in scores.csv).")
    ] = "mistralai/Mixtral-8x7B-Instruct-v0.1",
    strong: Annotated[
        str, typer.Option("--strong", help="The stronger model's scores (a model in scores.csv).")
    ] = "gpt-4-1106-preview",
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
        n = len(ds.load_routerbench(data, "train")) + len(
            ds.load_routerbench(data, split)  # type: ignore[arg-type]
        )
        with _progress("RouterBench: heads on the train files, then the split", n) as tick:
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
    ci = result.get("cost_fraction_interval")
    shown_ci = f" [95% CI {ci[0]:.1%}, {ci[1]:.1%}]" if ci else ""
    out.print(
        f"top model {result['top_model']} ({result['top_accuracy']:.4f}); the learned router "
        f"reaches it at {_fmt(None if frac is None else frac * 100, '.1f', '%')}{shown_ci} "
        "of its cost "
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
    ci = result["accuracy_ci"]
    out.print(
        f"accuracy {result['accuracy']:.1%} [95% CI {ci[0]:.1%}, {ci[1]:.1%}]   "
        f"severe errors {result['severe_errors']}",
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
    repeat: Annotated[
        int, typer.Option("--repeat", min=1, help="Times each prompt is decided (medians).")
    ] = 3,
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


def register(app: typer.Typer) -> None:
    """Add this area's commands to the CLI."""
    from tierwise.evals.progress import unwrap

    app.command("train", help=unwrap(train_command.__doc__))(train_command)
    app.add_typer(eval_app, name="eval")

"""Summarise the JSON files ``make eval`` writes as the Markdown tables of EVALUATION.md.

Run: ``python -m tierwise.evals.report docs/eval``
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from tierwise.evals.routellm import PAPER

# Issue 14's targets, by benchmark: (lower bound on APGR / accuracy, or upper bound on cost).
TARGETS = {
    "mmlu": 0.687,
    "gsm8k": 0.634,
    "arena": 0.62,
    "tiers": 0.89,
    "routerbench": 0.80,
}


def _load(folder: Path, name: str) -> Any:
    path = folder / f"{name}.json"
    if not path.is_file():
        return None
    return json.loads(path.read_text(encoding="utf-8"))


def _pct(v: float | None) -> str:
    return "—" if v is None else f"{v:.2f}%"


def _ci(ci: list[float] | None, fmt: str = ".3f") -> str:
    return "—" if not ci else f"[{ci[0]:{fmt}}, {ci[1]:{fmt}}]"


def _verdict(value: float | None, target: float, higher_is_better: bool = True) -> str:
    if value is None:
        return "**missed** (never reached)"
    met = value >= target if higher_is_better else value <= target
    if met:
        return "met"
    gap = target - value if higher_is_better else value - target
    return f"**missed by {gap:.3f}**" if higher_is_better else f"**missed by {gap:.1%}**"


def render(folder: Path) -> str:
    lines = [
        "| benchmark (test split) | n | tierwise APGR | 95% CI | CPT(50%) | CPT(80%) "
        "| random APGR | oracle APGR | paper best APGR | target |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name in ("routellm-mmlu", "routellm-gsm8k", "arena"):
        r = _load(folder, name)
        if r is None:
            continue
        paper = PAPER.get(r["benchmark"], {})
        target = TARGETS.get(r["benchmark"])
        lines.append(
            f"| {r['benchmark']} | {r['n']} | **{r['apgr']:.3f}** | {_ci(r.get('apgr_ci'))} | "
            f"{_pct(r['cpt50'])} | {_pct(r['cpt80'])} | {r['random_apgr']:.3f} | "
            f"{r['oracle']['apgr']:.3f} | {paper.get('apgr', '—')} | "
            + ("—" if target is None else f"≥ {target} — {_verdict(r['apgr'], target)}")
            + " |"
        )
    rb = _load(folder, "routerbench")
    if rb is not None:
        frac = rb["cost_fraction_at_top_accuracy"]
        lines += [
            "",
            f"RouterBench (test, n={rb['n']}, {len(rb['models'])} models, heads fitted on its "
            f"train files at evaluation): top model {rb['top_model']} accuracy "
            f"{rb['top_accuracy']:.4f} at ${rb['top_cost_usd']:.6f}/query; tierwise reaches it "
            f"at {'never' if frac is None else f'{frac:.1%}'} of its cost (95% CI "
            f"{_ci(rb.get('cost_fraction_interval'), '.1%')}; target ≤ 80% — "
            f"{_verdict(frac, TARGETS['routerbench'], higher_is_better=False)}); best router "
            f"accuracy {rb['router_best_accuracy']:.4f}; oracle {rb['oracle']['accuracy']:.4f} at "
            f"{rb['oracle']['cost_usd'] / rb['top_cost_usd']:.1%} of the cost.",
        ]
    tiers = _load(folder, "tiers")
    if tiers is not None:
        lines.append(
            f"Tier taxonomy, held-out prompts, whole decision (n={tiers['n']}): accuracy "
            f"{tiers['accuracy']:.1%} (95% CI {_ci(tiers.get('accuracy_ci'), '.1%')}), severe "
            f"errors {tiers['severe_errors']}; target ≥ 89% with 0 severe — "
            + (
                "met"
                if tiers["accuracy"] >= TARGETS["tiers"] and tiers["severe_errors"] == 0
                else f"**missed** by {TARGETS['tiers'] - tiers['accuracy']:.1%}"
            )
            + "."
        )
    lat = _load(folder, "latency")
    if lat is not None:
        best = lat["min_of_repeats"]
        lines.append(
            f"Decision latency ({lat['samples']} decisions over {lat['prompts']} prompts, load "
            f"average {lat['load_average_1m_at_start']} on {lat['cpus']} CPUs): every sample "
            f"p50 {lat['p50_ms'] * 1000:.0f} µs, p99 {lat['p99_ms'] * 1000:.0f} µs; fastest of "
            f"{lat['repeat']} per prompt p50 {best['p50_ms'] * 1000:.0f} µs, "
            f"p99 {best['p99_ms'] * 1000:.0f} µs."
        )
    selection = _load(folder, "selection")
    if selection:
        lines += ["", *selection_table(selection)]
    return "\n".join(lines)


def selection_table(rows: list[dict[str, Any]]) -> list[str]:
    """The leave-one-source-out table: out-of-source APGR per candidate and source."""
    sources = list(rows[0]["sources"])
    out = [
        "| candidate | mean out-of-source APGR [95% CI] | vs baseline (paired 95% CI) | "
        + " | ".join(sources)
        + " |",
        "|---|---|---|" + "---|" * len(sources),
    ]
    for r in rows:
        name = r["candidate"]
        if r.get("selected"):
            name = f"**{name}** (selected: one-SE rule)"
        elif r.get("best_mean"):
            name = f"{name} (best mean)"
        cells = [f"{r['sources'][s]['apgr']:.3f}" for s in sources]
        out.append(
            f"| {name} | {r['mean']:.4f} {_ci(r['mean_ci'], '.3f')} | "
            f"{_ci(r['vs_baseline_ci'], '+.3f')} | " + " | ".join(cells) + " |"
        )
    return out


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    sys.stdout.write(render(Path(args[0] if args else "docs/eval")) + "\n")


if __name__ == "__main__":
    main()

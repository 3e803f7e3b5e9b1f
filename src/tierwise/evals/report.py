"""Summarise the JSON files ``make eval`` writes as the Markdown tables of EVALUATION.md.

Run: ``python -m tierwise.evals.report docs/eval``
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from tierwise.evals.routellm import PAPER


def _load(folder: Path, name: str) -> dict[str, Any] | None:
    path = folder / f"{name}.json"
    if not path.is_file():
        return None
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def _pct(v: float | None) -> str:
    return "—" if v is None else f"{v:.2f}%"


def render(folder: Path) -> str:
    lines = [
        "| benchmark (test split) | n | tierwise APGR | CPT(50%) | CPT(80%) | random APGR "
        "| oracle APGR | paper best APGR | paper CPT(50%) | paper CPT(80%) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name in ("routellm-mmlu", "routellm-gsm8k", "arena"):
        r = _load(folder, name)
        if r is None:
            continue
        paper = PAPER.get(r["benchmark"], {})
        lines.append(
            f"| {r['benchmark']} | {r['n']} | **{r['apgr']:.3f}** | {_pct(r['cpt50'])} | "
            f"{_pct(r['cpt80'])} | {r['random_apgr']:.3f} | {r['oracle']['apgr']:.3f} | "
            f"{paper.get('apgr', '—')} | {_pct(paper.get('cpt50'))} | "
            f"{_pct(paper.get('cpt80'))} |"
        )
    rb = _load(folder, "routerbench")
    if rb is not None:
        frac = rb["cost_fraction_at_top_accuracy"]
        lines += [
            "",
            f"RouterBench (test, n={rb['n']}, {len(rb['models'])} models): top model "
            f"{rb['top_model']} accuracy {rb['top_accuracy']:.4f} at "
            f"${rb['top_cost_usd']:.6f}/query; tierwise reaches it at "
            f"{'never' if frac is None else f'{frac:.1%}'} of its cost; best router accuracy "
            f"{rb['router_best_accuracy']:.4f}; oracle {rb['oracle']['accuracy']:.4f} at "
            f"{rb['oracle']['cost_usd'] / rb['top_cost_usd']:.1%} of the cost.",
        ]
    tiers = _load(folder, "tiers")
    if tiers is not None:
        lines.append(
            f"Tier taxonomy, held-out prompts (n={tiers['n']}): accuracy "
            f"{tiers['accuracy']:.1%}, severe errors {tiers['severe_errors']}."
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
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    sys.stdout.write(render(Path(args[0] if args else "docs/eval")) + "\n")


if __name__ == "__main__":
    main()

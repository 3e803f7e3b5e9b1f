"""PNG plots of the evaluation curves (matplotlib, headless)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_routellm(result: dict[str, Any], path: Path) -> None:
    """Quality over % strong calls: router, random, oracle, weak/strong, the paper's CPTs."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)

    def curve(points: list[dict[str, float]]) -> tuple[list[float], list[float]]:
        ordered = sorted(points, key=lambda p: (p["strong_pct"], p["quality"]))
        return [p["strong_pct"] for p in ordered], [p["quality"] for p in ordered]

    x, y = curve(result["points"])
    ax.plot(x, y, "o-", color="tab:blue", label=f"tierwise (APGR {result['apgr']:.3f})")
    x, y = curve(result["random_points"])
    ax.plot(x, y, "--", color="grey", label=f"random (APGR {result['random_apgr']:.3f})")
    x, y = curve(result["oracle"]["points"])
    ax.plot(x, y, ":", color="tab:green", label=f"oracle (APGR {result['oracle']['apgr']:.3f})")
    weak, strong = result["weak_quality"], result["strong_quality"]
    ax.axhline(weak, color="tab:red", lw=0.8, label=f"weak only ({weak:.3f})")
    ax.axhline(strong, color="tab:purple", lw=0.8, label=f"strong only ({strong:.3f})")
    paper = result.get("paper") or {}
    for key, frac in (("cpt50", 0.5), ("cpt80", 0.8)):
        if paper.get(key) is not None:
            ax.plot(
                [paper[key]],
                [weak + frac * (strong - weak)],
                "x",
                color="black",
                ms=9,
                label=f"paper best {key.upper()} ({paper[key]:.1f}%)",
            )
    ax.set_xlabel("% calls to the strong model")
    ax.set_ylabel("quality (accuracy or judge score)")
    ax.set_title(f"RouteLLM {result['benchmark']} ({result['split']}, n={result['n']})")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def plot_routerbench(result: dict[str, Any], path: Path) -> None:
    """Accuracy over average cost per query: router curve, single models, mixing, oracle."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 4.8), dpi=120)
    pts = sorted(result["points"], key=lambda p: p["cost_usd"])
    ax.plot(
        [p["cost_usd"] for p in pts],
        [p["accuracy"] for p in pts],
        ".-",
        color="tab:blue",
        label="tierwise policy (tolerance sweep)",
    )
    mix = result["random_mix"]
    ax.plot(
        [m["cost_usd"] for m in mix],
        [m["accuracy"] for m in mix],
        "--",
        color="grey",
        label="random mixing of single models",
    )
    for s in result["singles"]:
        ax.plot(s["cost_usd"], s["accuracy"], "s", color="tab:orange", ms=5)
        ax.annotate(s["model"].split("/")[-1], (s["cost_usd"], s["accuracy"]), fontsize=6)
    o = result["oracle"]
    ax.plot(o["cost_usd"], o["accuracy"], "*", color="tab:green", ms=12, label="oracle")
    ax.axhline(result["top_accuracy"], color="tab:red", lw=0.7, label="best single model")
    ax.set_xscale("log")
    ax.set_xlabel("average cost per query (USD, log scale)")
    ax.set_ylabel("accuracy")
    ax.set_title(
        f"RouterBench ({result['split']}, n={result['n']}, {len(result['models'])} models)"
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)

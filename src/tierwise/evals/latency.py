"""``tierwise eval latency``: how long the default decision takes, per request.

Measures ``Router.decide`` (classifier + policy, no provider call) on real prompts, after a
warm-up pass, with ``time.perf_counter_ns``. A benchmark, not a test: numbers depend on the
machine and its load. Two views of the same samples: every sample (what a request saw, other
processes' preemptions included), and per prompt the fastest of its ``repeat`` runs (the
decision's own cost, with preemptions by other processes filtered out). The load average at the
start is recorded so a reader can tell a busy machine.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from tierwise.router import Router

Tick = Callable[[], None]


def measure(
    router: Router,
    prompts: Sequence[tuple[str, str]],
    *,
    repeat: int = 3,
    max_chars: int | None = 8_000,
    tick: Tick | None = None,
) -> dict[str, Any]:
    chosen = [(p, s) for p, s in prompts if max_chars is None or len(p) <= max_chars]
    if not chosen:
        raise ValueError("no prompts to time")

    async def run() -> list[float]:
        for p, s in chosen[:200]:  # warm-up: caches, branch predictors, lazy imports
            await router.decide(p, s)
        samples = []
        for _ in range(repeat):
            for p, s in chosen:
                start = time.perf_counter_ns()
                await router.decide(p, s)
                samples.append((time.perf_counter_ns() - start) / 1e6)
            if tick is not None:
                tick()
        return samples

    load = os.getloadavg()
    ms = np.asarray(asyncio.run(run()))
    fastest = ms.reshape(repeat, len(chosen)).min(axis=0)
    lengths = np.asarray([len(p) for p, _ in chosen] * repeat)
    buckets = {}
    for lo, hi in ((0, 500), (500, 2_000), (2_000, 8_001)):
        sel = ms[(lengths >= lo) & (lengths < hi)]
        if len(sel):
            buckets[f"{lo}-{hi - 1}"] = {
                "n": len(sel),
                "p50_ms": round(float(np.percentile(sel, 50)), 4),
                "p99_ms": round(float(np.percentile(sel, 99)), 4),
            }
    return {
        "classifier": router.classifier.name,
        "prompts": len(chosen),
        "excluded_over_max_chars": len(prompts) - len(chosen),
        "max_chars": max_chars,
        "repeat": repeat,
        "samples": len(ms),
        "p50_ms": round(float(np.percentile(ms, 50)), 4),
        "p90_ms": round(float(np.percentile(ms, 90)), 4),
        "p99_ms": round(float(np.percentile(ms, 99)), 4),
        "max_ms": round(float(ms.max()), 4),
        "mean_ms": round(float(ms.mean()), 4),
        "min_of_repeats": {
            "p50_ms": round(float(np.percentile(fastest, 50)), 4),
            "p99_ms": round(float(np.percentile(fastest, 99)), 4),
            "max_ms": round(float(fastest.max()), 4),
        },
        "load_average_1m_at_start": round(load[0], 2),
        "cpus": os.cpu_count(),
        "by_length": buckets,
    }

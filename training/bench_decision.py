"""CPU time per routing decision (``Router.decide``: classifier + policy, default settings) over
the ShareGPT first turns, by prompt length; the median of several passes. Process CPU time, so
other processes' load inflates it less than wall-clock percentiles (``tierwise eval latency``).

    .venv/bin/python training/bench_decision.py --prompts ../shared/data/prompts/sharegpt_first_turns.jsonl

Run it with PYTHONPATH pointing at another checkout's src/ to compare two versions.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--prompts", type=Path, required=True)
    ap.add_argument("--passes", type=int, default=5)
    ap.add_argument("--max-chars", type=int, default=8000)
    args = ap.parse_args()
    from tierwise.config import load
    from tierwise.router import Router

    home = tempfile.mkdtemp()
    settings = load(environ={"TIERWISE_HOME": home, "TIERWISE_PROVIDER": "simulated"})
    router = Router(settings)
    prompts = [json.loads(line)["prompt"] for line in args.prompts.open(encoding="utf-8")]
    prompts = [p for p in prompts if len(p) <= args.max_chars]
    groups = {
        "all": prompts,
        "< 500 chars": [p for p in prompts if len(p) < 500],
        "≥ 2000 chars": [p for p in prompts if len(p) >= 2000],
    }

    async def run(ps: list[str]) -> float:
        start = time.process_time()
        for p in ps:
            await router.decide(p)
        return (time.process_time() - start) / len(ps) * 1e6

    asyncio.run(run(prompts[:300]))  # warm-up
    out = {"load_average_1m": round(os.getloadavg()[0], 2), "passes": args.passes}
    for name, ps in groups.items():
        samples = [asyncio.run(run(ps)) for _ in range(args.passes)]
        out[name] = {"n": len(ps), "cpu_us_median": round(statistics.median(samples), 1)}
    print(json.dumps(out))


if __name__ == "__main__":
    main()

"""How far is session routing's switching from what foresight could do? (issue 13)

    .venv/bin/python benchmarks/session_hindsight.py [--trace tests/data/sessions/corpus.jsonl.gz]

Routes every turn of the replay corpus to the tier its generator meant (``--labels``: perfect
classification, so that only the switching is compared) and prices each conversation thread
two ways, with the same per-model prompt-cache simulation as ``tierwise replay``:

* **session routing**: ``SessionRouter`` as shipped (break-even switching, cache-hold);
* **hindsight**: the cheapest choice of tier per turn, never below the turn's label, found
  knowing every later turn (a beam search over the turns; each turn's requests are simulated
  on the chosen model's cache). No online policy can do better.

Threads whose requests name a model or are utility side requests cost the same either way and
are left out of both sums. The gap is printed in points of the all-top-tier cost.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
from collections import defaultdict
from decimal import Decimal
from pathlib import Path

from tierwise import config as config_mod
from tierwise.cli_replay import label_oracle
from tierwise.sessions import replay as replay_mod
from tierwise.sessions.cachesim import ModelCache
from tierwise.sessions.replay import Replayer, TraceRequest, load_requests
from tierwise.types import Usage

ROOT = Path(__file__).resolve().parents[1]
BEAM_PER_TIER = 4  # states kept per last tier after each turn (the result is stable from 2)


def session_costs(
    settings: config_mod.Settings, requests: list[TraceRequest]
) -> tuple[dict[str, Decimal], Decimal]:
    """Session routing's cost per thread with perfect labels, and the all-top cost."""
    catalogue = settings.catalogue()
    served: dict[str, Decimal] = defaultdict(Decimal)
    charge = replay_mod._Accounts.charge

    def counting(
        self: replay_mod._Accounts, policy: str, req: TraceRequest, tier: str, model: str
    ) -> Usage:
        usage = charge(self, policy, req, tier, model)
        if policy == "session":
            served[req.thread] += catalogue.cost(usage, model).usd or Decimal(0)
        return usage

    replay_mod._Accounts.charge = counting  # type: ignore[method-assign]
    try:
        oracle = label_oracle(settings, requests)
        report = asyncio.run(Replayer(settings, decide=oracle).run(requests))
    finally:
        replay_mod._Accounts.charge = charge  # type: ignore[method-assign]
    return served, report.policies["top"].cost_usd


def hindsight(settings: config_mod.Settings, reqs: list[TraceRequest]) -> Decimal:
    """The cheapest tiers for one thread's turns, never below a turn's label, knowing the
    future (beam search, each turn simulated on the chosen model's cache)."""
    catalogue = settings.catalogue()
    order = {t.name: i for i, t in enumerate(settings.tiers)}
    model_of = {t.name: t.model for t in settings.tiers}

    def price(caches: dict[str, ModelCache], tier: str, req: TraceRequest) -> Decimal:
        model = model_of[tier]
        cache = caches.setdefault(model, ModelCache(model, max_entries=64))
        use = cache.request(req.shape.cache.scaled(req.token_scale), req.t, commit=True)
        usd = catalogue.cost(use.usage(req.output_tokens, req.thinking_tokens), model).usd
        return usd or Decimal(0)

    turns: list[list[TraceRequest]] = []
    for req in reqs:
        if req.shape.kind == "turn" or not turns:
            turns.append([req])
        else:
            turns[-1].append(req)
    beam: list[tuple[Decimal, str, dict[str, ModelCache]]] = [(Decimal(0), "", {})]
    for turn in turns:
        label = turn[0].label or settings.default_tier
        options = [t for t in settings.tier_names if order[t] >= order[label]]
        grown = []
        for cost, _, caches in beam:
            for tier in options:
                mine = {m: copy.deepcopy(c) for m, c in caches.items()}
                grown.append((cost + sum(price(mine, tier, r) for r in turn), tier, mine))
        grown.sort(key=lambda item: item[0])
        kept: dict[str, int] = defaultdict(int)
        beam = []
        for item in grown:
            if kept[item[1]] < BEAM_PER_TIER:
                beam.append(item)
                kept[item[1]] += 1
    return beam[0][0]


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--trace", type=Path, default=ROOT / "tests/data/sessions/corpus.jsonl.gz")
    args = parser.parse_args()
    settings = config_mod.load(environ={}, provider={"kind": "simulated"})
    requests = sorted(load_requests(args.trace), key=lambda r: r.t)
    served, top = session_costs(settings, requests)
    threads: dict[str, list[TraceRequest]] = defaultdict(list)
    for req in requests:
        threads[req.thread].append(req)
    session_sum = hindsight_sum = Decimal(0)
    compared = 0
    for thread, reqs in threads.items():
        if any(r.routed_model != "auto" or r.shape.output_format is not None for r in reqs):
            continue
        hindsight_sum += hindsight(settings, reqs)
        session_sum += served[thread]
        compared += 1
    gap = (session_sum - hindsight_sum) / top * 100
    print(f"{compared} threads, all-top cost of the whole trace ${top:.2f}")
    print(f"session routing (labels) ${session_sum:.2f}; hindsight ${hindsight_sum:.2f}")
    print(f"foresight would save {gap:.2f} points of the all-top cost")


if __name__ == "__main__":
    main()

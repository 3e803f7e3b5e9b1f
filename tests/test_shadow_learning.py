"""Issue 14, item 4: the deployment learns from its own shadow verdicts, end to end.

The upstream is a fake whose cheap tier (claude-haiku-4-5) answers badly on a hidden class of
prompts — formatting requests full of arithmetic — and well on everything else; the fake judge
prefers the reference answer exactly where the cheap one is bad, and calls the rest a tie.
Nothing in tierwise knows about the class.

1. A gateway with shadow evaluation at ``sample_rate = 1`` (``make_app``: the real SQLite
   ledger, real HTTP, the official SDK as client) answers N = 120 ``auto`` requests, 60 of each
   class. The shipped prior sends both classes to haiku; every one is shadowed on opus and
   judged in both orders.
2. ``tierwise train --from-ledger`` runs once (a subprocess, default settings): it fits an
   adapter on those verdicts, validates it on the newest 20 %, and activates it.
3. A new gateway process on the same home (``classifier.model = "active"``) answers 60 fresh
   prompts, 30 of each class, still shadowed.

Asserted: the share of the hidden class routed above haiku rises from at most 20 % to at least
80 %; the measured quality retained (over the judged requests of each phase) rises by at least
0.3 — from about ½ (the hidden half of haiku's answers lose) towards 1 — while the other class
stays on haiku (at least 80 %), so routing still saves. The numbers of one run are in
EVALUATION.md ("Learning from this deployment, end to end").
"""

from __future__ import annotations

import collections
import datetime as dt
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anthropic
import pytest

from tests.fakes.judging import RespondingFake, is_judge_call, judge_sections, last_user_text
from tests.servers import ServerThread
from tierwise.classifiers import adapter as adapter_mod
from tierwise.config import Settings, load, revalidate
from tierwise.gateway.server import make_app
from tierwise.ledger import open_store
from tierwise.quality import shadow_quality
from tierwise.shadow.runner import ShadowEvaluator

TIERWISE = str(Path(sys.executable).parent / "tierwise")
N_PER_CLASS = 60  # N = 120 shadowed requests before training
FRESH_PER_CLASS = 30  # after the restart
CHEAP_MODEL = "claude-haiku-4-5"
BAD = "Sorry, I could not work that out."
FIELDS = ["name", "city", "email", "team", "plan", "status"]
VALUES = ["Ann", "Lisbon", "ann@example.com", "search", "pro", "active", "Osaka", "Tom"]


def plain(i: int) -> str:
    """Formatting requests the cheap tier answers as well as the top one."""
    a, b = FIELDS[i % len(FIELDS)], FIELDS[(i + 2) % len(FIELDS)]
    return f"Format this record as JSON: {a} {VALUES[i % 8]}, {b} {VALUES[(i + 3) % 8]}"


def hidden(i: int) -> str:
    """The hidden class: formatting requests full of arithmetic, where the cheap tier fails."""
    return (
        f"Format this as JSON: total = {i + 12} * {i % 7 + 3} + {i * 13 % 97} / 4, "
        f"tax = {i % 9 + 1}.5 * 3 - 2, net = {i + 40} - {i % 5} * 6 = ?"
    )


def is_hidden(prompt: str) -> bool:
    return prompt.startswith("Format this as JSON: total =")


def respond(body: dict[str, Any]) -> str | None:
    """The fake upstream's answers: a bad one from the cheap tier on the hidden class; the
    judge prefers whichever answer is not bad, and calls two good answers a tie."""
    if is_judge_call(body):
        sections = judge_sections(body["messages"][0]["content"])
        bad = {letter for letter, text in sections.items() if BAD in text}
        if bad == {"A"}:
            return "Answer A does not answer the request.\nVERDICT: B"
        if bad == {"B"}:
            return "Answer B does not answer the request.\nVERDICT: A"
        return "Both answers do what was asked.\nVERDICT: TIE"
    if body.get("model") == CHEAP_MODEL and is_hidden(last_user_text(body)):
        return BAD
    return None  # the fake's own (good) answer


@pytest.fixture(scope="module")
def fake() -> Iterator[RespondingFake]:
    with RespondingFake(respond) as server:
        yield server


def settings_for(home: Path, fake: RespondingFake) -> Settings:
    settings = load(
        environ={
            "TIERWISE_HOME": str(home),
            "ANTHROPIC_API_KEY": fake.api_key,
            "ANTHROPIC_BASE_URL": fake.base_url,
            "TIERWISE_SHADOW": "true",
        }
    )
    shadow = settings.shadow.model_copy(
        update={"sample_rate": 1.0, "queue_size": 1000, "concurrency": 4}
    )
    return revalidate(settings, shadow=shadow)


def all_settled(app: Any) -> Callable[[], bool]:
    shadow: ShadowEvaluator = app.state.gateway.shadow

    def done() -> bool:
        counts = shadow.counts
        ended = counts["judged"] + counts["errors"] + counts["failed"]
        return ended >= counts["queued"] and shadow.stats()["queued_now"] == 0

    return done


def serve(settings: Settings, prompts: list[str]) -> tuple[dict[str, list[str]], dict[str, int]]:
    """Answer ``prompts`` through a fresh gateway; wait for every comparison; stop it (the
    ledger is flushed). Returns the tiers per class and the evaluator's counters."""
    app = make_app(settings)
    tiers: dict[str, list[str]] = collections.defaultdict(list)
    with ServerThread(app) as server:
        client = anthropic.Anthropic(base_url=server.base_url, api_key="x", max_retries=0)
        for prompt in prompts:
            raw = client.messages.with_raw_response.create(
                model="auto", max_tokens=200, messages=[{"role": "user", "content": prompt}]
            )
            tiers["hidden" if is_hidden(prompt) else "plain"].append(raw.headers["x-tierwise-tier"])
        done = all_settled(app)
        deadline = time.monotonic() + 60
        while not done():
            assert time.monotonic() < deadline, app.state.gateway.shadow.stats()
            time.sleep(0.02)
        counts = dict(app.state.gateway.shadow.counts)
    return tiers, counts


def above_cheap(tiers: list[str]) -> float:
    return sum(1 for t in tiers if t != "haiku") / len(tiers)


def measured(settings: Settings, since: dt.datetime) -> dict[str, Any]:
    store = open_store(settings)
    try:
        return shadow_quality(store, since=since, tier_order=settings.tier_names)
    finally:
        store.close()


def train(home: Path) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANTHROPIC_", "TIERWISE_"))}
    env |= {"TIERWISE_HOME": str(home)}
    proc = subprocess.run(
        [TIERWISE, "train", "--from-ledger", "--json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=240,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    result: dict[str, Any] = json.loads(proc.stdout)
    return result


def test_shadow_verdicts_teach_the_router_the_hidden_class(
    fake: RespondingFake, tmp_path: Path
) -> None:
    settings = settings_for(tmp_path, fake)

    # 1. N shadowed requests under the shipped prior
    first_start = dt.datetime.now(dt.UTC)
    prompts = [p for i in range(N_PER_CLASS) for p in (plain(i), hidden(i))]
    before, counts = serve(settings, prompts)
    assert counts["judged"] == counts["queued"] == counts["sampled"]
    assert not any(k.startswith("dropped") for k in counts)
    first = measured(settings, first_start)

    # 2. one `tierwise train --from-ledger`
    result = train(tmp_path)
    assert result["accepted"], result["reason"]
    assert result["activated"]["active"] == result["version"] == "local-0001"
    assert result["verdicts"] == first["overall"]["judged"]
    assert adapter_mod.active(tmp_path) == "local-0001"

    # 3. restart with the new adapter; fresh prompts of both classes
    second_start = dt.datetime.now(dt.UTC)
    fresh = [p for i in range(500, 500 + FRESH_PER_CLASS) for p in (plain(i), hidden(i))]
    after, _ = serve(settings, fresh)
    second = measured(settings, second_start)

    share_before, share_after = above_cheap(before["hidden"]), above_cheap(after["hidden"])
    retained_before = first["overall"]["quality_retained"]
    retained_after = second["overall"]["quality_retained"]
    print(  # the numbers EVALUATION.md quotes (pytest -s shows them)
        f"\nN={len(prompts)} judged={first['overall']['judged']} "
        f"hidden class above haiku: {share_before:.0%} -> {share_after:.0%}; "
        f"plain class on haiku: {1 - above_cheap(before['plain']):.0%} -> "
        f"{1 - above_cheap(after['plain']):.0%}; quality retained: {retained_before:.3f} "
        f"{first['overall']['interval_95']} -> {retained_after:.3f} "
        f"{second['overall']['interval_95']} (judged {second['overall']['judged']}); "
        f"held-out log loss: {result['reason']}"
    )
    assert share_before <= 0.2  # the prior sends the hidden class to the cheap tier
    assert share_after >= 0.8  # learned: it now goes to a stronger tier
    assert above_cheap(after["plain"]) <= 0.2  # the rest stays cheap
    assert retained_before is not None and retained_after is not None
    assert retained_after - retained_before >= 0.3
    low_after, _ = second["overall"]["interval_95"]
    _, high_before = first["overall"]["interval_95"]
    assert low_after > high_before  # the rise is beyond both intervals

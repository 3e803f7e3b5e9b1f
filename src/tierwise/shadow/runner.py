"""The shadow evaluator: sampling, the bounded queue, the background comparisons.

It is both the gateway's :class:`~tierwise.lifecycle.Capture` (asked once per routed request,
right after the decision: keep this one?) and one of its observers (told about every finished
request). A sampled request's outcome carries its Messages body and the answer's text (the
stream's text for a streamed answer); if the request was answered, in mode ``auto``, by a tier
cheaper than the reference, a job goes into a bounded queue and :attr:`concurrency` worker
tasks compare it in the background:

1. the same body, adapted to the reference tier as a routed request to that tier would be, is
   sent to the reference model (not streamed; the gateway's upstream client, with its own
   cooldowns so shadow traffic never cools a model down for clients);
2. the judge compares the two answers twice, in both orders (:mod:`tierwise.shadow.judge`);
3. the verdict, the two calls' usage and their exact cost go to the ledger
   (:meth:`~tierwise.ledger.store.LedgerStore.add_verdict`, in a worker thread).

Before step 1 the worst case of all three calls is held against the day's shadow budget
(:mod:`tierwise.shadow.budget`); a comparison that does not fit is skipped. The client never
waits for any of this: its answer was complete before the job existed, ``on_outcome`` only
appends to the queue, and a full queue drops the job (counted, logged). Nothing here raises into
the request path.

**Privacy.** The body and answers live in memory only for the comparison. The ledger gets the
verdict, tokens and costs; the prompt (the latest user turn's text, as the classifier saw it) is
written to the request's row only when ``ledger.store_prompts`` is on, so the adapter can learn
its words (``tierwise train --from-ledger``); otherwise learning uses the decision columns
already stored.
"""

from __future__ import annotations

import asyncio
import collections
import datetime as dt
import logging
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Protocol

import orjson

from tierwise.accounting import BadUsage, UsageBounds, measure_usage
from tierwise.budgets import worst_case_cost
from tierwise.gateway.anthropic_api import error_details
from tierwise.gateway.attempts import Caller, Cooldowns, Exhausted
from tierwise.gateway.validate import BadUpstreamReply, check_message
from tierwise.ledger.store import ShadowVerdict
from tierwise.lifecycle import Outcome, RequestLife, Target
from tierwise.shadow import judge as judge_mod
from tierwise.shadow.budget import DailyBudget
from tierwise.types import Usage
from tierwise.worstcase import input_bound

if TYPE_CHECKING:
    from tierwise.config import Settings
    from tierwise.gateway.app import Gateway
    from tierwise.pricing import PriceCatalogue

log = logging.getLogger("tierwise.shadow")

_WARN_EVERY_S = 10.0
#: JSON can write one character of an answer as at most 6 bytes (``\\u0001``), and the worst
#: case takes a token for every byte of the body (:func:`tierwise.worstcase.input_bound`)
_BYTES_PER_CHAR = 6


class VerdictStore(Protocol):
    """Where verdicts go (:class:`~tierwise.ledger.store.LedgerStore`). Blocking: called in a
    worker thread."""

    def add_verdict(self, verdict: ShadowVerdict) -> None: ...


@dataclass(frozen=True, slots=True)
class Job:
    """One answered request to compare (held in memory only)."""

    request_id: str
    ts: dt.datetime
    tier: str
    model: str
    body: Mapping[str, Any]
    answer: str


@dataclass
class CallResult:
    """One shadow or judge call. ``cost_usd``: 0 when nothing was billed (an error status, no
    reply), None when it is unknown (the usage could not be read, or the model is unpriced)."""

    model: str
    text: str | None = None
    usage: Usage = field(default_factory=Usage)
    cost_usd: Decimal | None = Decimal(0)
    error: str | None = None
    stop_reason: str | None = None


def _add_usage(usages: list[Usage]) -> Usage:
    fields = (
        "input_tokens",
        "output_tokens",
        "cache_read_tokens",
        "cache_write_5m_tokens",
        "cache_write_1h_tokens",
        "thinking_tokens",
    )
    return Usage(**{f: sum(getattr(u, f) for u in usages) for f in fields})


def _sum_costs(costs: list[Decimal | None]) -> Decimal | None:
    return None if any(c is None for c in costs) else sum((c for c in costs if c), Decimal(0))


@dataclass
class _Plan:
    """A comparison's shadow payload and what is still held for it."""

    payload: bytes
    bounds: UsageBounds
    shadow_hold: Decimal
    judge_hold: Decimal


@dataclass
class _Run:
    """What a comparison has found so far."""

    shadow: CallResult
    judged: bool = False
    judge_calls: list[CallResult] = field(default_factory=list)
    letters: dict[str, str] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)


class ShadowEvaluator:
    """See the module's docstring. Build it with :func:`attach` for a gateway."""

    def __init__(
        self,
        settings: Settings,
        *,
        caller: Caller,
        catalogue: PriceCatalogue,
        store: VerdictStore,
        adapt: Callable[[Mapping[str, Any], Target], dict[str, Any]],
        window: Callable[[str], int],
        spent_today_usd: Decimal = Decimal(0),
        store_prompt: Callable[[str, str], None] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        cfg = settings.shadow
        self.cfg = cfg
        names = settings.tier_names
        reference = cfg.reference_tier or names[-1]
        self.reference = Target(reference, settings.tier(reference).model)
        self.cheaper = frozenset(names[: names.index(reference)])
        self.judge_model = cfg.judge_model or settings.top_tier.model
        self.rubric = judge_mod.rubric_name(cfg.judge_prompt)
        self.caller = caller
        self.catalogue = catalogue
        self.store = store
        self.adapt = adapt
        self.window = window
        self.store_prompt = store_prompt
        self.headers = {"anthropic-version": settings.gateway.upstream_anthropic_version}
        workers = max(1, settings.gateway.workers)
        # Each worker process gets an equal share of the day (and of what was spent today).
        self.budget = DailyBudget(
            cfg.daily_budget_usd / workers, spent_today_usd=spent_today_usd / workers
        )
        self.rng = rng or random.Random()
        self.counts: collections.Counter[str] = collections.Counter()
        self._queue: asyncio.Queue[Job] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._closing = False
        self._last_warning = 0.0

    # -- the request path: quick, never raising ---------------------------------------------
    def wants(self, life: RequestLife) -> bool:
        """Capture this request? (``auto``, planned for a cheaper tier, sampled, room left.)"""
        planned = life.planned
        if self._closing or life.mode != "auto" or planned is None:
            return False
        if planned.tier not in self.cheaper:
            return False
        rate = self.cfg.sample_rate
        if rate <= 0 or (rate < 1 and self.rng.random() >= rate):
            return False
        if self._queue is not None and self._queue.full():
            self._drop("queue full")
            return False
        if self.budget.remaining_usd() <= 0:
            self.counts["skipped: daily budget spent"] += 1
            return False
        self.counts["sampled"] += 1
        return True

    def on_outcome(self, outcome: Outcome) -> None:
        """Queue a sampled, answered request for comparison (never blocks)."""
        if outcome.request_body is None:
            return
        reason = self._unfit(outcome)
        if reason is not None:
            self.counts[f"skipped: {reason}"] += 1
            return
        assert outcome.target is not None
        assert outcome.target.tier is not None
        assert outcome.answer_text is not None
        job = Job(
            request_id=outcome.request_id,
            ts=outcome.ts,
            tier=outcome.target.tier,
            model=outcome.model or outcome.target.model,
            body=outcome.request_body,
            answer=outcome.answer_text,
        )
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if self._loop is None:
            if running is None:
                self.counts["skipped: no event loop"] += 1
                return
            self._start(running)
        if running is self._loop:
            self._put(job)
        else:
            assert self._loop is not None
            self._loop.call_soon_threadsafe(self._put, job)

    def _unfit(self, outcome: Outcome) -> str | None:
        if outcome.status != "ok":
            return "the request failed"
        if outcome.mode != "auto":
            return "not routed (a tier or model was named)"
        target = outcome.target
        if target is None or target.tier not in self.cheaper:
            return "answered by the reference tier or above"
        if not outcome.answer_text:
            return "the answer has no text"
        if outcome.usage.total_input_tokens > self.cfg.max_input_tokens:
            return f"more than {self.cfg.max_input_tokens} input tokens"
        return None

    def _start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._queue = asyncio.Queue(self.cfg.queue_size)
        self._tasks = [
            loop.create_task(self._work(), name=f"tierwise-shadow-{i}")
            for i in range(self.cfg.concurrency)
        ]

    def _put(self, job: Job) -> None:
        assert self._queue is not None
        if self._closing:
            self._drop("shutting down")
            return
        try:
            self._queue.put_nowait(job)
        except asyncio.QueueFull:
            self._drop("queue full")
            return
        self.counts["queued"] += 1

    def _drop(self, why: str) -> None:
        self.counts[f"dropped: {why}"] += 1
        now = time.monotonic()
        if now - self._last_warning >= _WARN_EVERY_S:
            self._last_warning = now
            dropped = sum(v for k, v in self.counts.items() if k.startswith("dropped"))
            log.warning(
                "shadow evaluation: a sampled request was dropped (%s); %d so far", why, dropped
            )

    # -- the background -------------------------------------------------------------------------
    async def _work(self) -> None:
        assert self._queue is not None
        queue = self._queue
        while True:
            job = await queue.get()
            try:
                await self.compare(job)
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug: this comparison is lost, the others go on; logged loudly
                self.counts["failed"] += 1
                log.exception("shadow comparison of request %s failed", job.request_id)
            finally:
                queue.task_done()

    async def aclose(self) -> None:
        """Stop: wait up to ``shutdown_grace_s`` for queued and running comparisons, then
        cancel the rest (counted as dropped; a cancelled comparison keeps its hold as spent)."""
        self._closing = True
        if not self._tasks or self._queue is None:
            return
        queue = self._queue
        try:
            async with asyncio.timeout(self.cfg.shutdown_grace_s):
                await queue.join()
        except TimeoutError:
            pass
        left = queue.qsize()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        if left:
            self.counts["dropped: shutting down"] += left
            log.warning("shadow evaluation: %d queued comparison(s) dropped at shutdown", left)

    def stats(self) -> dict[str, Any]:
        """Counters and the day's budget (for the dashboard)."""
        return {
            "reference_tier": self.reference.tier,
            "judge_model": self.judge_model,
            "rubric": self.rubric,
            "sample_rate": self.cfg.sample_rate,
            "daily_budget_usd": format(self.budget.limit_usd, "f"),
            "spent_today_usd": format(self.budget.spent_usd, "f"),
            "held_usd": format(self.budget.held_usd, "f"),
            "queued_now": self._queue.qsize() if self._queue is not None else 0,
            "counts": dict(sorted(self.counts.items())),
        }

    # -- one comparison -------------------------------------------------------------------------
    def _worst(self, model: str, body: Mapping[str, Any], extra_tokens: int = 0) -> Decimal | None:
        payload = orjson.dumps(body)
        bound = input_bound(payload, body, self.window(model))
        return worst_case_cost(
            self.catalogue,
            model,
            min(bound.tokens + extra_tokens, self.window(model)),
            int(body.get("max_tokens") or 0),
            input_class=bound.input_class,
        )

    def _judge_requests(self, job: Job, reference_answer: str) -> tuple[Any, Any]:
        cfg = self.cfg
        return judge_mod.judge_requests(
            model=self.judge_model,
            conversation=judge_mod.conversation_text(job.body),
            cheap_answer=job.answer,
            reference_answer=reference_answer,
            judge_prompt=cfg.judge_prompt,
            max_tokens=cfg.judge_max_tokens,
            max_prompt_chars=cfg.max_prompt_chars,
            max_answer_chars=cfg.max_answer_chars,
        )

    def _plan(self, job: Job) -> _Plan | None:
        """The shadow call's payload and the worst cases to hold (None: skipped, counted)."""
        from tierwise.adapt import unadaptable

        ref = self.reference
        if unadaptable(job.body, self.catalogue.info(ref.model)) is not None:
            self.counts["skipped: the reference tier refuses the request"] += 1
            return None
        body = dict(self.adapt(job.body, ref))
        body.pop("stream", None)
        payload = orjson.dumps(body)
        max_tokens = int(body.get("max_tokens") or 0)
        bound = input_bound(payload, body, self.window(ref.model))
        shadow_hold = worst_case_cost(
            self.catalogue, ref.model, bound.tokens, max_tokens, input_class=bound.input_class
        )
        # The judge's worst case before the reference answer exists: its prompt without it,
        # plus the most the clipped answer can add.
        extra = _BYTES_PER_CHAR * self.cfg.max_answer_chars
        guesses = _sum_costs(
            [self._worst(self.judge_model, r.body, extra) for r in self._judge_requests(job, "")]
        )
        if shadow_hold is None or guesses is None:
            self.counts["skipped: unpriced model"] += 1
            return None
        return _Plan(payload, UsageBounds(bound.tokens, max_tokens), shadow_hold, guesses)

    async def compare(self, job: Job) -> ShadowVerdict | None:
        """Shadow, judge and record one job; the verdict stored (None when skipped)."""
        plan = self._plan(job)
        if plan is None:
            return None
        if not self.budget.reserve(plan.shadow_hold + plan.judge_hold):
            self.counts["skipped: daily budget spent"] += 1
            return None
        self.counts["compared"] += 1
        run = _Run(CallResult(self.reference.model, cost_usd=None))
        try:
            await self._shadow_and_judge(job, plan, run)
        finally:
            # Cancelled or failed midway: whatever is still held counts as spent.
            if plan.shadow_hold:
                self.budget.settle(plan.shadow_hold, None)
            if plan.judge_hold:
                self.budget.settle(plan.judge_hold, None if run.judged else Decimal(0))
        verdict = ShadowVerdict(
            request_id=job.request_id,
            ts=dt.datetime.now(dt.UTC),
            tier=job.tier,
            model=job.model,
            reference_tier=self.reference.tier or "",
            reference_model=self.reference.model,
            judge_model=self.judge_model,
            rubric=self.rubric,
            verdict_cheap_first=run.letters.get("cheap_first"),
            verdict_reference_first=run.letters.get("reference_first"),
            shadow_usage=run.shadow.usage,
            judge_usage=_add_usage([c.usage for c in run.judge_calls]),
            shadow_cost_usd=run.shadow.cost_usd,
            judge_cost_usd=_sum_costs([c.cost_usd for c in run.judge_calls]),
            error="; ".join(run.errors)[:4000] or None,
        )
        self.counts["judged" if verdict.error is None else "errors"] += 1
        await self._record(verdict, job)
        return verdict

    async def _shadow_and_judge(self, job: Job, plan: _Plan, run: _Run) -> None:
        """The reference's answer, then both judge calls; holds settled as each ends."""
        run.shadow = await self._call(self.reference, plan.payload, plan.bounds)
        self.budget.settle(plan.shadow_hold, run.shadow.cost_usd)
        plan.shadow_hold = Decimal(0)
        if run.shadow.error is not None:
            run.errors.append(f"shadow call: {run.shadow.error}")
            return
        if not run.shadow.text:
            stop = run.shadow.stop_reason
            run.errors.append(f"shadow call: the reference answered without text ({stop})")
            return
        requests = self._judge_requests(job, run.shadow.text)
        needed = _sum_costs([self._worst(self.judge_model, r.body) for r in requests])
        if needed is None:  # cannot happen: the same model was priced a moment ago
            raise AssertionError(f"{self.judge_model} has no price")
        if needed > plan.judge_hold and not self.budget.reserve(needed - plan.judge_hold):
            run.errors.append("judge: the daily shadow budget ran out")
            return
        if needed < plan.judge_hold:
            self.budget.release(plan.judge_hold - needed)
        plan.judge_hold = needed
        run.judged = True
        run.judge_calls = list(
            await asyncio.gather(*(self._judge(r, run.letters, run.errors) for r in requests))
        )
        self.budget.settle(plan.judge_hold, _sum_costs([c.cost_usd for c in run.judge_calls]))
        plan.judge_hold = Decimal(0)

    async def _judge(
        self, request: judge_mod.JudgeRequest, letters: dict[str, str], errors: list[str]
    ) -> CallResult:
        body = request.body
        payload = orjson.dumps(body)
        bound = input_bound(payload, body, self.window(self.judge_model))
        result = await self._call(
            Target(None, self.judge_model),
            payload,
            UsageBounds(bound.tokens, self.cfg.judge_max_tokens),
        )
        if result.error is not None:
            errors.append(f"judge ({request.order}): {result.error}")
            return result
        try:
            letter = judge_mod.parse_verdict(result.text or "")
        except judge_mod.JudgeReplyError as exc:
            cut = " (cut at max_tokens)" if result.stop_reason == "max_tokens" else ""
            errors.append(f"judge ({request.order}): {exc}{cut}")
            return result
        letters[request.order] = judge_mod.as_order_verdict(letter, request.cheap_is)
        return result

    async def _call(self, target: Target, payload: bytes, bounds: UsageBounds) -> CallResult:
        """One upstream Messages call, not streamed, within ``shadow.timeout_s``."""
        model = target.model
        deadline = time.perf_counter() + self.cfg.timeout_s
        try:
            attempt = await self.caller.call(
                [target],
                lambda _: payload,
                self.headers,
                path="/v1/messages",
                stream=False,
                deadline=deadline,
            )
        except Exhausted as exc:
            return CallResult(model, error=str(exc))
        reply = attempt.reply
        try:
            async with asyncio.timeout(max(0.001, deadline - time.perf_counter())):
                data = await reply.read()
        except TimeoutError:
            return CallResult(model, cost_usd=None, error=f"{model}: reply not read in time")
        finally:
            reply.close()
        if reply.status != 200:
            kind, message, _ = error_details(data)
            return CallResult(
                model, error=f"{model} answered HTTP {reply.status} ({kind}): {message}"
            )
        try:
            message_obj = check_message(data)
        except BadUpstreamReply as exc:
            return CallResult(
                model, cost_usd=None, error=f"{model} returned an invalid reply: {exc}"
            )
        try:
            usage = measure_usage(message_obj.get("usage"), bounds).usage
        except BadUsage as exc:
            return CallResult(model, cost_usd=None, error=f"{model}: usage unknown: {exc}")
        cost = self.catalogue.cost(usage, model, dt.datetime.now(dt.UTC)).usd
        text = "".join(b["text"] for b in message_obj["content"] if b.get("type") == "text")
        return CallResult(
            model,
            text=text,
            usage=usage,
            cost_usd=cost,
            stop_reason=message_obj.get("stop_reason"),
        )

    async def _record(self, verdict: ShadowVerdict, job: Job) -> None:
        try:
            await asyncio.to_thread(self.store.add_verdict, verdict)
        except Exception:  # a storage fault: this verdict is lost (its cost was counted)
            self.counts["not stored"] += 1
            log.exception("shadow evaluation: could not store the verdict for %s", job.request_id)
            return
        if self.store_prompt is not None:
            from tierwise.gateway.shape import conversation_input

            try:
                prompt = conversation_input(dict(job.body)).prompt
                await asyncio.to_thread(self.store_prompt, job.request_id, prompt)
            except Exception:
                self.counts["prompt not stored"] += 1
                log.exception("shadow evaluation: could not store the prompt of %s", job.request_id)


def spent_today(store: Any, now: dt.datetime | None = None) -> Decimal:
    """What shadow calls and judges cost since the start of today (UTC), from the ledger."""
    from tierwise.ledger.db import to_decimal

    now = now or dt.datetime.now(dt.UTC)
    start = dt.datetime.combine(now.astimezone(dt.UTC).date(), dt.time(), dt.UTC)
    db = store.db
    s = db.money_sum
    rows = db.query(
        f"SELECT {s}(shadow_cost_usd), {s}(judge_cost_usd) FROM shadow_verdicts WHERE ts >= ?",  # noqa: S608
        [db.ts_param(start)],
    )
    total = Decimal(0)
    for value in rows[0] if rows else ():
        total += to_decimal(value) or Decimal(0)
    return total


def attach(gw: Gateway) -> ShadowEvaluator | None:
    """Create the evaluator for a gateway and make it the gateway's capture and an observer.

    Verdicts go to the gateway ledger's store; a gateway without a ledger cannot record them,
    which is a configuration error. Against the simulated upstream (no API key) there is no
    model to judge with: shadowing stays off, and the log says so (None)."""
    from tierwise.errors import ConfigError
    from tierwise.ledger.store import LedgerStore

    settings = gw.settings
    if gw.upstream.simulated:
        log.warning(
            "shadow evaluation is on, but the upstream is the offline simulator (no API key): "
            "there is no model to judge with, so nothing is shadowed"
        )
        return None
    sink = gw.books.sink
    store = getattr(sink, "store", None)
    if not isinstance(store, LedgerStore):
        raise ConfigError(
            "shadow.enabled: shadow evaluation records its verdicts in the ledger, and this "
            "gateway has none (ledger.enabled = false); enable the ledger or turn shadowing off"
        )
    gwc = settings.gateway
    caller = Caller(
        gw.upstream,
        Cooldowns(gwc.cooldown_after_failures, gwc.cooldown_s),
        max_attempts=gwc.max_attempts,
        attempt_timeout_s=gwc.attempt_timeout_s,
        retry_after_cap_s=gwc.retry_after_cap_s,
        max_event_bytes=gwc.upstream_max_event_bytes,
    )
    engine = gw.engine
    version = gwc.upstream_anthropic_version

    def adapt(body: Mapping[str, Any], target: Target) -> dict[str, Any]:
        return engine.adapt(dict(body), target, "auto", {}, api_version=version).body

    store_prompt = None
    if settings.ledger.store_prompts:
        flush: Callable[[float], bool] | None = getattr(sink, "flush", None)

        def store_prompt(request_id: str, prompt: str) -> None:
            if flush is not None:
                flush(2.0)  # the request's row is written behind: make sure it is there
            with store.db.transaction():
                store.db.execute(
                    "UPDATE requests SET prompt = ? WHERE request_id = ? AND prompt IS NULL",
                    (prompt.replace("\x00", "")[: 1 << 20], request_id),
                )

    evaluator = ShadowEvaluator(
        settings,
        caller=caller,
        catalogue=engine.catalogue,
        store=store,
        adapt=adapt,
        window=engine.window,
        spent_today_usd=spent_today(store),
        store_prompt=store_prompt,
    )
    books = gw.books
    books.observers.append(evaluator)
    if books.capture is None:
        books.capture = evaluator
    else:
        books.capture = _Either(books.capture, evaluator)
    return evaluator


class _Either:
    """Two captures: a request is kept when either wants it (each is asked)."""

    def __init__(self, first: Any, second: Any) -> None:
        self.first, self.second = first, second

    def wants(self, life: RequestLife) -> bool:
        a = bool(self.first.wants(life))
        b = bool(self.second.wants(life))
        return a or b

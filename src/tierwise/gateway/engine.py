"""The gateway's request core, shared by every API dialect.

One :class:`Exchange` per model request, opened by :meth:`Engine.exchange` and used as::

    async with engine.exchange(api="messages", request_id=rid, key=key) as ex:
        body = ...                                  # read and validate the client's body
        await ex.admit(body)                        # decide, plan targets, hold the budget
        attempt = await ex.call(headers)            # retries, fallbacks, cooldowns
        ...                                         # answer, or ex.detach() to a stream relay
    # exit: the budget is settled and exactly one ledger row is written, on every path

admit → decide the tier (``auto``), honour a forced tier, or pass an explicit model through;
        escalate when the input would not fit the tier's context window; hold the request's
        worst case against the key's budget (or downgrade, or refuse).
call  → :mod:`tierwise.gateway.attempts`.
end   → :mod:`tierwise.lifecycle` (accounting, budget settlement, ledger, observers).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

import orjson

from tierwise import budgets as budgets_mod
from tierwise.accounting import BadUsage, UsageBounds
from tierwise.adapt import Adapted, Mode, ThinkingOrigins, adapt, unadaptable
from tierwise.config import Settings
from tierwise.errors import BudgetExceeded, BudgetUnavailable
from tierwise.gateway.attempts import Attempt, Caller, Cooldowns, Exhausted
from tierwise.gateway.errors import GatewayError
from tierwise.gateway.shape import conversation_input
from tierwise.gateway.slices import LoopSlices
from tierwise.gateway.sse import StreamTracker
from tierwise.gateway.upstream import Upstream
from tierwise.keys import KeyInfo
from tierwise.lifecycle import Books, RequestLife, Target
from tierwise.router import Router
from tierwise.sessions import Outcome as SessionOutcome
from tierwise.sessions import SessionRouter, SessionVerdict
from tierwise.sessions.modelmap import resolve as resolve_model
from tierwise.types import Decision
from tierwise.worstcase import InputBound, input_bound

AUTO = "auto"
_UNKNOWN_WINDOW = 200_000  # context window assumed for a model the catalogue does not know


class Engine:
    """Routing, budgets and upstream calls for the gateway (one per process)."""

    def __init__(
        self,
        settings: Settings,
        router: Router,
        upstream: Upstream,
        books: Books,
        *,
        caller: Caller | None = None,
        sessions: SessionRouter | None = None,
    ) -> None:
        self.settings = settings
        self.router = router
        self.catalogue = router.catalogue
        self.upstream = upstream
        self.books = books
        gw = settings.gateway
        self.caller = caller or Caller(
            upstream,
            Cooldowns(gw.cooldown_after_failures, gw.cooldown_s),
            max_attempts=gw.max_attempts,
            attempt_timeout_s=gw.attempt_timeout_s,
            retry_after_cap_s=gw.retry_after_cap_s,
            max_event_bytes=gw.upstream_max_event_bytes,
        )
        self.cooldowns = self.caller.cooldowns
        self._tier_models = {t.model: t.name for t in settings.tiers}
        self._order = {t.name: i for i, t in enumerate(settings.tiers)}
        # Which model wrote the thinking blocks relayed so far (adapt drops another model's).
        self.origins = ThinkingOrigins()
        self.sessions = sessions
        self.slices = LoopSlices()  # request work per turn of the event loop (slices.py)

    @property
    def budgets(self) -> budgets_mod.Budgets | None:
        return self.books.budgets

    @property
    def sink(self) -> Any:
        return self.books.sink

    def exchange(
        self, *, api: str, request_id: str, key: KeyInfo | None, stream: bool = False
    ) -> Exchange:
        life = RequestLife(
            self.books,
            request_id=request_id,
            api=api,
            source="gateway",
            key_name=key.name if key else None,
            stream=stream,
        )
        return Exchange(self, life, key)

    # -- planning -------------------------------------------------------------------------
    def fits(self, tier: str, estimate: int) -> bool:
        info = self.catalogue.info(self.settings.tier(tier).model)
        return info is None or estimate <= info.context_window

    def fit(self, tier: str, estimate: int, notes: list[str]) -> str:
        if self.fits(tier, estimate):
            return tier
        names = self.settings.tier_names
        for candidate in names[self._order[tier] + 1 :]:
            if self.fits(candidate, estimate):
                window = self.catalogue.info(self.settings.tier(tier).model)
                limit = window.context_window if window else 0
                notes.append(
                    f"escalated from {tier} to {candidate}: ~{estimate} input tokens exceed "
                    f"{tier}'s {limit}-token context window"
                )
                return candidate
        notes.append(f"~{estimate} input tokens may exceed every tier's context window")
        return tier

    def chain(self, tier: str) -> list[str]:
        configured = self.settings.gateway.fallback_chain.get(tier)
        if configured is not None:
            return [t for t in configured if t in self._order and t != tier]
        names = self.settings.tier_names
        i = self._order[tier]
        chain = []
        if i > 0:
            chain.append(names[i - 1])
        if i + 1 < len(names):
            chain.append(names[i + 1])
        return chain

    def plan(
        self, chosen: str, mode: str, body: dict[str, Any], estimate: int, notes: list[str]
    ) -> list[Target]:
        tiers = [chosen]
        if mode == "auto":
            for name in self.chain(chosen):
                info = self.catalogue.info(self.settings.tier(name).model)
                if not self.fits(name, estimate) or unadaptable(body, info) is not None:
                    continue
                tiers.append(name)
        targets = [Target(t, self.settings.tier(t).model) for t in tiers]
        fresh = [t for t in targets if not self.cooldowns.cooled(t.model)]
        cooled = [t for t in targets if self.cooldowns.cooled(t.model)]
        if cooled and fresh:
            notes.append("cooling down: " + ", ".join(t.label for t in cooled))
        return fresh + cooled

    def tier_rank(self, tier: str) -> int:
        return self._order[tier]

    def adapt(
        self,
        body: dict[str, Any],
        target: Target,
        mode: str,
        sampling: Mapping[str, Any],
        *,
        api_version: str,
        betas: tuple[str, ...] = (),
    ) -> Adapted:
        """The client's body made valid for ``target`` (:mod:`tierwise.adapt`): ``model``
        replaced, the tier's defaults where they fit, what the model refuses translated or
        dropped."""
        kind: Mode = (
            "passthrough" if mode == "passthrough" else "tier" if mode == "tier" else "auto"
        )
        tier = self.settings.tier(target.tier) if target.tier is not None else None
        return adapt(
            body,
            target.model,
            self.catalogue.info(target.model),
            mode=kind,
            tier=tier,
            api_version=api_version,
            sampling=sampling,
            betas=betas,
            thinking_origin=self.origins,
        )

    def window(self, model: str) -> int:
        info = self.catalogue.info(model)
        return info.context_window if info is not None else _UNKNOWN_WINDOW


def header_map(headers: Mapping[str, str]) -> Mapping[str, str]:
    """Request headers as a plain dict, read once: session routing looks up a dozen names,
    and Starlette's ``Headers.get`` scans and decodes the raw list on every call (measured:
    ~3 % of the gateway's CPU per request). Same answers: the first value of a repeated
    header, names as the server gave them (uvicorn lowercases them)."""
    raw = getattr(headers, "raw", None)
    if not isinstance(raw, list):
        return headers
    return {k.decode("latin-1"): v.decode("latin-1") for k, v in reversed(raw)}


def without_thinking(body: dict[str, Any]) -> tuple[dict[str, Any], tuple[str, ...]]:
    """``body`` without ``thinking`` and ``output_config.effort`` (its format kept), and
    what was dropped (a side request: title, summary, classification)."""
    changes = []
    out = {k: v for k, v in body.items() if k != "thinking"}
    if "thinking" in body:
        changes.append("thinking dropped: a side request (title, summary) needs none")
    config = body.get("output_config")
    if isinstance(config, dict) and "effort" in config:
        changes.append("output_config.effort dropped: a side request needs none")
        rest = {k: v for k, v in config.items() if k != "effort"}
        if rest:
            out["output_config"] = rest
        else:
            out.pop("output_config", None)
    return out, tuple(changes)


class Exchange:
    """One model request through the gateway: its :class:`RequestLife`, its plan, its
    payloads and its upstream attempts. Leaving ``async with`` closes the life (settle and
    record) unless a stream relay took it over with :meth:`detach`."""

    def __init__(self, engine: Engine, life: RequestLife, key: KeyInfo | None) -> None:
        self.engine = engine
        self.life = life
        self.key = key
        self.body: dict[str, Any] = {}
        self.targets: list[Target] = []
        self.sampling: dict[str, Any] = {}
        self.api_version = engine.settings.gateway.upstream_anthropic_version
        self.betas: tuple[str, ...] = ()
        self._payloads: dict[Target, bytes] = {}
        self.changes: dict[Target, tuple[str, ...]] = {}
        self.max_tokens = 0
        self.verdict: SessionVerdict | None = None

    @property
    def request_id(self) -> str:
        return self.life.request_id

    # -- admission ------------------------------------------------------------------------
    async def admit(
        self,
        body: dict[str, Any],
        *,
        sampling: Mapping[str, Any] | None = None,
        api_version: str | None = None,
        betas: tuple[str, ...] = (),
        headers: Mapping[str, str] | None = None,
    ) -> None:
        """Decide, plan and hold the budget. ``api_version``/``betas``: what the upstream call
        will carry (adaptation depends on them); ``headers``: the client's request headers
        (a session may be named there). Raises GatewayError (429 budget, 503 budget
        unavailable, 400 unpriced model for a budgeted key)."""
        engine = self.engine
        life = self.life
        self.body = body
        self.sampling = dict(sampling or {})
        self.api_version = api_version or self.api_version
        self.betas = betas
        model = body["model"]
        life.requested_model = model
        life.stream = bool(body.get("stream"))
        self.max_tokens = int(body.get("max_tokens") or 0)
        route = resolve_model(engine.settings, model, engine.catalogue)
        if route.mode == "passthrough":
            target = Target(route.tier, model)
            life.admitted(None, "passthrough", target)
            self.targets = [target]
            self._keep_prompt(body)
        elif engine.sessions is not None and not life.silent:
            await self._route_session(body, headers or {}, route.tier, route.via)
        else:
            request = conversation_input(body)
            estimate = request.context_tokens or 0
            decision = await engine.router.decide(request, force_tier=route.tier)
            self._plan(decision, route.mode, body, estimate)
        bound = self._bound()
        life.bounds = UsageBounds(bound.tokens, self.max_tokens)
        budgeted = self.key is not None and self.key.budget_usd is not None
        if budgeted and engine.budgets is not None and not life.silent:
            assert self.key is not None
            await self._reserve(self.key, bound)

    def _plan(self, decision: Decision, mode: str, body: dict[str, Any], estimate: int) -> None:
        engine = self.engine
        chosen = engine.fit(decision.tier, estimate, self.life.notes)
        self.targets = engine.plan(chosen, mode, body, estimate, self.life.notes)
        self.life.admitted(decision, mode, self.targets[0])
        self.life.maybe_capture(body)
        self._keep_prompt(body)

    def _keep_prompt(self, body: dict[str, Any]) -> None:
        """With ``ledger.store_prompts``, the row keeps the latest user turn and the answer."""
        if not self.engine.settings.ledger.store_prompts or self.life.silent:
            return
        self.life.prompt = conversation_input(body).prompt
        self.life.store_reply = True
        if self.life.request_body is None:
            self.life.request_body = body  # makes the relays collect the answer's text

    async def _route_session(
        self,
        body: dict[str, Any],
        headers: Mapping[str, str],
        requested_tier: str | None,
        via: str,
    ) -> None:
        """Session routing (:mod:`tierwise.sessions`): the classifier runs where a human
        decides; continuations keep the session's tier unless an escalation rule fires."""
        sessions = self.engine.sessions
        assert sessions is not None
        headers = header_map(headers)
        shape = sessions.analyse(body, headers)
        key = sessions.identify(body, headers, shape=shape, scope=self.life.key_name)
        verdict = await sessions.route(
            key,
            body,
            self.engine.router.decide,
            shape=shape,
            headers=headers,
            requested_tier=requested_tier,
        )
        self.verdict = verdict
        if via not in ("auto", "tier name"):
            self.life.notes.append(f"requested model resolved by {via}")
        if verdict.reason and verdict.reason not in verdict.decision.reason:
            self.life.notes.append(verdict.reason)
        self.life.session = verdict.ledger_fields()
        self._plan(verdict.decision, "tier" if requested_tier else "auto", body, shape.input_tokens)

    async def observe_session(
        self, model: str | None, raw_usage: Any, stop_reason: str | None
    ) -> None:
        """Tell the session what happened (after a complete answer), and price the baseline
        with its own cache history in the session (the honest savings)."""
        sessions, verdict = self.engine.sessions, self.verdict
        if sessions is None or verdict is None or self.life.failed:
            return
        try:
            usage = self.life.measure(raw_usage).usage
        except BadUsage:
            return
        answered = model or (self.targets[0].model if self.targets else verdict.model)
        observation = await sessions.observe(
            verdict, SessionOutcome(model=answered, usage=usage, stop_reason=stop_reason)
        )
        self.life.session = verdict.ledger_fields(observation, base=self.life.session)
        if observation.baseline_usage is not None:
            self.life.rebase(observation.baseline_usage)

    def payload(self, target: Target) -> bytes:
        """The bytes sent to ``target`` (adapted once per target, then reused)."""
        data = self._payloads.get(target)
        if data is None:
            body, mode = self.body, self.life.mode
            stripped: tuple[str, ...] = ()
            if self.verdict is not None and self.verdict.no_thinking:
                # A side request (title, summary): the cheapest tier, no thinking or effort.
                body, stripped = without_thinking(body)
                mode = "passthrough"
            adapted = self.engine.adapt(
                body,
                target,
                mode,
                self.sampling,
                api_version=self.api_version,
                betas=self.betas,
            )
            try:
                data = orjson.dumps(adapted.body)
            except orjson.JSONEncodeError as exc:  # e.g. nesting deeper than orjson writes
                raise GatewayError(400, f"request body cannot be forwarded: {exc}") from exc
            self._payloads[target] = data
            self.changes[target] = stripped + adapted.changes
        return data

    def answered_by(self, target: Target) -> tuple[str, ...]:
        """What was changed in the body for the target that answered (also on the life)."""
        changes = self.changes.get(target, ())
        self.life.adapted = changes
        return changes

    def _bound(self) -> InputBound:
        """The request's input bound: the largest over its targets (they share a body)."""
        engine = self.engine
        first = self.targets[0]
        window = max(engine.window(t.model) for t in self.targets)
        return input_bound(self.payload(first), self.body, window)

    def _worst_case(self, model: str, bound: InputBound) -> Decimal | None:
        engine = self.engine
        tokens = min(bound.tokens, engine.window(model) * (10 if bound.open_ended else 1))
        amount = budgets_mod.worst_case_cost(
            engine.catalogue,
            model,
            tokens,
            self.max_tokens,
            self.life.ts,
            input_class=bound.input_class,
        )
        if amount is None:
            return None
        decision = self.life.decision
        return amount + (decision.classifier_cost_usd if decision else Decimal(0))

    async def _reserve(self, key: KeyInfo, bound: InputBound) -> None:
        """Hold the worst-case cost against the key's budget, or downgrade, or refuse."""
        engine = self.engine
        budgets = engine.budgets
        assert budgets is not None
        life = self.life
        if bound.open_ended:
            life.notes.append(
                f"budget hold at the context window: {bound.open_ended} bound the input only by it"
            )
        outcome: budgets_mod.Admission | budgets_mod.Reservation | BudgetExceeded
        try:
            if life.mode == "passthrough":
                model = self.targets[0].model
                amount = self._worst_case(model, bound)
                if amount is None:
                    raise GatewayError(
                        400,
                        f"model {model!r} has no price in the catalogue, so the budget of key "
                        f"{key.name!r} cannot bound its cost: use a tier name or `auto`, or add "
                        "the model to a prices file (prices_file / TIERWISE_PRICES_FILE)",
                        param="model",
                    )
                outcome = await budgets.reserve(key, amount)
            else:
                outcome = await budgets_mod.admit(
                    budgets,
                    key,
                    [(t.name, t.model) for t in engine.settings.tiers],
                    self.targets[0].tier or "",
                    lambda m: self._worst_case(m, bound),
                    on_exceeded=engine.settings.budgets.on_exceeded,
                )
        except BudgetUnavailable as exc:
            life.budget_event = "unavailable"
            life.notes.append(f"budget unavailable: {exc}")
            raise GatewayError(
                503, str(exc), error_type="api_error", headers={"retry-after": "1"}
            ) from exc
        if isinstance(outcome, BudgetExceeded):
            life.budget_event = "refused"
            life.notes.append(f"budget refused: {outcome}")
            raise GatewayError(429, str(outcome), error_type="rate_limit_error")
        if isinstance(outcome, budgets_mod.Admission):
            # Never fall back to a tier dearer than the one the budget was reserved for.
            limit = engine.tier_rank(outcome.tier)
            kept = [t for t in self.targets if t.tier and engine.tier_rank(t.tier) <= limit]
            if outcome.downgraded_from or not kept:
                head = Target(outcome.tier, outcome.model)
                kept = [head, *[t for t in kept if t != head]]
            self.targets = kept
            if outcome.downgraded_from:
                life.budget_event = "downgraded"
                life.notes.append(
                    f"budget of key {key.name!r} cannot cover {outcome.downgraded_from}; "
                    f"downgraded to {outcome.tier}"
                )
            life.held(outcome.reservation)
        else:
            life.held(outcome)

    # -- the upstream call ----------------------------------------------------------------
    async def call(
        self, headers: Mapping[str, str], *, path: str = "/v1/messages", stream: bool = False
    ) -> Attempt:
        """Try each target in turn within the request's deadline. Raises GatewayError (502 or
        504) when no upstream ever answered; the exchange then records that error."""
        deadline = self.life.t0 + self.engine.settings.gateway.upstream_timeout_s
        try:
            attempt = await self.engine.caller.call(
                self.targets, self.payload, headers, path=path, stream=stream, deadline=deadline
            )
        except Exhausted as exc:
            timeout = exc.kind == "timeout_error"
            self.life.ended(
                status="error",
                target=exc.target,
                error_type=exc.kind,
                http_status=504 if timeout else 502,
                fallbacks=exc.fallbacks,
                billed=False,
            )
            raise GatewayError(
                504 if timeout else 502,
                str(exc),
                error_type="timeout_error" if timeout else "api_error",
            ) from exc
        await self.engine.slices.turn()  # replies arriving together: validated turn by turn
        return attempt

    async def on_stream_complete(self, tracker: StreamTracker) -> None:
        await self.observe_session(tracker.model, tracker.usage or None, tracker.stop_reason)

    @property
    def remaining_s(self) -> float:
        """Seconds left before the request's deadline (the whole stream included)."""
        deadline = self.life.t0 + self.engine.settings.gateway.upstream_timeout_s
        return max(deadline - time.perf_counter(), 0.0)

    # -- context manager ------------------------------------------------------------------
    async def __aenter__(self) -> Exchange:
        return self

    async def __aexit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        await self.life.__aexit__(exc_type, exc, tb)

    def detach(self) -> RequestLife:
        return self.life.detach()

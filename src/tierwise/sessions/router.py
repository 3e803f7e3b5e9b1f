"""The session router: which tier answers a request that belongs to a conversation.

See the package docstring (:mod:`tierwise.sessions`) for the interface and the rules.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from tierwise.config import Settings
from tierwise.errors import InputError
from tierwise.gateway.shape import RequestShape, analyse
from tierwise.policy import Policy
from tierwise.pricing import PriceCatalogue, Settlement
from tierwise.sessions.cachesim import CacheUse
from tierwise.sessions.identity import SessionKey, identify
from tierwise.sessions.store import (
    MemoryStore,
    RedisStore,
    SessionStore,
    StoreError,
    ThreadState,
)
from tierwise.sessions.switching import BreakEven, break_even
from tierwise.sessions.utility import utility_kind
from tierwise.taxonomy import context_floor, floor_tier_index
from tierwise.types import ClassifyInput, Decision, Usage

Classify = Callable[[ClassifyInput], Awaitable[Decision]]

# Every rule a verdict can name, and what it means (README "Sessions" and x-tierwise-reason).
RULES: dict[str, str] = {
    "new-session": "the classifier chose the tier for the conversation's first request",
    "turn-keep": "a new turn, classified to the tier the session is on",
    "turn-escalate": "a new turn classified to a more capable tier (always allowed)",
    "turn-switch": "a new turn classified to a cheaper tier, and the switch pays for the cache",
    "cache-hold": "a new turn classified to a cheaper tier, but the switch would cost more "
    "than it saves (the cache it throws away)",
    "continuation": "a tool-loop continuation keeps the turn's tier (so does the agent's own "
    "request to summarise the conversation when it compacts it)",
    "resume": "the first request of a compacted conversation (it starts from the summary) keeps "
    "the tier the compaction ran on, with that thread's history and caches",
    "context-window": "escalated: the input does not fit the tier's context window",
    "max-tokens": "escalated: the previous reply stopped at the tier's own output limit, "
    "below the max_tokens asked for",
    "tool-errors": "escalated: the model used tools wrongly several times in a row",
    "context-floor": "escalated: inside a tool loop the task context crossed the classifier's "
    "large-context line, the classifier, asked again, chose a more capable tier, and switching "
    "now costs no extra cache write",
    "override": "the client named a tier (or a model that model_map maps to one)",
    "utility": "a title / summary / classification side request: cheapest tier, no thinking",
    "per-request": "no session state: classified like any single request",
}
ESCALATIONS = frozenset(
    {"context-window", "max-tokens", "tool-errors", "context-floor", "turn-escalate"}
)
SCALE_BOUNDS = (0.25, 4.0)
OUTPUT_PRIOR = 600.0  # output tokens per agent request (thinking included) before observed
GROWTH_PRIOR = 1_500.0  # new input tokens per tool-loop request before observed
_EMA = 0.3
_HEADER_CHARS = 600


@dataclass(frozen=True, slots=True)
class Outcome:
    """What happened upstream, for :meth:`SessionRouter.observe`.

    ``model``: the model that answered (after any fallback); ``usage``: as the upstream
    reported it (None when the request failed before any usage); ``stop_reason``: the reply's.
    """

    model: str
    usage: Usage | None
    stop_reason: str | None = None


@dataclass(frozen=True, slots=True)
class Observation:
    """The honest baseline of one request, and whether the session state was saved.

    ``baseline_usage`` is what the baseline model would have been billed for this request
    with its own cache history in this session (``baseline_method`` ``"session-cache"``),
    the request's real usage when it was served on the baseline model (``"actual"``), or the
    served model's usage when there is no session history to simulate (``"same-usage"``: the
    per-request method).
    """

    baseline_model: str
    baseline_usage: Usage | None
    baseline_method: str
    stored: bool
    error: str | None = None
    stop_reason: str | None = None

    def settle(
        self,
        catalogue: PriceCatalogue,
        usage: Usage,
        model: str,
        *,
        classifier_cost_usd: Decimal = Decimal(0),
        at: Any = None,
    ) -> Settlement:
        """Like :meth:`PriceCatalogue.settle`, with the baseline priced on
        ``baseline_usage`` (the baseline's own cache history) instead of ``usage``."""
        model_cost = catalogue.cost(usage, model, at)
        basis = self.baseline_usage if self.baseline_usage is not None else usage
        baseline = catalogue.cost(basis, self.baseline_model, at)
        total = None if model_cost.usd is None else model_cost.usd + classifier_cost_usd
        saved = None if total is None or baseline.usd is None else baseline.usd - total
        return Settlement(model_cost, self.baseline_model, baseline.usd, total, saved)


@dataclass(frozen=True, slots=True)
class SessionVerdict:
    """Which tier answers, by which rule, and everything needed to explain and record it."""

    tier: str
    model: str
    rule: str
    reason: str
    decision: Decision
    classified: bool  # the classifier ran for this request
    shape: RequestShape
    key: SessionKey | None
    at: float
    utility: str | None = None
    no_thinking: bool = False  # send without thinking (drop thinking and effort)
    break_even: BreakEven | None = None
    degraded: str | None = None  # why session state was not used, if it was not
    previous_tier: str | None = None
    mid_loop_change: bool = False  # the tier changed inside a tool loop (an escalation)
    classified_tier: str | None = None  # what the classifier chose, when it ran
    _state: ThreadState | None = field(default=None, repr=False, compare=False)

    @property
    def kind(self) -> str:
        return self.shape.kind

    def headers(self) -> dict[str, str]:
        """Response headers: ``x-tierwise-reason`` (ASCII, bounded), the session and rule."""
        out = {
            "x-tierwise-reason": _header_value(self.reason),
            "x-tierwise-session-rule": self.rule,
        }
        if self.key is not None:
            out["x-tierwise-session"] = _header_value(self.key.session)
        return out

    def ledger_fields(
        self, observation: Observation | None = None, *, base: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        """``session_id``, ``session_rule`` and ``session_shape`` for the ledger row (no
        text: sizes, breakpoints, counts, the rule's numbers). ``base``: what this method
        returned for this verdict without an observation, reused (the shape is recorded once)."""
        if observation is not None and base is not None:
            before = base.get("session_shape")
            if isinstance(before, dict) and before.get("rule") == self.rule:
                shape = dict(before)
                shape["baseline_method"] = observation.baseline_method
                shape["stop_reason"] = observation.stop_reason
                return {**base, "session_shape": shape}
        shape = self.shape.record()
        shape["rule"] = self.rule
        shape["classified_tier"] = self.classified_tier
        shape["utility"] = self.utility
        if self.break_even is not None:
            shape["break_even"] = self.break_even.as_json()
        if self.degraded:
            shape["degraded"] = self.degraded[:200]
        if observation is not None:
            shape["baseline_method"] = observation.baseline_method
            shape["stop_reason"] = observation.stop_reason
        return {
            "session_id": None if self.key is None else self.key.session,
            "session_rule": self.rule,
            "session_shape": shape,
        }


def _header_value(text: str) -> str:
    ascii_text = text.replace("→", "->").encode("ascii", "replace").decode()
    if ascii_text.isprintable():  # the usual case, without a look at every character
        return ascii_text[:_HEADER_CHARS]
    clean = "".join(ch if ch.isprintable() else " " for ch in ascii_text)
    return clean[:_HEADER_CHARS]


def open_store(settings: Settings) -> SessionStore:
    """Redis when ``sessions.redis_url`` is set, else process memory."""
    cfg = settings.sessions
    if cfg.redis_url:
        return RedisStore(
            cfg.redis_url,
            prefix=cfg.redis_prefix,
            timeout_s=cfg.redis_timeout_s,
            retry_after_s=cfg.redis_retry_after_s,
        )
    return MemoryStore(cfg.max_threads)


class SessionRouter:
    """Session-aware tier choice on top of a per-request classifier.

    ``identify`` → ``route`` before the upstream call, ``observe`` after it. ``clock`` gives
    wall-clock seconds (cache lifetimes); ``route``/``observe`` take ``at`` to replay time.
    """

    def __init__(
        self,
        settings: Settings,
        catalogue: PriceCatalogue | None = None,
        store: SessionStore | None = None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.cfg = settings.sessions
        self.catalogue = catalogue or settings.catalogue()
        self.store: SessionStore = store if store is not None else open_store(settings)
        self.policy = Policy(settings, self.catalogue)
        self._clock = clock
        self._order = {t.name: i for i, t in enumerate(settings.tiers)}
        self._baseline = settings.baseline_model()

    # -- identity ------------------------------------------------------------------------
    def analyse(
        self, body: Mapping[str, Any], headers: Mapping[str, str] | None = None
    ) -> RequestShape:
        return analyse(dict(body), headers)

    def identify(
        self,
        body: Mapping[str, Any],
        headers: Mapping[str, str] | None = None,
        *,
        shape: RequestShape | None = None,
        scope: str | None = None,
    ) -> SessionKey | None:
        """The request's session key (None: no session); ``scope`` is the gateway key name."""
        return identify(body, headers, shape or self.analyse(body, headers), scope=scope)

    # -- the decision --------------------------------------------------------------------
    async def route(
        self,
        key: SessionKey | None,
        body: Mapping[str, Any] | None,
        classify: Classify,
        *,
        shape: RequestShape | None = None,
        headers: Mapping[str, str] | None = None,
        requested_tier: str | None = None,
        at: float | None = None,
    ) -> SessionVerdict:
        """Choose the tier. ``classify`` is the per-request classifier (``Router.decide``);
        it is awaited only where a human decides (a new turn, a new thread, no session), and
        once in a tool loop whose context crosses the classifier's large-context line."""
        start = time.perf_counter()
        now = self._clock() if at is None else at
        if shape is None:
            if body is None:
                raise InputError("route() needs a request body or its shape")
            shape = self.analyse(body, headers)
        if requested_tier is not None and requested_tier not in self._order:
            names = ", ".join(self._order)
            raise InputError(f"unknown tier {requested_tier!r}; configured tiers: {names}")

        base = {"shape": shape, "key": key, "at": now}
        if requested_tier is None:
            utility = utility_kind(shape, self.cfg.utility_max_instruction_chars)
            if utility is not None:
                return self._utility(utility, base, start)
        state, degraded = await self._load(key)
        resumed = shape.client_turn == "resume" or shape.from_summary
        if state is None and degraded is None and key is not None and resumed:
            carried = await self._compacted(key)
            if carried is not None and carried.tier is not None:
                state = self._resumed(carried, shape)
                if shape.kind == "continuation" and requested_tier is None:
                    # The agent compacted the conversation and goes on from its summary: a
                    # new thread by its start, the same work. It keeps the compaction's tier
                    # (no human decided anything) and the compacted thread's history: turns
                    # and request counts (the break-even's expectations) and caches (the
                    # system prompt and tools are still cached there).
                    why = (
                        "session resume: the conversation continues from the summary the "
                        f"agent wrote when it compacted it on {carried.tier}"
                    )
                    return self._keep(state, carried.tier, shape, base, start, "resume", why)
                # the user's words next to the summary: a turn, on the compacted thread's state
        previous = state.tier if state is not None else None
        if requested_tier is not None:
            reason = f"session override: the client asked for {requested_tier}"
            decision = self._decision(requested_tier, None, reason, start, confidence=1.0)
            return self._verdict(
                requested_tier,
                "override",
                reason,
                decision,
                False,
                base,
                state=state,
                degraded=degraded,
                previous=previous,
            )
        if degraded is not None or state is None or state.tier is None:
            return await self._fresh(state, degraded, shape, classify, base, start)
        if shape.kind == "continuation":
            return await self._continuation(state, state.tier, shape, classify, base, start)
        return await self._turn(state, state.tier, shape, classify, base, start)

    @staticmethod
    def _compacted_key(key: SessionKey) -> str:
        """Where a compacted thread's state waits for the conversation that resumes it (one
        per session: the summary that names the new thread is the compaction's reply)."""
        return dataclasses.replace(key, thread="~compacted").storage_key

    async def _compacted(self, key: SessionKey) -> ThreadState | None:
        try:
            return await self.store.get(self._compacted_key(key))
        except StoreError:
            return None  # then the resumed conversation is a new thread, classified

    @staticmethod
    def _resumed(carried: ThreadState, shape: RequestShape) -> ThreadState:
        """The compacted thread's state for the conversation resumed from its summary: its
        tier, counts and caches; the growing context measured afresh."""
        state = carried.copy()
        state.last_input_tokens = 0
        state.errors_seen = 0
        state.last_stop = None
        state.floor_level = context_floor(shape.classify_input)[0]
        return state

    def _keep(
        self,
        state: ThreadState,
        current: str,
        shape: RequestShape,
        base: dict[str, Any],
        start: float,
        rule: str,
        why: str,
    ) -> SessionVerdict:
        """Keep ``current`` without asking the classifier (``rule``, explained by ``why``),
        unless the input outgrew its context window."""
        tier, note = self._fit(current, shape, state)
        reason = _join(f"{why}; kept {tier}", note)
        decision = self._decision(tier, None, reason, start, confidence=state.confidence)
        return self._verdict(
            tier,
            "context-window" if note else rule,
            reason,
            decision,
            False,
            base,
            state=state,
            previous=current,
        )

    async def _load(self, key: SessionKey | None) -> tuple[ThreadState | None, str | None]:
        """The thread's state (None: a new thread) and why there is none to use, if so."""
        if not self.cfg.enabled:
            return None, "session routing is off (sessions.enabled = false)"
        if key is None:
            return None, "no session (a lone message without a system prompt, tools or session id)"
        try:
            return await self.store.get(key.storage_key), None
        except StoreError as exc:
            return None, f"session store unavailable ({exc}); routed per request"

    def _utility(self, utility: str, base: dict[str, Any], start: float) -> SessionVerdict:
        tier = self.cfg.utility_tier or self.settings.tiers[0].name
        reason = (
            f"session utility: a {utility} side request (no tools, structured output, "
            f"short instruction) goes to {tier} without thinking"
        )
        decision = self._decision(tier, None, reason, start, utility=True)
        return SessionVerdict(
            tier=tier,
            model=decision.model,
            rule="utility",
            reason=reason,
            decision=decision,
            classified=False,
            utility=utility,
            no_thinking=True,
            **base,
        )

    async def _fresh(
        self,
        state: ThreadState | None,
        degraded: str | None,
        shape: RequestShape,
        classify: Classify,
        base: dict[str, Any],
        start: float,
    ) -> SessionVerdict:
        """A new thread, or no usable session: the classifier decides, as per request."""
        cls = await classify(shape.classify_input)
        tier, note = self._fit(cls.tier, shape, state)
        rule = "per-request" if degraded is not None else "new-session"
        if note:
            rule = "context-window"
        head = (
            f"session per-request ({degraded})"
            if degraded is not None
            else f"session new-session: the classifier chose {cls.tier}"
        )
        reason = _join(head, note, f"classifier: {cls.reason}")
        decision = self._decision(tier, cls, reason, start)
        return self._verdict(
            tier,
            rule,
            reason,
            decision,
            True,
            base,
            state=state,
            degraded=degraded,
            previous=state.tier if state is not None else None,
            classified_tier=cls.tier,
        )

    async def _continuation(
        self,
        state: ThreadState,
        current: str,
        shape: RequestShape,
        classify: Classify,
        base: dict[str, Any],
        start: float,
    ) -> SessionVerdict:
        position = f"request {state.turn_requests + 1} of turn {max(state.turns, 1)}"
        tier, note = self._fit(current, shape, state)
        cls: Decision | None = None
        if note:
            rule, reason = "context-window", f"session context-window: {note}"
        elif (
            self.cfg.escalate_on_max_tokens
            and state.last_stop == "max_tokens"
            and (roomier := self._roomier(current, shape.max_tokens)) is not None
        ):
            tier = roomier
            rule = "max-tokens"
            reason = (
                f"session max-tokens: the previous reply stopped at {current}'s output limit, "
                f"below the {shape.max_tokens} max_tokens asked for; escalated to {tier} "
                f"({position})"
            )
        elif (
            shape.tool_errors >= state.errors_seen + self.cfg.tool_error_streak
            and self._up(current) != current
        ):
            tier = self._up(current)
            rule = "tool-errors"
            reason = (
                f"session tool-errors: {shape.tool_errors} failed tool results in a row on "
                f"{current}; escalated to {tier} ({position})"
            )
        elif (floor := self._context_floor(state, current, shape)) is not None:
            # The classifier would lift this request now (per request it would): ask it.
            cls = await classify(shape.classify_input)
            wanted = self._fit(cls.tier, shape, state)[0]
            if self._order[wanted] <= self._order[current]:
                rule = "continuation"
                reason = _join(
                    f"session continuation: kept {current} ({position}); the task context "
                    f"crossed the classifier's large-context line ({floor}), the classifier "
                    f"still chooses {cls.tier}",
                    f"classifier: {cls.reason}",
                )
            elif (free := self._free_switch(state, shape, current, wanted, base["at"])) is not None:
                tier, rule = wanted, "context-floor"
                reason = _join(
                    f"session context-floor: the task context crossed the classifier's "
                    f"large-context line ({floor}); the classifier now chooses {cls.tier}, "
                    f"above {current}; escalated to {tier} now, at no extra cache write "
                    f"({free}) ({position})",
                    f"classifier: {cls.reason}",
                )
            else:
                rule = "continuation"
                reason = _join(
                    f"session continuation: kept {current} ({position}); the task context "
                    f"crossed the classifier's large-context line ({floor}) and the classifier "
                    f"chooses {cls.tier}, but switching now would re-write the prefix that "
                    f"{current}'s cache holds: the next turn decides",
                    f"classifier: {cls.reason}",
                )
        else:
            rule = "continuation"
            reason = f"session continuation: kept {current} from the turn's start ({position})"
        decision = self._decision(tier, cls, reason, start, confidence=state.confidence)
        return self._verdict(
            tier,
            rule,
            reason,
            decision,
            cls is not None,
            base,
            state=state,
            previous=current,
            mid_loop=tier != current,
            classified_tier=cls.tier if cls is not None else None,
        )

    def _context_floor(self, state: ThreadState, current: str, shape: RequestShape) -> str | None:
        """Why the classifier's context-size floor (:func:`~tierwise.taxonomy.context_floor`)
        now demands a tier above ``current`` when the classifier has not seen this context
        level in this turn yet (None otherwise: the check costs one comparison)."""
        level, why = context_floor(shape.classify_input)
        if level <= state.floor_level:
            return None
        if floor_tier_index(level, len(self._order)) <= self._order[current]:
            return None
        return why

    def _free_switch(
        self, state: ThreadState, shape: RequestShape, current: str, wanted: str, now: float
    ) -> str | None:
        """Why moving from ``current`` to ``wanted`` now costs no extra cache write (None when
        it would): ``wanted``'s cache still holds most of the prefix (it reads more than it
        writes), or ``current``'s holds none of it (expired), so the prefix is written on either
        tier. Simulated on the thread's caches of the served models (not the baseline's)."""
        profile = shape.cache.scaled(state.token_scale)
        cur = state.cache(self.settings.tier(current).model).request(profile, now, commit=False)
        new = state.cache(self.settings.tier(wanted).model).request(profile, now, commit=False)
        if new.read >= new.written:
            return f"{wanted}'s cache holds {new.read} prefix tokens, {new.written} to write"
        if cur.read == 0:
            return (
                f"{current}'s cache holds none of the prefix (expired): {cur.written} tokens "
                f"to write on either tier"
            )
        return None

    async def _turn(
        self,
        state: ThreadState,
        current: str,
        shape: RequestShape,
        classify: Classify,
        base: dict[str, Any],
        start: float,
    ) -> SessionVerdict:
        turn = f"turn {state.turns + 1}"
        if shape.orphan_follow_up and state.turns > 0:
            # "continue" with no earlier words of the user's in this conversation (it resumed
            # from a compaction's summary): nothing new to classify; the work goes on.
            return self._keep(
                state,
                current,
                shape,
                base,
                start,
                "turn-keep",
                f"session turn-keep ({turn}): a follow-up with no task of its own and no "
                f"earlier request in this conversation to read it with",
            )
        cls = await classify(shape.classify_input)
        wanted, note = self._fit(cls.tier, shape, state)
        be: BreakEven | None = None
        if note:
            tier, rule = wanted, "context-window"
            reason = _join(f"session context-window ({turn}): {note}", f"classifier: {cls.reason}")
        elif wanted == current:
            tier, rule = current, "turn-keep"
            reason = _join(
                f"session turn-keep ({turn}): classified {current}, the session's tier",
                f"classifier: {cls.reason}",
            )
        elif self._order[wanted] > self._order[current]:
            tier, rule = wanted, "turn-escalate"
            be = self._break_even(state, shape, current, wanted, base["at"])
            reason = _join(
                f"session turn-escalate ({turn}): classified {wanted}, above the session's "
                f"{current}; escalation for quality is always taken",
                f"classifier: {cls.reason}",
            )
        else:
            be = self._break_even(state, shape, current, wanted, base["at"])
            if be is None or be.saving_usd > self.cfg.switch_min_saving_usd:
                tier, rule = wanted, "turn-switch"
                why = "a model is unpriced" if be is None else be.summary()
                reason = _join(
                    f"session turn-switch ({turn}): classified {wanted}; switching from "
                    f"{current} pays for the cache it throws away ({why})",
                    f"classifier: {cls.reason}",
                )
            else:
                tier, rule = current, "cache-hold"
                reason = _join(
                    f"session cache-hold ({turn}): classified {wanted}, but staying on "
                    f"{current} is cheaper ({be.summary()})",
                    f"classifier: {cls.reason}",
                )
        decision = self._decision(tier, cls, reason, start)
        return self._verdict(
            tier,
            rule,
            reason,
            decision,
            True,
            base,
            state=state,
            previous=current,
            break_even_=be,
            classified_tier=cls.tier,
        )

    # -- helpers -------------------------------------------------------------------------
    def _verdict(
        self,
        tier: str,
        rule: str,
        reason: str,
        decision: Decision,
        classified: bool,
        base: dict[str, Any],
        *,
        state: ThreadState | None,
        degraded: str | None = None,
        previous: str | None = None,
        mid_loop: bool = False,
        break_even_: BreakEven | None = None,
        classified_tier: str | None = None,
    ) -> SessionVerdict:
        return SessionVerdict(
            tier=tier,
            model=decision.model,
            rule=rule,
            reason=reason,
            decision=decision,
            classified=classified,
            degraded=degraded,
            previous_tier=previous,
            mid_loop_change=mid_loop,
            break_even=break_even_,
            classified_tier=classified_tier,
            _state=state,
            **base,
        )

    def _max_output(self, tier: str) -> int | None:
        info = self.catalogue.info(self.settings.tier(tier).model)
        return info.max_output_tokens if info is not None else None

    def _roomier(self, tier: str, wanted: int) -> str | None:
        """When ``tier``'s output limit is below the ``wanted`` max_tokens (so a reply cut at
        max_tokens was cut by the tier, not by the client): the cheapest more capable tier
        with a higher limit. None otherwise: any tier would have stopped there too."""
        limit = self._max_output(tier)
        if limit is None or wanted <= limit:
            return None
        for name in self.settings.tier_names[self._order[tier] + 1 :]:
            other = self._max_output(name)
            if other is None or other > limit:
                return name
        return None

    def _up(self, tier: str) -> str:
        names = self.settings.tier_names
        return names[min(self._order[tier] + 1, len(names) - 1)]

    def _scale(self, state: ThreadState | None) -> float:
        return state.token_scale if state is not None else 1.0

    def _fit(self, tier: str, shape: RequestShape, state: ThreadState | None) -> tuple[str, str]:
        """The tier, or the cheapest more capable one whose context window fits the input."""
        tokens = round(shape.input_tokens * self._scale(state))
        if self._fits(tier, tokens):
            return tier, ""
        for candidate in self.settings.tier_names[self._order[tier] + 1 :]:
            if self._fits(candidate, tokens):
                info = self.catalogue.info(self.settings.tier(tier).model)
                limit = info.context_window if info else 0
                return candidate, (
                    f"~{tokens} input tokens exceed {tier}'s {limit}-token context window; "
                    f"escalated to {candidate}"
                )
        return tier, ""

    def _fits(self, tier: str, tokens: int) -> bool:
        info = self.catalogue.info(self.settings.tier(tier).model)
        return info is None or tokens <= info.context_window

    def expected_requests(self, state: ThreadState, shape: RequestShape) -> float:
        """Requests a switch made now must pay for itself in: the session's requests per turn
        (pulled toward a prior for agents, 1 for plain chats) × its expected remaining turns.

        Remaining turns: as many as it has had so far (a session that ran *k* turns is
        expected to run about *k* more), at least 1, at most ``sessions.horizon_turns``."""
        prior = self.cfg.agent_requests_per_turn if (shape.agent or shape.tools) else 1.0
        remaining = min(max(float(state.turns), 1.0), self.cfg.horizon_turns)
        return state.requests_per_turn(prior) * remaining

    def _break_even(
        self, state: ThreadState, shape: RequestShape, current: str, other: str, now: float
    ) -> BreakEven | None:
        profile = shape.cache.scaled(state.token_scale)
        cur_model = self.settings.tier(current).model
        new_model = self.settings.tier(other).model
        now_cur = state.cache(cur_model).request(profile, now, commit=False)
        now_new = state.cache(new_model).request(profile, now, commit=False)
        agentic = bool(shape.agent or shape.tools)
        growth = state.growth_tokens or (GROWTH_PRIOR if agentic else 0.0)
        output = state.output_tokens or OUTPUT_PRIOR
        return break_even(
            self.catalogue,
            from_tier=current,
            from_model=cur_model,
            to_tier=other,
            to_model=new_model,
            now_from=now_cur,
            now_to=now_new,
            context_tokens=profile.total_tokens,
            growth_tokens=growth,
            output_tokens=output,
            expected_requests=self.expected_requests(state, shape),
        )

    def _decision(
        self,
        tier: str,
        cls: Decision | None,
        reason: str,
        start: float,
        *,
        utility: bool = False,
        confidence: float | None = None,
    ) -> Decision:
        ms = (time.perf_counter() - start) * 1000
        if cls is not None and cls.tier == tier:
            return dataclasses.replace(cls, reason=reason, decision_ms=ms)
        forced = self.policy.decide(None, force_tier=tier, decision_ms=ms)
        return dataclasses.replace(
            forced,
            reason=reason,
            classifier=cls.classifier if cls is not None else "session",
            confidence=cls.confidence if cls is not None else (confidence or 1.0),
            classification=cls.classification if cls is not None else None,
            classifier_cost_usd=cls.classifier_cost_usd if cls is not None else Decimal(0),
            thinking=None if utility else forced.thinking,
            output_config=None if utility else forced.output_config,
        )

    # -- after the call ------------------------------------------------------------------
    async def observe(
        self, verdict: SessionVerdict, outcome: Outcome, *, at: float | None = None
    ) -> Observation:
        """Update the session with what happened, and compute the honest baseline.

        Call it once per routed request that got an upstream reply (with ``usage=None`` for a
        failure: nothing is learned then). Never raises for a store failure: the
        :class:`Observation` says so (``stored=False``, ``error``).
        """
        usage = outcome.usage
        stop = outcome.stop_reason
        if usage is None:
            return Observation(self._baseline, None, "none", stored=False, stop_reason=stop)
        now = verdict.at if at is None else at
        if verdict.key is None or verdict.degraded is not None:
            return Observation(self._baseline, usage, "same-usage", stored=False, stop_reason=stop)
        if verdict.rule == "utility":
            temp = ThreadState(created=now)
            baseline, method = self._baseline_for(temp, verdict, outcome, usage, now)
            return Observation(self._baseline, baseline, method, stored=False, stop_reason=stop)
        state = verdict._state or ThreadState(created=now)
        baseline, method = self._baseline_for(state, verdict, outcome, usage, now)
        self._learn(state, verdict, outcome, usage, now)
        ttl = self.cfg.ttl_s
        for cache in [*state.caches.values(), *([state.baseline] if state.baseline else [])]:
            for entry in cache.entries.values():
                ttl = max(ttl, entry.expires - now + 300)
        try:
            await self.store.put(verdict.key.storage_key, state, ttl)
            if verdict.shape.client_turn == "compact":
                await self.store.put(self._compacted_key(verdict.key), state, ttl)
        except StoreError as exc:
            return Observation(
                self._baseline, baseline, method, stored=False, error=str(exc), stop_reason=stop
            )
        return Observation(self._baseline, baseline, method, stored=True, stop_reason=stop)

    def _same_model(self, a: str, b: str) -> bool:
        if a == b:
            return True
        ia, ib = self.catalogue.info(a), self.catalogue.info(b)
        return ia is not None and ib is not None and ia.model == ib.model

    def _baseline_for(
        self,
        state: ThreadState,
        verdict: SessionVerdict,
        outcome: Outcome,
        usage: Usage,
        now: float,
    ) -> tuple[Usage, str]:
        shape = verdict.shape
        real = usage.total_input_tokens
        if shape.input_tokens > 0 and real > 0:
            ratio = min(max(real / shape.input_tokens, SCALE_BOUNDS[0]), SCALE_BOUNDS[1])
            state.token_scale = (
                ratio if state.requests == 0 else (1 - _EMA) * state.token_scale + _EMA * ratio
            )
        profile = shape.cache.scaled(state.token_scale)
        served = state.cache(outcome.model)
        served.reconcile(CacheUse.of(usage))
        served.request(profile, now, commit=True)
        baseline = state.baseline_cache(self._baseline)
        if self._same_model(outcome.model, self._baseline):
            baseline.reconcile(CacheUse.of(usage))
            baseline.request(profile, now, commit=True)
            return usage, "actual"
        use = baseline.request(profile, now, commit=True)
        return use.usage(usage.output_tokens, usage.thinking_tokens), "session-cache"

    def _learn(
        self,
        state: ThreadState,
        verdict: SessionVerdict,
        outcome: Outcome,
        usage: Usage,
        now: float,
    ) -> None:
        shape = verdict.shape
        if shape.kind == "turn" or state.tier is None:
            if state.turns > 0:
                state.done_turns += 1
                state.done_turn_requests += state.turn_requests
            state.turns += 1
            state.turn_requests = 0
            state.escalated = None
            # what the classifier saw of the context at the turn's start (nothing: check again)
            state.floor_level = context_floor(shape.classify_input)[0] if verdict.classified else 1
            if verdict.classified_tier is not None:
                state.turn_tier = verdict.classified_tier
                state.confidence = verdict.decision.confidence
        elif state.last_input_tokens:
            growth = max(0.0, shape.input_tokens * state.token_scale - state.last_input_tokens)
            state.growth_tokens = (
                growth
                if not state.growth_tokens
                else (1 - _EMA) * state.growth_tokens + _EMA * growth
            )
        if shape.kind != "turn" and verdict.classified:  # the context-floor check asked
            state.floor_level = max(state.floor_level, context_floor(shape.classify_input)[0])
        state.turn_requests += 1
        state.requests += 1
        state.tier = verdict.tier
        if verdict.rule in ESCALATIONS and verdict.rule != "turn-escalate":
            state.escalated = verdict.rule
        if verdict.rule == "tool-errors":
            state.errors_seen = shape.tool_errors
        elif shape.tool_errors < state.errors_seen:
            state.errors_seen = 0
        out = float(usage.output_tokens)
        state.output_tokens = (
            out if not state.output_tokens else (1 - _EMA) * state.output_tokens + _EMA * out
        )
        state.last_stop = outcome.stop_reason
        state.last_input_tokens = round(shape.input_tokens * state.token_scale)
        state.last_seen = now
        if not state.created:
            state.created = now

    async def aclose(self) -> None:
        await self.store.aclose()


def _join(*parts: str) -> str:
    return "; ".join(p for p in parts if p)

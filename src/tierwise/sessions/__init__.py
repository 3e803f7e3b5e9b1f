"""Sessions: agent-aware, prompt-cache-aware routing for conversations and tool loops.

Per-request routing is wrong for agent traffic in three ways: a tier change throws away the
prompt cache (it belongs to one model), the agent's envelope (system prompt, 24 tool
definitions, ``<system-reminder>`` blocks) drowns the user's task, and savings measured
against a baseline with no cache history are not what the baseline would have cost. This
package fixes all three for the gateway.

The interface the gateway calls, per request (one :class:`SessionRouter` per process)::

    sessions = SessionRouter(settings, catalogue)          # store from settings.sessions
    shape = sessions.analyse(body, headers)                # tierwise.gateway.shape.analyse
    key = sessions.identify(body, headers, shape=shape, scope=key_name)   # or None
    verdict = await sessions.route(key, body, router.decide, shape=shape,
                                   requested_tier=tier_or_None)
    # verdict.tier / verdict.model / verdict.decision: what to call, with the tier's
    #   thinking/effort defaults (verdict.no_thinking: drop thinking and effort, a utility
    #   request); verdict.shape.input_tokens: the whole input's estimate (context window,
    #   budget hold); verdict.headers(): x-tierwise-reason, x-tierwise-session(-rule).
    ... call upstream ...
    obs = await sessions.observe(verdict, Outcome(model=answered_model, usage=usage,
                                                  stop_reason=stop_reason))
    settlement = obs.settle(catalogue, usage, answered_model,
                            classifier_cost_usd=verdict.decision.classifier_cost_usd)
    # settlement: the honest baseline (the baseline model with its own cache history)
    fields = verdict.ledger_fields(obs)   # session_id, session_rule, session_shape (no text)

``route`` awaits ``classify`` (normally ``Router.decide``) only where a human decides: a new
turn, a new thread, or a request without usable session state; and once more in a tool loop
whose context crosses the classifier's large-context line (rule ``context-floor``). It does no
I/O with the memory store. With Redis it does one GET, and ``observe`` one SET, each bounded
by ``sessions.redis_timeout_s``.

The rules a verdict names (:data:`~tierwise.sessions.router.RULES`):

======================  ==================================================================
``new-session``          first request of a thread: the classifier decides
``turn-keep``            new turn, classified to the session's tier
``turn-escalate``        new turn classified higher: taken (quality first)
``turn-switch``          new turn classified cheaper, and the saving over the expected
                         remaining requests exceeds the cache thrown away (break-even)
``cache-hold``           new turn classified cheaper, but switching would cost more: stay
``continuation``         tool-loop continuation (or ``pause_turn``, or the agent's own request
                         to summarise the conversation when it compacts it): the turn's tier
                         is kept
``resume``               the first request of a compacted conversation (it starts from the
                         agent's summary): the tier and history of the thread it compacted
``context-window``       escalated: the input does not fit the tier's window
``max-tokens``           escalated: the previous reply stopped at the tier's own output limit
                         (below the request's ``max_tokens``), to a tier with a higher one
``tool-errors``          escalated one tier: ``sessions.tool_error_streak`` tool uses in a row
                         the model got wrong (Claude Code's ``<tool_use_error>`` results; a
                         failing command is the environment answering, not counted)
``context-floor``        escalated: inside a tool loop the task context crossed the
                         classifier's large-context line (``taxonomy.context_floor``); the
                         classifier, asked once at the crossing, chose a more capable tier,
                         and switching now costs no extra cache write (that tier's cache holds
                         the prefix, or the current one's has expired). Otherwise the tier is
                         kept and the next turn decides
``override``             the client named a tier (or a model ``model_map`` maps to one)
``utility``              title / summary / classification side request: cheapest, no thinking
``per-request``          no usable session (none, disabled, store down): classified as before
======================  ==================================================================

A continuation never changes tier except by ``context-window``, ``max-tokens``,
``tool-errors`` or ``context-floor``. Those are escalations, flagged ``mid_loop_change``: the
body's thinking blocks must be forwarded unchanged.

Modules: :mod:`~tierwise.gateway.shape` (task vs envelope), :mod:`.identity` (session and
thread keys), :mod:`.store` (memory / Redis state), :mod:`.cachesim` (per-model prompt cache
simulation), :mod:`.switching` (break-even), :mod:`.utility` (side requests),
:mod:`.modelmap` (``model_map``), :mod:`.replay` (``tierwise replay``).
"""

from __future__ import annotations

from tierwise.sessions.identity import SessionKey
from tierwise.sessions.router import (
    RULES,
    Observation,
    Outcome,
    SessionRouter,
    SessionVerdict,
    open_store,
)
from tierwise.sessions.store import MemoryStore, RedisStore, StoreError, ThreadState

__all__ = [
    "RULES",
    "MemoryStore",
    "Observation",
    "Outcome",
    "RedisStore",
    "SessionKey",
    "SessionRouter",
    "SessionVerdict",
    "StoreError",
    "ThreadState",
    "open_store",
]

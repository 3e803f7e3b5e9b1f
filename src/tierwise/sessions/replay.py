"""``tierwise replay``: what recorded sessions would cost under a configuration, three ways.

Policies compared on the same requests, each with its own per-model prompt-cache simulation
(:mod:`~tierwise.sessions.cachesim`, lifetimes from the requests' timestamps):

``top``
    every request on the top tier (the baseline, with its own cache);
``envelope``
    per request, as tierwise classified before sessions: the classifier reads the whole
    envelope (the newest user message's text with its injected blocks, the full system
    prompt, every tool, every message, the whole input's size); only for replays of bodies;
``per-request``
    tierwise without sessions: every ``auto`` request classified on its own (the real
    classifier, ``Router.decide``, on :func:`~tierwise.gateway.shape.analyse`'s task view),
    escalated when the input does not fit the tier's context window;
``session``
    :class:`~tierwise.sessions.router.SessionRouter`, fed the simulated usage of the model it
    chose.

Requests naming a tier (or a model ``model_map`` maps to one) go to that tier in
``per-request`` and ``session``, and models passed through stay on that model. A trace
recorded without tierwise names real models: :func:`replay_as_auto` picks the requests to
replay as ``auto`` (each session's main model, or given globs). Every request
keeps the output length it was recorded with, on every tier (an assumption: tiers differ in
verbosity and thinking).

Inputs (:func:`load_requests`; files, JSON documents and directories are read by
:mod:`~tierwise.sessions.traces`), one JSON object per record, optionally gzip-compressed:

* **requests**: a Messages request body (``{"model", "messages", …}``), or
  ``{"body": {…}, "headers"?: {…}, "t"?: seconds, "session"?: label,
  "response"?: {"usage"?: {…}, "stop_reason"?: …, "output_tokens"?: n}}``. A captured
  ``usage`` calibrates the token estimate of that request. Without ``t``, requests are taken
  ``--gap`` seconds apart. Without ``session``, the session comes from
  :func:`~tierwise.sessions.identity.identify`.
* **captured exchanges**: ``{"request": {"body", "headers"?, "url"?, "timestamp"?},
  "response"?: {"status_code"?, "body"? | "body_raw"?}}`` as claude-trace and tierwise's
  recorder write them (:func:`~tierwise.sessions.traces.exchange`): the reply's usage and
  stop reason are read from the JSON reply or the recorded event stream; calls that are not
  Messages requests and attempts the upstream refused are skipped and counted.
* **Claude Code's session transcripts** (``~/.claude/projects/<project>/<session>.jsonl``, its
  sub-agents' in ``<session>/subagents/``): each model call rebuilt, exactly where Claude
  Code recorded the request (2.1.3xx), else from the conversation, and each compaction's
  summary request rebuilt from its record (:mod:`~tierwise.sessions.transcripts`).
* **compact traces** (what tests/sessions_corpus.py writes): ``{"type": "envelope", "id",
  "system", "tools"}`` lines define shared envelopes, and ``{"type": "request", "session",
  "t", "thread", "envelope", "params", "keep", "append", "headers", "response"}`` lines give
  each request as the first ``keep`` messages of the previous request in the same thread
  plus ``append`` (``mark_last``: put a 5-minute ``cache_control`` on the last block of that
  many final user/assistant messages, as agents move their breakpoint forward). Any string
  may be written ``{"$fill": n, "seed": s, "prefix"?, "suffix"?}``: ``n`` characters of
  deterministic filler between a prefix and a suffix.

From the ledger (:func:`requests_from_ledger`), the rows' ``session_shape`` (sizes,
breakpoints, counts, no text) stand in for the bodies. The classifier cannot run without
text, so each turn's recorded ``classified_tier`` is used: ``session`` re-applies its rules
on top of it, and ``per-request`` applies it to the turn's continuations too (they carry the
same words).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import fnmatch
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from tierwise.config import Settings
from tierwise.errors import InputError
from tierwise.gateway.shape import RequestShape, analyse, system_text
from tierwise.policy import Policy
from tierwise.pricing import PriceCatalogue
from tierwise.providers.base import usage_from_api
from tierwise.sessions import modelmap, traces
from tierwise.sessions.cachesim import ModelCache
from tierwise.sessions.identity import identify
from tierwise.sessions.router import ESCALATIONS, Outcome, SessionRouter
from tierwise.sessions.store import MemoryStore
from tierwise.types import ClassifyInput, Decision, Usage

POLICIES = ("top", "envelope", "per-request", "session")
MAX_FILL = 4 * 1024 * 1024

Decide = Callable[[ClassifyInput], Awaitable[Decision]]


# -- deterministic filler text -------------------------------------------------------------
_WORDS = [
    "the",
    "of",
    "and",
    "to",
    "in",
    "is",
    "for",
    "that",
    "on",
    "with",
    "as",
    "it",
    "be",
    "by",
    "this",
    "are",
    "from",
    "at",
    "or",
    "an",
    "if",
    "not",
    "def",
    "return",
    "self",
    "value",
    "data",
    "file",
    "line",
    "error",
    "test",
    "import",
    "class",
    "function",
    "result",
    "config",
    "request",
    "session",
    "model",
    "tier",
    "cache",
    "token",
    "user",
    "list",
    "dict",
    "none",
    "true",
    "false",
    "path",
    "name",
    "index",
    "count",
    "update",
    "check",
    "parse",
    "write",
    "read",
    "open",
    "close",
    "build",
    "run",
    "output",
    "input",
    "state",
]


def _filler_base() -> str:
    state = 0x2545F491
    words = []
    for _ in range(40_000):
        state = (state * 1103515245 + 12345) & 0x7FFFFFFF
        words.append(_WORDS[state % len(_WORDS)])
        if state % 11 == 0:
            words.append("\n")
    return " ".join(words)


_BASE: list[str] = []


def filler(n: int, seed: int) -> str:
    """``n`` characters of deterministic filler text; different seeds give different text."""
    if not 0 <= n <= MAX_FILL:
        raise ValueError(f"$fill length must be 0..{MAX_FILL}, got {n}")
    if not _BASE:
        _BASE.append(_filler_base())
    base = _BASE[0]
    start = (seed * 7919) % len(base)
    head = f"[{seed}] "
    out = head
    while len(out) < n:
        out += base[start : start + n - len(out)]
        start = 0
    return out[:n]


def expand(value: Any) -> Any:
    """``value`` with every ``{"$fill": n, "seed": s, "prefix"?: str, "suffix"?: str}``
    replaced by ``prefix`` + ``n`` characters of filler + ``suffix``."""
    if isinstance(value, dict):
        if "$fill" in value:
            n, seed = value.get("$fill"), value.get("seed", 0)
            prefix, suffix = value.get("prefix", ""), value.get("suffix", "")
            if not isinstance(n, int) or not isinstance(seed, int):
                raise ValueError('"$fill" and "seed" must be integers')
            if not isinstance(prefix, str) or not isinstance(suffix, str):
                raise ValueError('"$fill" prefix and suffix must be strings')
            return prefix + filler(n, seed) + suffix
        return {k: expand(v) for k, v in value.items()}
    if isinstance(value, list):
        return [expand(v) for v in value]
    return value


# -- requests ------------------------------------------------------------------------------
@dataclass(slots=True)
class TraceRequest:
    """One request to replay: its facts, its recorded outcome, and where it came from."""

    session: str  # the session label used for per-session results
    t: float
    model: str
    shape: RequestShape
    headers: dict[str, str]
    output_tokens: int
    thinking_tokens: int
    stop_reason: str | None
    where: str
    body: dict[str, Any] | None = None
    reported: Usage | None = None  # the upstream's usage, when the trace recorded it
    recorded_tier: str | None = None  # ledger: the classifier's tier at this request
    label: str | None = None  # a corpus label (the tier the generator meant), if any
    thread: str = ""
    as_auto: bool = False  # replay as if the client had asked for ``auto`` (see replay_as_auto)
    rebuilt: str | None = None  # how, when the trace did not record the request as sent

    @property
    def routed_model(self) -> str:
        """The model id the replay resolves: ``auto`` for a request replayed as routed."""
        return modelmap.AUTO if self.as_auto else self.model

    @property
    def token_scale(self) -> float:
        """Real tokens per estimated token for this request (1 without a recorded usage)."""
        if self.reported is None or self.shape.input_tokens <= 0:
            return 1.0
        real = self.reported.total_input_tokens
        return real / self.shape.input_tokens if real > 0 else 1.0


def load_requests(
    path: Path, *, gap_s: float = 10.0, skipped: Counter[str] | None = None
) -> list[TraceRequest]:
    """Read a trace: a requests file, a compact trace, captured exchanges, Claude Code's session
    transcripts, or a directory of them (see the module docstring,
    :mod:`~tierwise.sessions.traces` and :mod:`~tierwise.sessions.transcripts`). Records that
    are not billed Messages calls are left out; ``skipped`` counts them by reason."""
    envelopes: dict[str, dict[str, Any]] = {}
    threads: dict[tuple[str, str], list[Any]] = {}
    out: list[TraceRequest] = []
    for where, record in traces.records(path):
        if isinstance(record, traces.Skipped):
            if skipped is not None:
                skipped[record.reason] += 1
            continue
        if not isinstance(record, dict):
            raise InputError(f"{where}: expected a JSON object, got {type(record).__name__}")
        obj: dict[str, Any] = record
        try:
            kind = obj.get("type")
            if kind == "envelope":
                envelopes[str(obj["id"])] = {
                    "system": expand(obj.get("system")),
                    "tools": expand(obj.get("tools")),
                }
                continue
            if kind == "request":
                body = _compact_body(obj, envelopes, threads)
            elif isinstance(obj.get("body"), dict):
                body = obj["body"]
            elif "messages" in obj:
                body, obj = obj, {}
            else:
                raise ValueError(
                    'expected a request body, {"body": …}, a captured exchange '
                    '({"request": {"body": …}, "response": …}), a compact trace line or a '
                    "Claude Code transcript line"
                )
            out.append(_request(obj, body, where, len(out) * gap_s))
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(f"{where}: {exc}") from exc
    return out


def replay_as_auto(
    requests: list[TraceRequest],
    settings: Settings,
    patterns: list[str] | None = None,
    catalogue: PriceCatalogue | None = None,
) -> Counter[str]:
    """Choose the requests to replay as if their client had asked for ``auto``; returns how
    many per recorded model.

    With ``patterns`` (model id globs): the requests whose model matches one. Without: a trace
    recorded before tierwise (no request resolves to ``auto``, e.g. Claude Code talking to the
    API directly on its default model) is replayed as ``tierwise code`` would send it
    (``ANTHROPIC_MODEL=auto``): in each session, the requests for the session's main model
    are routed. The main model is the one most of the session's tool-carrying requests asked
    for (else most of its requests; for requests without a session, the whole trace's). The
    others (the small fast model's side requests, a sub-agent pinned to Haiku) keep their
    model. A trace with ``auto`` requests is replayed as recorded."""
    counts: Counter[str] = Counter()
    if patterns:
        chosen = [r for r in requests if any(fnmatch.fnmatchcase(r.model, p) for p in patterns)]
    else:
        if any(modelmap.resolve(settings, r.model, catalogue).mode == "auto" for r in requests):
            return counts
        by_session: dict[str, list[TraceRequest]] = defaultdict(list)
        for req in requests:
            by_session[req.session].append(req)
        overall = _main_model(requests)
        chosen = []
        for session, reqs in by_session.items():
            main = overall if session.startswith("lone:") else _main_model(reqs)
            chosen.extend(r for r in reqs if r.model == main)
    for req in chosen:
        req.as_auto = True
        counts[req.model] += 1
    return counts


def _main_model(requests: list[TraceRequest]) -> str | None:
    """The model most tool-carrying requests asked for (else most requests)."""
    agentic = [r for r in requests if r.shape.tools or r.shape.agent_tools]
    counts = Counter(r.model for r in (agentic or requests))
    return counts.most_common(1)[0][0] if counts else None


def _compact_body(
    obj: dict[str, Any],
    envelopes: dict[str, dict[str, Any]],
    threads: dict[tuple[str, str], list[Any]],
) -> dict[str, Any]:
    session = str(obj["session"])
    thread = (session, str(obj.get("thread", "main")))
    keep = int(obj.get("keep", 0))
    previous = threads.get(thread, [])
    if keep > len(previous):
        raise ValueError(
            f"keep={keep} but the thread's previous request had {len(previous)} messages"
        )
    messages = previous[:keep] + expand(obj.get("append") or [])
    threads[thread] = messages
    body: dict[str, Any] = dict(obj.get("params") or {})
    envelope = obj.get("envelope")
    if envelope is not None:
        if envelope not in envelopes:
            raise ValueError(f"unknown envelope {envelope!r} (define it on an earlier line)")
        for name, value in envelopes[envelope].items():
            if value is not None:
                body[name] = value
    for name in ("system", "tools"):
        if name in obj:
            body[name] = expand(obj[name])
    body["messages"] = mark_last(messages, int(obj.get("mark_last", 0)))
    return body


def mark_last(messages: list[Any], count: int) -> list[Any]:
    """A copy of ``messages`` with a 5-minute ``cache_control`` on the last block of the last
    ``count`` user/assistant messages (how agents move their breakpoint forward)."""
    if count <= 0:
        return messages
    out = list(messages)
    marked = 0
    for i in range(len(out) - 1, -1, -1):
        message = out[i]
        if not isinstance(message, dict) or message.get("role") == "system":
            continue
        content = message.get("content")
        if isinstance(content, str):
            content = [{"type": "text", "text": content}]
        if not isinstance(content, list) or not content or not isinstance(content[-1], dict):
            continue
        last = {**content[-1], "cache_control": {"type": "ephemeral"}}
        out[i] = {**message, "content": [*content[:-1], last]}
        marked += 1
        if marked == count:
            break
    return out


def _request(
    obj: dict[str, Any], body: dict[str, Any], where: str, default_t: float
) -> TraceRequest:
    headers = {str(k).lower(): str(v) for k, v in (obj.get("headers") or {}).items()}
    response = obj.get("response") or {}
    if not isinstance(response, dict):
        raise ValueError('"response" must be an object')
    raw_usage = response.get("usage")
    reported = usage_from_api(raw_usage) if isinstance(raw_usage, dict) else None
    output = response.get("output_tokens")
    if output is None:
        output = reported.output_tokens if reported is not None else 0
    thinking = int(response.get("thinking_tokens") or (reported.thinking_tokens if reported else 0))
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise ValueError('the request body has no "model"')
    shape = analyse(body, headers)
    t = obj.get("t", default_t)
    if not isinstance(t, int | float) or isinstance(t, bool):
        raise ValueError('"t" must be a number of seconds')
    session = obj.get("session")
    if session is None:
        key = identify(body, headers, shape)
        session = key.session if key is not None else f"lone:{where}"
    return TraceRequest(
        session=str(session),
        t=float(t),
        model=model,
        shape=shape,
        headers=headers,
        output_tokens=int(output),
        thinking_tokens=min(thinking, int(output)),
        stop_reason=response.get("stop_reason"),
        where=where,
        body=body,
        reported=reported,
        label=obj.get("label"),
        thread=f"{session}/{obj.get('thread', shape.thread_fp)}",
        rebuilt=str(obj["rebuilt"]) if obj.get("rebuilt") else None,
    )


def requests_from_ledger(
    store: Any, *, since: dt.datetime | None = None, until: dt.datetime | None = None
) -> list[TraceRequest]:
    """Ledger rows that carry a ``session_shape`` (recorded by the gateway), oldest first."""
    out: list[TraceRequest] = []
    for row in store.session_rows(since=since, until=until):
        where = f"ledger request {row.request_id}"
        try:
            shape = RequestShape.from_record(row.session_shape)
        except ValueError as exc:
            raise InputError(f"{where}: {exc}") from exc
        record = row.session_shape
        session = row.session_id or f"lone:{row.request_id}"
        out.append(
            TraceRequest(
                session=session,
                t=row.ts.timestamp(),
                model=row.requested_model or "auto",
                shape=shape,
                headers={},
                output_tokens=row.usage.output_tokens,
                thinking_tokens=row.usage.thinking_tokens,
                stop_reason=record.get("stop_reason"),
                where=where,
                reported=row.usage if row.usage.total_input_tokens else None,
                recorded_tier=record.get("classified_tier") or row.tier,
                thread=f"{session}/{shape.thread_fp}",
            )
        )
    return out


# -- results -------------------------------------------------------------------------------
@dataclass(slots=True)
class PolicyResult:
    name: str
    cost_usd: Decimal = Decimal(0)
    requests: int = 0
    unpriced: int = 0
    by_tier: Counter[str] = field(default_factory=Counter)
    cost_by_tier: dict[str, Decimal] = field(default_factory=lambda: defaultdict(Decimal))
    cache_read: int = 0
    cache_write: int = 0
    uncached: int = 0
    classifier_runs: int = 0
    continuation_changes: int = 0  # tier changed on a continuation
    unexplained_changes: int = 0  # … without an escalation rule recorded
    rules: Counter[str] = field(default_factory=Counter)
    below_label: int = 0
    labelled: int = 0

    def add(self, tier: str, cost: Decimal | None, usage: Usage) -> None:
        self.requests += 1
        self.by_tier[tier] += 1
        if cost is None:
            self.unpriced += 1
        else:
            self.cost_usd += cost
            self.cost_by_tier[tier] += cost
        self.cache_read += usage.cache_read_tokens
        self.cache_write += usage.cache_write_5m_tokens + usage.cache_write_1h_tokens
        self.uncached += usage.input_tokens

    def as_json(self, top_cost: Decimal) -> dict[str, Any]:
        return {
            "policy": self.name,
            "cost_usd": str(self.cost_usd.quantize(Decimal("0.000001"))),
            "vs_top": None if not top_cost else round(float(self.cost_usd / top_cost), 4),
            "requests": self.requests,
            "unpriced": self.unpriced,
            "tier_share": {t: round(n / self.requests, 4) for t, n in sorted(self.by_tier.items())}
            if self.requests
            else {},
            "cost_by_tier": {
                t: str(c.quantize(Decimal("0.000001")))
                for t, c in sorted(self.cost_by_tier.items())
            },
            "cache_read_tokens": self.cache_read,
            "cache_write_tokens": self.cache_write,
            "uncached_input_tokens": self.uncached,
            "classifier_runs": self.classifier_runs,
            "continuation_tier_changes": self.continuation_changes,
            "unexplained_continuation_changes": self.unexplained_changes,
            "rules": dict(sorted(self.rules.items())),
            "below_label": self.below_label,
            "labelled": self.labelled,
        }


@dataclass(slots=True)
class ReplayReport:
    policies: dict[str, PolicyResult]
    sessions: dict[str, dict[str, Decimal]]  # session → policy → cost
    requests: int
    seconds: float
    # session → escalation rules session routing applied inside tool loops, with counts
    loop_escalations: dict[str, Counter[str]] = field(default_factory=dict)
    # session routing's decision for each request it routed, in time order: (where, rule, tier)
    decisions: list[tuple[str, str, str]] = field(default_factory=list)

    @property
    def top_cost(self) -> Decimal:
        return self.policies["top"].cost_usd

    def session_worse(self) -> list[tuple[str, Decimal, Decimal]]:
        """Sessions where session routing cost more than per-request routing."""
        out = []
        for name, costs in sorted(self.sessions.items()):
            if costs["session"] > costs["per-request"]:
                out.append((name, costs["session"], costs["per-request"]))
        return out

    def as_json(self) -> dict[str, Any]:
        worse = self.session_worse()
        return {
            "requests": self.requests,
            "sessions": len(self.sessions),
            "policies": [p.as_json(self.top_cost) for p in self.policies.values()],
            "sessions_session_costlier_than_per_request": [
                {
                    "session": s,
                    "session_usd": str(a),
                    "per_request_usd": str(b),
                    "loop_escalations": dict(sorted(self.loop_escalations.get(s, {}).items())),
                }
                for s, a, b in worse
            ],
            "session_costs": {
                name: {p: str(c) for p, c in costs.items()}
                for name, costs in sorted(self.sessions.items())
            },
            "seconds": round(self.seconds, 2),
        }


# -- the replay ----------------------------------------------------------------------------
class _Accounts:
    """Per-policy, per-thread cache simulations and the money."""

    def __init__(self, settings: Settings, catalogue: PriceCatalogue) -> None:
        self.settings = settings
        self.catalogue = catalogue
        self.caches: dict[tuple[str, str, str], ModelCache] = {}
        self.results = {p: PolicyResult(p) for p in POLICIES}
        self.sessions: dict[str, dict[str, Decimal]] = defaultdict(
            lambda: dict.fromkeys(POLICIES, Decimal(0))
        )
        self.last_tier: dict[tuple[str, str], str] = {}
        self.decisions: list[tuple[str, str, str]] = []
        self.loop_escalations: dict[str, Counter[str]] = defaultdict(Counter)
        self._order = {t.name: i for i, t in enumerate(settings.tiers)}

    def charge(self, policy: str, req: TraceRequest, tier: str, model: str) -> Usage:
        cache = self.caches.get((policy, req.thread, model))
        if cache is None:
            cache = self.caches[(policy, req.thread, model)] = ModelCache(model, max_entries=64)
        profile = req.shape.cache.scaled(req.token_scale)
        use = cache.request(profile, req.t, commit=True)
        usage = use.usage(req.output_tokens, req.thinking_tokens)
        cost = self.catalogue.cost(usage, model).usd
        result = self.results[policy]
        result.add(tier, cost, usage)
        self.sessions[req.session][policy] += cost or Decimal(0)
        if req.label is not None and req.label in self._order and tier in self._order:
            result.labelled += 1
            if self._order[tier] < self._order[req.label]:
                result.below_label += 1
        return usage

    def track(self, policy: str, req: TraceRequest, tier: str, rule: str | None) -> None:
        key = (policy, req.thread)
        before = self.last_tier.get(key)
        self.last_tier[key] = tier
        if req.shape.kind != "continuation" or before is None or before == tier:
            return
        result = self.results[policy]
        result.continuation_changes += 1
        if rule not in ESCALATIONS:
            result.unexplained_changes += 1
        elif policy == "session":
            self.loop_escalations[req.session][rule] += 1


class Replayer:
    """Runs the three policies over a list of requests (time order)."""

    def __init__(
        self,
        settings: Settings,
        *,
        decide: Decide,
        catalogue: PriceCatalogue | None = None,
    ) -> None:
        self.settings = settings
        self.catalogue = catalogue or settings.catalogue()
        self.decide = decide
        self.policy = Policy(settings, self.catalogue)
        self._order = {t.name: i for i, t in enumerate(settings.tiers)}

    def _recorded(self, req: TraceRequest, last: dict[str, str]) -> Decide:
        """For ledger rows: a classifier that answers with the recorded tier."""

        async def decide(_: ClassifyInput) -> Decision:
            tier = req.recorded_tier or last.get(req.thread) or self.settings.default_tier
            if tier not in self._order:
                tier = self.settings.default_tier
            decision = self.policy.decide(None, force_tier=tier)
            return dataclasses.replace(decision, classifier="recorded", reason="recorded tier")

        return decide

    async def run(self, requests: Iterable[TraceRequest]) -> ReplayReport:
        start = time.perf_counter()
        ordered = sorted(requests, key=lambda r: r.t)
        accounts = _Accounts(self.settings, self.catalogue)
        sessions = SessionRouter(
            self.settings,
            self.catalogue,
            MemoryStore(max(self.settings.sessions.max_threads, 1)),
            clock=lambda: 0.0,
        )
        top = self.settings.top_tier
        recorded_last: dict[str, str] = {}
        for req in ordered:
            accounts.charge("top", req, top.name, top.model)
            decide = self.decide if req.body is not None else self._recorded(req, recorded_last)
            await self._per_request(req, decide, accounts)
            if req.body is not None:
                await self._per_request(req, decide, accounts, "envelope")
            await self._session(req, decide, sessions, accounts)
            if req.recorded_tier and req.shape.kind == "turn":
                recorded_last[req.thread] = req.recorded_tier
        return ReplayReport(
            policies=accounts.results,
            sessions=dict(accounts.sessions),
            requests=len(ordered),
            seconds=time.perf_counter() - start,
            loop_escalations=dict(accounts.loop_escalations),
            decisions=accounts.decisions,
        )

    async def _per_request(
        self,
        req: TraceRequest,
        decide: Decide,
        accounts: _Accounts,
        policy: str = "per-request",
    ) -> None:
        route = modelmap.resolve(self.settings, req.routed_model, self.catalogue)
        if route.mode == "passthrough":
            accounts.charge(policy, req, route.tier or req.model, req.model)
            return
        rule = None
        if route.mode == "tier":
            tier = route.tier or self.settings.default_tier
        else:
            view = req.shape.classify_input
            if policy == "envelope" and req.body is not None:
                view = envelope_input(req.body, req.shape)
            decision = await decide(view)
            accounts.results[policy].classifier_runs += 1
            tier = self._fit(decision.tier, round(req.shape.input_tokens * req.token_scale))
            if tier != decision.tier:
                rule = "context-window"
        accounts.track(policy, req, tier, rule)
        accounts.charge(policy, req, tier, self.settings.tier(tier).model)

    async def _session(
        self, req: TraceRequest, decide: Decide, router: SessionRouter, accounts: _Accounts
    ) -> None:
        route = modelmap.resolve(self.settings, req.routed_model, self.catalogue)
        if route.mode == "passthrough":
            accounts.charge("session", req, route.tier or req.model, req.model)
            return
        key = identify(req.body or {}, req.headers, req.shape)
        if req.body is None:
            key = None if req.session.startswith("lone:") else _ledger_key(req)
        verdict = await router.route(
            key,
            req.body,
            decide,
            shape=req.shape,
            headers=req.headers,
            requested_tier=route.tier if route.mode == "tier" else None,
            at=req.t,
        )
        result = accounts.results["session"]
        result.rules[verdict.rule] += 1
        accounts.decisions.append((req.where, verdict.rule, verdict.tier))
        if verdict.classified:
            result.classifier_runs += 1
        if verdict.rule != "utility":
            accounts.track("session", req, verdict.tier, verdict.rule)
        usage = accounts.charge("session", req, verdict.tier, verdict.model)
        await router.observe(verdict, Outcome(verdict.model, usage, req.stop_reason), at=req.t)

    def _fit(self, tier: str, tokens: int) -> str:
        names = self.settings.tier_names
        for candidate in names[self._order[tier] :]:
            info = self.catalogue.info(self.settings.tier(candidate).model)
            if info is None or tokens <= info.context_window:
                return candidate
        return tier


def envelope_input(body: dict[str, Any], shape: RequestShape) -> ClassifyInput:
    """What the classifier read before sessions: the newest user message with any text
    (injected blocks included), the whole system prompt, every tool and message, the whole
    input's size."""
    latest = ""
    for message in body.get("messages") or []:
        if isinstance(message, dict) and message.get("role") == "user":
            text = system_text(message.get("content"))
            if text.strip():
                latest = text
    return ClassifyInput(
        prompt=latest,
        system=system_text(body.get("system")),
        turns=shape.messages,
        tools=shape.tools,
        attachments=shape.attachments,
        context_tokens=shape.input_tokens,
    )


def _ledger_key(req: TraceRequest) -> Any:
    from tierwise.sessions.identity import SessionKey

    return SessionKey(req.session, req.shape.thread_fp, "metadata")

"""Reading and writing ledger rows on a :class:`~tierwise.ledger.db.Database`.

:class:`LedgerStore` turns :class:`~tierwise.types.LedgerEntry` objects into rows (and back),
inserts batches idempotently (``ON CONFLICT (request_id) DO NOTHING``: a batch retried after a
lost acknowledgement is not recorded twice), and answers the aggregate queries the reports and
the budgets need. Money sums are exact (see :mod:`tierwise.ledger.db`).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
import operator
import os
import socket
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import orjson

from tierwise.ledger.db import Database, connect, to_decimal
from tierwise.ledger.faults import RowError, StorageFault
from tierwise.ledger.schema import migrate
from tierwise.types import LedgerEntry, Usage

COLUMNS: tuple[str, ...] = (
    "request_id",
    "ts",
    "source",
    "status",
    "api",
    "key_name",
    "tags",
    "requested_model",
    "tier",
    "model",
    "classifier",
    "confidence",
    "reason",
    "fallbacks",
    "error_type",
    "http_status",
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_write_5m_tokens",
    "cache_write_1h_tokens",
    "thinking_tokens",
    "cost_usd",
    "classifier_cost_usd",
    "price_version",
    "baseline_model",
    "baseline_cost_usd",
    "saved_usd",
    "decision_ms",
    "upstream_ms",
    "total_ms",
    "streaming",
    "simulated",
    "prompt",
    "reply",
    "usage_flags",
    "adapted",
    "stop_reason",
    "session_id",
    "session_rule",
    "session_shape",
    # migration 7: the decision as data (tierwise.policy.ledger_fields)
    "decision_score",
    "tier_quality",
    "decision_rule",
    "router_model",
    "route_features",
)
DECISION_COLUMNS = COLUMNS[-5:]
_USAGE = (
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_write_5m_tokens",
    "cache_write_1h_tokens",
    "thinking_tokens",
)
_MONEY = ("cost_usd", "classifier_cost_usd", "baseline_cost_usd", "saved_usd")
#: written after COLUMNS: NULL, or what the row builder had to change (migration 4)
_INSERT_COLUMNS = (*COLUMNS, "sanitized")

#: the largest token count stored as given (larger ones are clamped and the row marked): five
#: orders of magnitude above any model's context, and 9 million such rows still sum in 64 bits
MAX_TOKENS = 10**12
_INT64_MAX = 2**63 - 1
_MONEY_MIN_EXP = -40  # smaller non-zero amounts are stored as 0 (and the row marked)
_MONEY_MAX = Decimal(10**31 - 1)  # larger amounts (and infinities) are clamped to this
#: the longest text stored per column, in characters (longer text is truncated, row marked)
_LIMITS: dict[str, int] = {
    "request_id": 512,
    "source": 1024,
    "status": 1024,
    "api": 1024,
    "key_name": 1024,
    "tags": 16_384,
    "requested_model": 1024,
    "tier": 1024,
    "model": 1024,
    "classifier": 1024,
    "reason": 4096,
    "fallbacks": 4096,
    "error_type": 1024,
    "price_version": 1024,
    "baseline_model": 1024,
    "prompt": 1 << 20,
    "reply": 1 << 20,
    "usage_flags": 4096,
    "adapted": 4096,
    "stop_reason": 1024,
    "session_id": 1024,
    "session_rule": 1024,
    "session_shape": 16_384,
    "tier_quality": 4096,
    "decision_rule": 1024,
    "router_model": 1024,
    "route_features": 16_384,
}
_SHORT_TEXT = min(_LIMITS.values())  # all the text of a row together within it: no column is over

GROUPS = ("tier", "model", "key", "day", "session", "rule")
# Groupings that are a column as it is ("rule": the session rule that chose the tier).
_GROUP_COLUMNS = {
    "tier": "tier",
    "model": "model",
    "key": "key_name",
    "session": "session_id",
    "rule": "session_rule",
}


@dataclass(frozen=True, slots=True)
class Gap:
    """Entries that never reached the queue (counted, so reports can say so)."""

    ts: dt.datetime
    dropped: int
    reason: str
    host: str
    pid: int
    #: set for one entry the database refused (``dropped`` = 1); None for counts
    request_id: str | None = None


@dataclass(frozen=True, slots=True)
class Inserted:
    """What :meth:`LedgerStore.insert` wrote: rows, the (request_id, note) of sanitised ones,
    and the entries recorded in ``ledger_gaps`` instead."""

    rows: int
    sanitized: list[tuple[str, str]] = field(default_factory=list)
    rejected: list[Gap] = field(default_factory=list)


class _RollBack(Exception):
    """Ends :meth:`LedgerStore.probe`'s transaction."""


@dataclass(slots=True)
class Aggregate:
    """Sums over a set of rows (one report group). Money is exact Decimal.

    ``comparable_*`` cover rows with both a model cost and a baseline cost (savings are computed
    over them); ``cost_usd`` (model cost) and ``classifier_cost_usd`` cover every row, failures
    included.
    """

    requests: int = 0
    ok: int = 0
    errors: int = 0
    simulated: int = 0
    cost_usd: Decimal = Decimal(0)
    classifier_cost_usd: Decimal = Decimal(0)
    comparable_cost_usd: Decimal = Decimal(0)
    comparable_baseline_usd: Decimal = Decimal(0)
    unpriced: int = 0

    def add(self, other: Aggregate) -> None:
        self.requests += other.requests
        self.ok += other.ok
        self.errors += other.errors
        self.simulated += other.simulated
        self.cost_usd += other.cost_usd
        self.classifier_cost_usd += other.classifier_cost_usd
        self.comparable_cost_usd += other.comparable_cost_usd
        self.comparable_baseline_usd += other.comparable_baseline_usd
        self.unpriced += other.unpriced


@dataclass(frozen=True, slots=True)
class QualitySums:
    """Feedback on one tier's requests: ``rated`` requests, the sum of their scores, how many
    scored below the floor, and the exact total cost of the ``priced`` ones."""

    rated: int
    score_sum: float
    below_floor: int
    priced: int
    cost_usd: Decimal


VERDICTS = ("cheap", "tie", "reference")


@dataclass(frozen=True, slots=True)
class ShadowVerdict:
    """A judge's comparison of a request's answer (from ``tier``) with ``reference_tier``'s
    answer, in both orders (``cheap`` | ``tie`` | ``reference``, None when that call failed).
    Its costs are the shadow call's and the judge's, never part of the traffic's cost."""

    request_id: str
    ts: dt.datetime
    tier: str
    model: str
    reference_tier: str
    reference_model: str
    judge_model: str
    rubric: str
    verdict_cheap_first: str | None
    verdict_reference_first: str | None
    shadow_usage: Usage = field(default_factory=Usage)
    judge_usage: Usage = field(default_factory=Usage)
    shadow_cost_usd: Decimal | None = None
    judge_cost_usd: Decimal | None = None
    error: str | None = None

    def __post_init__(self) -> None:
        for name in ("verdict_cheap_first", "verdict_reference_first"):
            value = getattr(self, name)
            if value is not None and value not in VERDICTS:
                raise ValueError(f"ShadowVerdict.{name} must be one of {VERDICTS}, got {value!r}")

    @property
    def cheap_good_enough(self) -> float | None:
        """The verdicts as one label: the share of orders in which the cheaper answer was at
        least as good as the reference (1, 0.5 or 0); None without a verdict."""
        got = [v for v in (self.verdict_cheap_first, self.verdict_reference_first) if v]
        if not got:
            return None
        return sum(1.0 for v in got if v != "reference") / len(got)


@dataclass(frozen=True, slots=True)
class DecisionRow:
    """One request's routing decision as the ledger's structured columns record it."""

    request_id: str
    ts: dt.datetime
    status: str
    tier: str | None
    model: str | None
    classifier: str | None
    confidence: float | None
    usage: Usage
    cost_usd: Decimal | None
    classifier_cost_usd: Decimal
    decision_score: float | None
    tier_quality: dict[str, float] | None
    decision_rule: str | None
    router_model: str | None
    route_features: list[float] | None
    prompt: str | None
    system: str | None = None

    @property
    def total_cost_usd(self) -> Decimal | None:
        return None if self.cost_usd is None else self.cost_usd + self.classifier_cost_usd


def _finite(value: Any) -> bool:
    """No NaN or infinity anywhere in ``value`` (JSON-ready data): orjson writes those as
    ``null`` where the json module writes ``NaN``/``Infinity``."""
    kind = type(value)
    if kind is float:
        return math.isfinite(value)
    if kind is dict:
        return all(map(_finite, value.values()))
    if kind is list or kind is tuple:
        return all(map(_finite, value))
    return True


def _compact_json(value: Any, *, sort_keys: bool = False) -> str:
    """``json.dumps(value, separators=(",", ":"), sort_keys=sort_keys)``, ~10× faster: orjson
    writes the same JSON (numbers parse back to the same values) when the value is plain data
    with string keys, finite numbers and ASCII text; anything else goes through json as before
    (its \\u escapes and NaN)."""
    try:
        raw = orjson.dumps(value, option=orjson.OPT_SORT_KEYS if sort_keys else 0)
    except TypeError:
        raw = None
    if raw is not None and raw.isascii() and _finite(value):
        return raw.decode("ascii")
    return json.dumps(value, separators=(",", ":"), sort_keys=sort_keys)


def _json_text(value: Any, *, sort_keys: bool = False) -> str:
    """``json.dumps(value, ensure_ascii=False, sort_keys=sort_keys)`` (the default separators
    kept: these columns were always written so), without building an encoder for the empty
    values most rows have."""
    if not value:
        if isinstance(value, dict):
            return "{}"
        if isinstance(value, list | tuple):
            return "[]"
    return json.dumps(value, ensure_ascii=False, sort_keys=sort_keys)


def _json_or_none(value: Any) -> str | None:
    return None if value is None else _compact_json(value)


def _features_param(values: Any) -> str | None:
    """The features as a JSON array of numbers rounded to 4 decimals. Floats are written
    with ``%.4f`` in one formatting call (a correctly rounded decimal: it reads back as
    exactly ``round(v, 4)``), 3x faster than ``round`` per value."""
    if values is None:
        return None
    floats = tuple(values)
    if not floats:
        return "[]"
    if all(type(v) is float for v in floats) and math.isfinite(sum(floats)):
        return "[" + ("%.4f," * len(floats) % floats)[:-1] + "]"
    return json.dumps([round(float(v), 4) for v in floats], separators=(",", ":"))


@dataclass(frozen=True, slots=True)
class BaselineRow:
    group: str
    tier: str
    status: str
    ts: dt.datetime
    requested_model: str | None
    usage: Usage
    cost_usd: Decimal | None


class LedgerStore:
    """The ledger tables on one database connection (thread-safe)."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._insert_sql = (
            f"INSERT INTO requests ({', '.join(_INSERT_COLUMNS)}) "  # noqa: S608 - fixed names
            f"VALUES ({', '.join('?' for _ in _INSERT_COLUMNS)}) "
            "ON CONFLICT (request_id) DO NOTHING"
        )
        self._texts = operator.itemgetter(*(COLUMNS.index(c) for c in _LIMITS))
        self._limits = tuple((COLUMNS.index(c), n) for c, n in _LIMITS.items())
        self._host = _safe_text(socket.gethostname())

    @property
    def host(self) -> str:
        """This machine's name, as recorded in ``ledger_gaps``."""
        return self._host

    @classmethod
    def open(cls, url: str | None, home: Any, *, journal: str = "wal") -> LedgerStore:
        """Connect and bring the schema up to date (``journal``: SQLite's, see
        :class:`~tierwise.ledger.db.SQLiteDatabase`)."""
        db = connect(url, home, journal=journal)
        try:
            migrate(db)
        except BaseException:
            db.close()
            raise
        return cls(db)

    def close(self) -> None:
        self.db.close()

    # -- writing -------------------------------------------------------------------------
    def to_row(self, e: LedgerEntry) -> tuple[Any, ...]:
        """The row for ``e``, with the ``sanitized`` column last.

        Fast path: the entry's values as they are, when every one fits (ints within
        :data:`MAX_TOKENS`, floats finite, text valid UTF-8 without NUL and within its length
        limit, money finite and within 10**31). Otherwise a sanitised copy (clamped, replaced,
        truncated) whose ``sanitized`` column says what changed. Raises
        :class:`~tierwise.ledger.faults.RowError` only when the entry has no usable
        ``request_id`` (nothing can be recorded under it).
        """
        try:
            row = self._fast_row(e)
        except (TypeError, ValueError, AttributeError, ArithmeticError):
            row = None
        return row if row is not None else self._sanitised_row(e)

    def _fast_row(self, e: LedgerEntry) -> tuple[Any, ...] | None:
        for money in (e.cost_usd, e.classifier_cost_usd, e.baseline_cost_usd, e.saved_usd):
            # Checked before formatting: format(Decimal("1E+999999999"), "f") is a gigabyte.
            if money is not None and not (
                money.is_finite() and (not money or _MONEY_MIN_EXP <= money.adjusted() <= 30)
            ):
                return None
        row = self._row_as_given(e)
        return row if self._fits(row) else None

    def _row_as_given(self, e: LedgerEntry) -> tuple[Any, ...]:
        db = self.db
        return (
            e.request_id,
            db.ts_param(e.ts),
            e.source,
            e.status,
            e.api,
            e.key_name,
            _json_text(e.tags, sort_keys=True),
            e.requested_model,
            e.tier,
            e.model,
            e.classifier,
            e.confidence,
            e.reason,
            _json_text(list(e.fallbacks)),
            e.error_type,
            e.http_status,
            e.usage.input_tokens,
            e.usage.output_tokens,
            e.usage.cache_read_tokens,
            e.usage.cache_write_5m_tokens,
            e.usage.cache_write_1h_tokens,
            e.usage.thinking_tokens,
            db.money_param(e.cost_usd),
            db.money_param(e.classifier_cost_usd),
            e.price_version,
            e.baseline_model,
            db.money_param(e.baseline_cost_usd),
            db.money_param(e.saved_usd),
            e.decision_ms,
            e.upstream_ms,
            e.total_ms,
            int(e.streaming),
            int(e.simulated),
            e.prompt,
            e.reply,
            _json_text(list(e.usage_flags)),
            _json_text(list(e.adapted)),
            e.stop_reason,
            e.session_id,
            e.session_rule,
            None if e.session_shape is None else _compact_json(e.session_shape, sort_keys=True),
            # the decision's structured data (LedgerEntry fields named as the columns)
            e.decision_score,
            _json_or_none(e.tier_quality),
            e.decision_rule,
            e.router_model,
            _features_param(e.route_features),
            None,  # sanitized
        )

    def _fits(self, row: tuple[Any, ...]) -> bool:
        """Whether the database can hold every value of ``row`` as it is."""
        # One pass over all the text at once (a TypeError for a value that is not text).
        text = "".join(filter(None, self._texts(row)))
        if len(text) > _SHORT_TEXT and not all(
            row[i] is None or len(row[i]) <= limit for i, limit in self._limits
        ):
            return False
        if not text.isascii() and not _is_utf8(text):  # a lone surrogate
            return False
        counts, status, confidence = row[16:22], row[15], row[11]
        return bool(
            row[0]  # a request_id
            and "\x00" not in text  # PostgreSQL text cannot hold NUL
            and max(counts) <= MAX_TOKENS
            and min(counts) >= 0
            and (status is None or 0 <= status <= _INT64_MAX)
            and math.isfinite(row[28] + row[29] + row[30] + (confidence or 0.0))
        )

    def _sanitised_row(self, e: LedgerEntry) -> tuple[Any, ...]:
        notes: list[str] = []
        request_id = getattr(e, "request_id", None)
        if not isinstance(request_id, str) or not request_id:
            raise RowError(None if request_id is None else repr(request_id)[:80], "no request_id")
        rid = _clean_text(request_id, "request_id", _LIMITS["request_id"], notes)
        if rid != request_id:  # keep distinct ids distinct after cleaning
            digest = hashlib.sha256(request_id.encode("utf-8", "surrogatepass")).hexdigest()
            rid = f"{rid[: _LIMITS['request_id'] - 17]}~{digest[:16]}"

        def text(name: str) -> str | None:
            value = getattr(e, name, None)
            return None if value is None else _clean_text(value, name, _LIMITS[name], notes)

        db = self.db
        ts = getattr(e, "ts", None)
        if not isinstance(ts, dt.datetime):
            notes.append(f"ts: {type(ts).__name__} replaced by the time of writing")
            ts = dt.datetime.now(dt.UTC)
        try:
            tags = json.dumps(e.tags, sort_keys=True, ensure_ascii=False)
        except (TypeError, ValueError):
            try:
                tags = json.dumps(
                    {str(k): str(v) for k, v in dict(e.tags).items()},
                    sort_keys=True,
                    ensure_ascii=False,
                )
                notes.append("tags: values turned into text")
            except (TypeError, ValueError):
                tags = "{}"
                notes.append("tags: not a mapping, left empty")
        try:
            fallbacks = json.dumps([str(f) for f in e.fallbacks], ensure_ascii=False)
        except TypeError:
            fallbacks = "[]"
            notes.append("fallbacks: not a sequence, left empty")
        tags_text = _clean_text(tags, "tags", _LIMITS["tags"], notes)
        fallbacks_text = _clean_text(fallbacks, "fallbacks", _LIMITS["fallbacks"], notes)
        if tags_text != tags:  # a truncated JSON object would not read back
            tags_text = "{}"
        if fallbacks_text != fallbacks:
            fallbacks_text = "[]"
        usage = getattr(e, "usage", None)
        counts = [_clean_count(getattr(usage, k, 0), k, notes) for k in _USAGE]
        status = e.http_status
        if status is not None and not (isinstance(status, int) and 0 <= status <= _INT64_MAX):
            notes.append(f"http_status: {_describe(status)} dropped")
            status = None
        return (
            rid,
            db.ts_param(ts),
            text("source") or "unknown",
            text("status") or "error",
            text("api"),
            text("key_name"),
            tags_text,
            text("requested_model"),
            text("tier"),
            text("model"),
            text("classifier"),
            _clean_float(e.confidence, "confidence", None, notes),
            text("reason"),
            fallbacks_text,
            text("error_type"),
            status,
            *counts,
            db.money_param(_clean_money(e.cost_usd, "cost_usd", notes)),
            db.money_param(
                _clean_money(e.classifier_cost_usd, "classifier_cost_usd", notes) or Decimal(0)
            ),
            text("price_version"),
            text("baseline_model"),
            db.money_param(_clean_money(e.baseline_cost_usd, "baseline_cost_usd", notes)),
            db.money_param(_clean_money(e.saved_usd, "saved_usd", notes)),
            _clean_float(e.decision_ms, "decision_ms", 0.0, notes),
            _clean_float(e.upstream_ms, "upstream_ms", 0.0, notes),
            _clean_float(e.total_ms, "total_ms", 0.0, notes),
            int(bool(e.streaming)),
            int(bool(e.simulated)),
            text("prompt"),
            text("reply"),
            _json_list(e.usage_flags, "usage_flags", notes),
            _json_list(e.adapted, "adapted", notes),
            text("stop_reason"),
            text("session_id"),
            text("session_rule"),
            _json_object(e.session_shape, "session_shape", notes),
            _clean_float(e.decision_score, "decision_score", None, notes),
            _json_object(e.tier_quality, "tier_quality", notes),
            text("decision_rule"),
            text("router_model"),
            _json_features(e.route_features, notes),
            _clip("; ".join(notes) or "values checked", 2000),
        )

    def insert(self, entries: Sequence[LedgerEntry], gaps: Sequence[Gap] = ()) -> Inserted:
        """Write a batch (and gap counts) in one transaction.

        Values the database could not hold are sanitised (see :meth:`to_row`); an entry that
        cannot become a row at all is not written but recorded in ``ledger_gaps`` with its
        ``request_id``, in the same transaction. Raises what the database raises (the
        :class:`~tierwise.ledger.writer.Ledger` tells data errors from transient ones).
        """
        rows: list[tuple[Any, ...]] = []
        sanitized: list[tuple[str, str]] = []
        rejected: list[Gap] = []
        for e in entries:
            try:
                row = self.to_row(e)
            except RowError as exc:
                rejected.append(self.reject_gap(exc.request_id, f"rejected: {exc.reason}"))
                continue
            if row[-1] is not None:
                sanitized.append((row[0], row[-1]))
            rows.append(row)
        db = self.db
        with db.transaction():
            if rows:
                db.executemany(self._insert_sql, rows)
            for gap in (*gaps, *rejected):
                db.execute(
                    "INSERT INTO ledger_gaps (ts, dropped, reason, host, pid, request_id) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    (
                        db.ts_param(gap.ts),
                        int(gap.dropped),
                        _clip(_safe_text(gap.reason), 1000),
                        _clip(_safe_text(gap.host), 255),
                        int(gap.pid),
                        None
                        if gap.request_id is None
                        else _clip(_safe_text(gap.request_id), _LIMITS["request_id"]),
                    ),
                )
        return Inserted(rows=len(rows), sanitized=sanitized, rejected=rejected)

    def reject_gap(self, request_id: str | None, reason: str) -> Gap:
        """The ``ledger_gaps`` record of one entry that could not be written."""
        return Gap(dt.datetime.now(dt.UTC), 1, reason, self._host, os.getpid(), request_id)

    def probe(self) -> None:
        """Insert a valid row and roll it back: raises whatever the database raises for every
        row (a missing table, a constraint that no row can meet, a lost connection), and
        returns when a valid row can be written (so a row it refuses is that row's fault)."""
        canary = LedgerEntry(
            request_id=f"tierwise-probe-{uuid.uuid4().hex}",
            ts=dt.datetime.now(dt.UTC),
            source="probe",
            status="ok",
        )
        try:
            with self.db.transaction():
                self.db.executemany(self._insert_sql, [self.to_row(canary)])
                raise _RollBack
        except _RollBack:
            return

    def recover(self, fault: StorageFault) -> None:
        """Reconnect after ``fault`` and bring the schema up to date (a database recreated
        after its file vanished starts empty)."""
        self.db.recover(fault)
        migrate(self.db)

    # -- reading -------------------------------------------------------------------------
    def from_row(self, row: Sequence[Any]) -> LedgerEntry:
        v = dict(zip(COLUMNS, row, strict=True))
        money = {k: to_decimal(v[k]) for k in _MONEY}
        return LedgerEntry(
            request_id=v["request_id"],
            ts=self.db.ts_value(v["ts"]),
            source=v["source"],
            status=v["status"],
            api=v["api"],
            key_name=v["key_name"],
            tags=json.loads(v["tags"]),
            requested_model=v["requested_model"],
            tier=v["tier"],
            model=v["model"],
            classifier=v["classifier"],
            confidence=v["confidence"],
            reason=v["reason"],
            fallbacks=tuple(json.loads(v["fallbacks"])),
            error_type=v["error_type"],
            http_status=v["http_status"],
            usage=Usage(**{k: int(v[k]) for k in _USAGE}),
            cost_usd=money["cost_usd"],
            classifier_cost_usd=money["classifier_cost_usd"] or Decimal(0),
            price_version=v["price_version"],
            baseline_model=v["baseline_model"],
            baseline_cost_usd=money["baseline_cost_usd"],
            saved_usd=money["saved_usd"],
            decision_ms=float(v["decision_ms"]),
            upstream_ms=float(v["upstream_ms"]),
            total_ms=float(v["total_ms"]),
            streaming=bool(v["streaming"]),
            simulated=bool(v["simulated"]),
            prompt=v["prompt"],
            reply=v["reply"],
            usage_flags=tuple(json.loads(v["usage_flags"])),
            adapted=tuple(json.loads(v["adapted"])),
            stop_reason=v["stop_reason"],
            session_id=v["session_id"],
            session_rule=v["session_rule"],
            session_shape=None if v["session_shape"] is None else json.loads(v["session_shape"]),
            **self._decision_values(v),
        )

    @staticmethod
    def _decision_values(v: dict[str, Any]) -> dict[str, Any]:
        quality = json.loads(v["tier_quality"]) if v["tier_quality"] else None
        features = json.loads(v["route_features"]) if v["route_features"] else None
        return {
            "decision_score": None if v["decision_score"] is None else float(v["decision_score"]),
            "tier_quality": quality,
            "decision_rule": v["decision_rule"],
            "router_model": v["router_model"],
            "route_features": None if features is None else tuple(features),
        }

    def _window(
        self, since: dt.datetime | None, until: dt.datetime | None, column: str = "ts"
    ) -> tuple[str, list[Any]]:
        where, params = ["1=1"], []
        if since is not None:
            where.append(f"{column} >= ?")
            params.append(self.db.ts_param(since))
        if until is not None:
            where.append(f"{column} < ?")
            params.append(self.db.ts_param(until))
        return " AND ".join(where), params

    def entries(
        self,
        *,
        since: dt.datetime | None = None,
        until: dt.datetime | None = None,
        key_name: str | None = None,
        session_id: str | None = None,
        limit: int | None = None,
    ) -> list[LedgerEntry]:
        """Rows as entries, oldest first."""
        where, params = self._window(since, until)
        if key_name is not None:
            where += " AND key_name = ?"
            params.append(key_name)
        if session_id is not None:
            where += " AND session_id = ?"
            params.append(session_id)
        sql = f"SELECT {', '.join(COLUMNS)} FROM requests WHERE {where} ORDER BY ts, request_id"  # noqa: S608
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        return [self.from_row(r) for r in self.db.query(sql, params)]

    def session_rows(
        self,
        *,
        since: dt.datetime | None = None,
        until: dt.datetime | None = None,
        limit: int = 1_000_000,
    ) -> list[LedgerEntry]:
        """Answered rows that recorded a session shape, oldest first (``tierwise replay``)."""
        where, params = self._window(since, until)
        sql = (
            f"SELECT {', '.join(COLUMNS)} FROM requests "  # noqa: S608 - fixed column names
            f"WHERE {where} AND session_shape IS NOT NULL AND status = 'ok' "
            f"ORDER BY ts, request_id LIMIT {int(limit)}"
        )
        return [self.from_row(r) for r in self.db.query(sql, params)]

    def count(self) -> int:
        return int(self.db.query("SELECT COUNT(*) FROM requests")[0][0])

    def dropped(self, since: dt.datetime | None = None, until: dt.datetime | None = None) -> int:
        where, params = self._window(since, until)
        rows = self.db.query(
            f"SELECT COALESCE(SUM(dropped), 0) FROM ledger_gaps WHERE {where}",  # noqa: S608
            params,
        )
        return int(rows[0][0])

    def rejects(
        self,
        *,
        since: dt.datetime | None = None,
        until: dt.datetime | None = None,
        limit: int = 100,
    ) -> list[Gap]:
        """The entries the database refused (also counted by :meth:`dropped`), newest first."""
        where, params = self._window(since, until)
        rows = self.db.query(
            "SELECT ts, dropped, reason, host, pid, request_id FROM ledger_gaps "  # noqa: S608
            f"WHERE {where} AND request_id IS NOT NULL ORDER BY ts DESC, id DESC "
            f"LIMIT {max(0, int(limit))}",
            params,
        )
        return [
            Gap(self.db.ts_value(r[0]), int(r[1]), str(r[2]), str(r[3]), int(r[4]), str(r[5]))
            for r in rows
        ]

    def group_expr(self, by: str | None) -> str:
        if by is None:
            return "'all'"
        column = _GROUP_COLUMNS.get(by)
        if column is not None:
            return f"COALESCE({column}, '(none)')"
        if by == "day":
            return self.db.day_expr("ts")
        if by == "hour":  # the dashboard's time series (not a report grouping)
            return self.db.hour_expr("ts")
        raise ValueError(f"unknown grouping {by!r}; choose one of {', '.join(GROUPS)}")

    def aggregate(
        self,
        by: str | None,
        *,
        since: dt.datetime | None = None,
        until: dt.datetime | None = None,
        stored_baseline_where: str = "1=1",
    ) -> dict[str, Aggregate]:
        """Sums per group. Rows outside ``stored_baseline_where`` are left out of the
        comparable sums (the caller prices their baseline itself)."""
        return {
            k[0]: v
            for k, v in self._aggregate(
                [self.group_expr(by)], since, until, stored_baseline_where
            ).items()
        }

    def aggregate_pairs(
        self,
        by: str,
        then_by: str,
        *,
        since: dt.datetime | None = None,
        until: dt.datetime | None = None,
    ) -> dict[tuple[str, str], Aggregate]:
        """Sums per pair of groups (``("hour", "tier")``: each hour's sums per tier), with the
        stored baseline. The same sums as :meth:`aggregate`, split once more."""
        groups = [self.group_expr(by), self.group_expr(then_by)]
        return {(k[0], k[1]): v for k, v in self._aggregate(groups, since, until, "1=1").items()}

    def _aggregate(
        self,
        groups: list[str],
        since: dt.datetime | None,
        until: dt.datetime | None,
        stored_baseline_where: str,
    ) -> dict[tuple[str, ...], Aggregate]:
        s = self.db.money_sum
        n = len(groups)
        group = ", ".join(f"{g} AS grp{i}" for i, g in enumerate(groups))
        positions = ", ".join(str(i + 1) for i in range(n))
        comparable = (
            f"cost_usd IS NOT NULL AND baseline_cost_usd IS NOT NULL AND ({stored_baseline_where})"
        )
        where, params = self._window(since, until)
        # Every interpolated fragment is built here from fixed text; values go in params.
        sql = f"""
            SELECT {group},
                   COUNT(*),
                   SUM(CASE WHEN status = 'ok' THEN 1 ELSE 0 END),
                   SUM(CASE WHEN status = 'ok' THEN 0 ELSE 1 END),
                   SUM(simulated),
                   {s}(cost_usd),
                   {s}(classifier_cost_usd),
                   {s}(CASE WHEN {comparable} THEN cost_usd END),
                   {s}(CASE WHEN {comparable} THEN baseline_cost_usd END),
                   SUM(CASE WHEN status = 'ok' AND ({stored_baseline_where})
                            AND NOT ({comparable}) THEN 1 ELSE 0 END)
            FROM requests WHERE {where}
            GROUP BY {positions}
            ORDER BY {positions}
        """  # noqa: S608
        out: dict[tuple[str, ...], Aggregate] = {}
        for full in self.db.query(sql, params):
            key, row = tuple(str(k) for k in full[:n]), full[n - 1 :]
            zero = Decimal(0)
            out[key] = Aggregate(
                requests=int(row[1]),
                ok=int(row[2] or 0),
                errors=int(row[3] or 0),
                simulated=int(row[4] or 0),
                cost_usd=to_decimal(row[5]) or zero,
                classifier_cost_usd=to_decimal(row[6]) or zero,
                comparable_cost_usd=to_decimal(row[7]) or zero,
                comparable_baseline_usd=to_decimal(row[8]) or zero,
                unpriced=int(row[9] or 0),
            )
        return out

    def rows_for_baseline(
        self,
        by: str | None,
        where_sql: str,
        *,
        since: dt.datetime | None = None,
        until: dt.datetime | None = None,
    ) -> Iterable[BaselineRow]:
        """The rows whose baseline the report prices itself (``where_sql``)."""
        window, params = self._window(since, until)
        sql = (
            f"SELECT {self.group_expr(by)}, {self.group_expr('tier')}, "  # noqa: S608
            f"status, ts, requested_model, {', '.join(_USAGE)}, cost_usd "
            f"FROM requests WHERE {window} AND ({where_sql})"
        )
        for r in self.db.query(sql, params):
            yield BaselineRow(
                group=str(r[0]),
                tier=str(r[1]),
                status=str(r[2]),
                ts=self.db.ts_value(r[3]),
                requested_model=r[4],
                usage=Usage(**{k: int(x) for k, x in zip(_USAGE, r[5:11], strict=True)}),
                cost_usd=to_decimal(r[11]),
            )

    def spent(self, key_name: str, since: dt.datetime | None) -> Decimal:
        """What one key has spent since ``since`` (model + classifier cost; failures count
        what they cost)."""
        where, params = self._window(since, None)
        s = self.db.money_sum
        rows = self.db.query(
            f"SELECT {s}(cost_usd), {s}(classifier_cost_usd) FROM requests "  # noqa: S608
            f"WHERE {where} AND key_name = ?",
            [*params, key_name],
        )
        cost, classifier = rows[0]
        return (to_decimal(cost) or Decimal(0)) + (to_decimal(classifier) or Decimal(0))

    # -- the dashboard and the quality loop -----------------------------------------------
    def get(self, request_id: str) -> LedgerEntry | None:
        """One request's row, or None when it is not (yet) in the database."""
        rows = self.db.query(
            f"SELECT {', '.join(COLUMNS)} FROM requests WHERE request_id = ?",  # noqa: S608
            (request_id,),
        )
        return self.from_row(rows[0]) if rows else None

    def recent(
        self,
        limit: int,
        *,
        since: dt.datetime | None = None,
        until: dt.datetime | None = None,
    ) -> list[LedgerEntry]:
        """The newest rows first, at most ``limit`` of them (uses the ``ts`` index)."""
        where, params = self._window(since, until)
        sql = (
            f"SELECT {', '.join(COLUMNS)} FROM requests WHERE {where} "  # noqa: S608
            f"ORDER BY ts DESC, request_id DESC LIMIT {max(0, int(limit))}"
        )
        return [self.from_row(r) for r in self.db.query(sql, params)]

    def latency_percentiles(
        self,
        column: str,
        by: str | None = None,
        *,
        since: dt.datetime | None = None,
        until: dt.datetime | None = None,
        percentiles: Sequence[int] = (50, 95, 99),
    ) -> dict[str, dict[str, float | int]]:
        """Nearest-rank percentiles of a latency column (``decision_ms``, ``upstream_ms``,
        ``total_ms``) per group, over rows where it is positive: ``{group: {"n": count,
        "p50": ms, …}}``. One query, the same on SQLite and PostgreSQL (window functions)."""
        if column not in ("decision_ms", "upstream_ms", "total_ms"):
            raise ValueError(f"not a latency column: {column!r}")
        ranks = [int(p) for p in percentiles]
        if any(not 0 < p <= 100 for p in ranks):
            raise ValueError(f"percentiles must be in (0, 100], got {ranks}")
        where, params = self._window(since, until)
        group = self.group_expr(by)
        partition = "" if by is None else f"PARTITION BY {group} "
        # nearest rank: the ceil(p·n/100)-th smallest value, in integer arithmetic
        wanted = " OR ".join(f"rn = ({p} * n + 99) / 100" for p in ranks)
        sql = f"""
            SELECT grp, n, rn, v FROM (
                SELECT {group} AS grp, {column} AS v,
                       ROW_NUMBER() OVER ({partition}ORDER BY {column}) AS rn,
                       COUNT(*) OVER ({partition.strip()}) AS n
                FROM requests WHERE {where} AND {column} > 0
            ) ranked
            WHERE {wanted}
        """  # noqa: S608 - fixed fragments; values are parameters
        out: dict[str, dict[str, float | int]] = {}
        for grp, n, rn, value in self.db.query(sql, params):
            cell = out.setdefault(str(grp), {"n": int(n)})
            for p in ranks:
                if int(rn) == (p * int(n) + 99) // 100:
                    cell[f"p{p}"] = float(value)
        return out

    def add_feedback(
        self,
        request_id: str,
        score: float,
        *,
        comment: str | None = None,
        source: str = "api",
        key_name: str | None = None,
        ts: dt.datetime | None = None,
    ) -> None:
        """Store a judgement of one request (0–1); a later one for the same request replaces
        it. The caller validates (see :mod:`tierwise.quality`)."""
        when = ts or dt.datetime.now(dt.UTC)
        with self.db.transaction():
            self.db.execute(
                "INSERT INTO feedback (request_id, ts, score, comment, source, key_name) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (request_id) DO UPDATE SET "
                "ts = excluded.ts, score = excluded.score, comment = excluded.comment, "
                "source = excluded.source, key_name = excluded.key_name",
                (request_id, self.db.ts_param(when), float(score), comment, source, key_name),
            )

    def feedback_scores(
        self,
        *,
        since: dt.datetime | None = None,
        until: dt.datetime | None = None,
        request_ids: Sequence[str] | None = None,
    ) -> dict[str, float]:
        """``{request_id: score}`` for requests made in the window (or the ids given)."""
        if request_ids is not None:
            if not request_ids:
                return {}
            marks = ", ".join("?" for _ in request_ids)
            rows = self.db.query(
                f"SELECT request_id, score FROM feedback WHERE request_id IN ({marks})",  # noqa: S608
                list(request_ids),
            )
        else:
            where, params = self._window(since, until, "r.ts")
            rows = self.db.query(
                "SELECT f.request_id, f.score FROM feedback f "  # noqa: S608
                f"JOIN requests r ON r.request_id = f.request_id WHERE {where}",
                params,
            )
        return {str(r[0]): float(r[1]) for r in rows}

    def quality_by_tier(
        self,
        *,
        since: dt.datetime | None = None,
        until: dt.datetime | None = None,
        floor: float = 0.7,
    ) -> dict[str, QualitySums]:
        """Per tier, over rated requests made in the window: how many, the sum of scores,
        how many below ``floor``, and the exact cost of the priced ones (model + classifier,
        as the lesson's ``result["cost"]``)."""
        s = self.db.money_sum
        where, params = self._window(since, until, "r.ts")
        sql = f"""
            SELECT COALESCE(r.tier, '(none)'), COUNT(*), SUM(f.score),
                   SUM(CASE WHEN f.score < ? THEN 1 ELSE 0 END),
                   COUNT(r.cost_usd), {s}(r.cost_usd),
                   {s}(CASE WHEN r.cost_usd IS NOT NULL THEN r.classifier_cost_usd END)
            FROM feedback f JOIN requests r ON r.request_id = f.request_id
            WHERE {where}
            GROUP BY 1 ORDER BY 1
        """  # noqa: S608
        out: dict[str, QualitySums] = {}
        for tier, n, total, below, priced, cost, classifier in self.db.query(
            sql, [float(floor), *params]
        ):
            out[str(tier)] = QualitySums(
                rated=int(n),
                score_sum=float(total or 0.0),
                below_floor=int(below or 0),
                priced=int(priced or 0),
                cost_usd=(to_decimal(cost) or Decimal(0)) + (to_decimal(classifier) or Decimal(0)),
            )
        return out

    # -- routing quality: structured decisions and shadow verdicts (migration 7) ------------
    def decision_rows(
        self,
        *,
        since: dt.datetime | None = None,
        until: dt.datetime | None = None,
    ) -> list[DecisionRow]:
        """Answered and failed requests with their structured decision columns, oldest first."""
        where, params = self._window(since, until)
        names = (
            "request_id",
            "ts",
            "status",
            "tier",
            "model",
            "classifier",
            "confidence",
            *_USAGE,
            "cost_usd",
            "classifier_cost_usd",
            *DECISION_COLUMNS,
            "prompt",
        )
        sql = (
            f"SELECT {', '.join(names)} FROM requests WHERE {where} "  # noqa: S608
            "ORDER BY ts, request_id"
        )
        out: list[DecisionRow] = []
        for row in self.db.query(sql, params):
            v = dict(zip(names, row, strict=True))
            d = self._decision_values(v)
            out.append(
                DecisionRow(
                    request_id=v["request_id"],
                    ts=self.db.ts_value(v["ts"]),
                    status=v["status"],
                    tier=v["tier"],
                    model=v["model"],
                    classifier=v["classifier"],
                    confidence=None if v["confidence"] is None else float(v["confidence"]),
                    usage=Usage(**{k: int(v[k]) for k in _USAGE}),
                    cost_usd=to_decimal(v["cost_usd"]),
                    classifier_cost_usd=to_decimal(v["classifier_cost_usd"]) or Decimal(0),
                    decision_score=d["decision_score"],
                    tier_quality=d["tier_quality"],
                    decision_rule=d["decision_rule"],
                    router_model=d["router_model"],
                    route_features=None
                    if d["route_features"] is None
                    else list(d["route_features"]),
                    prompt=v["prompt"],
                )
            )
        return out

    def add_verdict(self, verdict: ShadowVerdict) -> None:
        """Store a shadow comparison (a later one for the same request replaces it)."""
        db = self.db
        names = (
            "request_id, ts, tier, model, reference_tier, reference_model, judge_model, rubric, "
            "verdict_cheap_first, verdict_reference_first, shadow_input_tokens, "
            "shadow_output_tokens, judge_input_tokens, judge_output_tokens, shadow_cost_usd, "
            "judge_cost_usd, error"
        )
        updates = ", ".join(f"{n.strip()} = excluded.{n.strip()}" for n in names.split(",")[1:])
        with db.transaction():
            db.execute(
                f"INSERT INTO shadow_verdicts ({names}) VALUES "  # noqa: S608 - fixed names
                f"({', '.join('?' for _ in names.split(','))}) "
                f"ON CONFLICT (request_id) DO UPDATE SET {updates}",
                (
                    verdict.request_id,
                    db.ts_param(verdict.ts),
                    verdict.tier,
                    verdict.model,
                    verdict.reference_tier,
                    verdict.reference_model,
                    verdict.judge_model,
                    verdict.rubric,
                    verdict.verdict_cheap_first,
                    verdict.verdict_reference_first,
                    verdict.shadow_usage.total_input_tokens,
                    verdict.shadow_usage.output_tokens,
                    verdict.judge_usage.total_input_tokens,
                    verdict.judge_usage.output_tokens,
                    db.money_param(verdict.shadow_cost_usd),
                    db.money_param(verdict.judge_cost_usd),
                    verdict.error,
                ),
            )

    def verdicts(
        self,
        *,
        since: dt.datetime | None = None,
        until: dt.datetime | None = None,
    ) -> dict[str, ShadowVerdict]:
        """``{request_id: verdict}`` for shadow comparisons made in the window."""
        where, params = self._window(since, until)
        rows = self.db.query(
            "SELECT request_id, ts, tier, model, reference_tier, reference_model, judge_model, "  # noqa: S608
            "rubric, verdict_cheap_first, verdict_reference_first, shadow_input_tokens, "
            "shadow_output_tokens, judge_input_tokens, judge_output_tokens, shadow_cost_usd, "
            f"judge_cost_usd, error FROM shadow_verdicts WHERE {where} ORDER BY ts, request_id",
            params,
        )
        out: dict[str, ShadowVerdict] = {}
        for r in rows:
            out[str(r[0])] = ShadowVerdict(
                request_id=str(r[0]),
                ts=self.db.ts_value(r[1]),
                tier=r[2],
                model=r[3],
                reference_tier=r[4],
                reference_model=r[5],
                judge_model=r[6],
                rubric=r[7],
                verdict_cheap_first=r[8],
                verdict_reference_first=r[9],
                shadow_usage=Usage(input_tokens=int(r[10]), output_tokens=int(r[11])),
                judge_usage=Usage(input_tokens=int(r[12]), output_tokens=int(r[13])),
                shadow_cost_usd=to_decimal(r[14]),
                judge_cost_usd=to_decimal(r[15]),
                error=r[16],
            )
        return out


# -- the row builder's checks (the slow path: only for entries the fast path refused) ------
def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit]


def _safe_text(value: str) -> str:
    """``value`` as text both databases store: valid UTF-8, no NUL."""
    if not value.isascii():
        value = value.encode("utf-8", "replace").decode("utf-8")
    return value.replace("\x00", "\ufffd")


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _describe(value: Any) -> str:
    """A short, safe description of a bad value for the ``sanitized`` note."""
    if isinstance(value, int) and not isinstance(value, bool):
        if abs(value) < 10**18:
            return str(value)
        bits = abs(value).bit_length()
        return f"{'-' if value < 0 else ''}~10**{int(bits * math.log10(2))}"
    if isinstance(value, float | Decimal):
        return _clip(str(value), 40)
    return type(value).__name__


def _clean_text(value: Any, name: str, limit: int, notes: list[str]) -> str:
    if isinstance(value, str):
        text = value
    else:
        notes.append(f"{name}: {type(value).__name__} turned into text")
        text = _describe(value) if isinstance(value, int | float | Decimal) else repr(value)
    if not text.isascii() and not _is_utf8(text):
        text = text.encode("utf-8", "replace").decode("utf-8")
        notes.append(f"{name}: invalid UTF-8 (lone surrogates) replaced")
    if "\x00" in text:
        text = text.replace("\x00", "\ufffd")
        notes.append(f"{name}: NUL characters replaced")
    if len(text) > limit:
        notes.append(f"{name}: truncated from {len(text)} to {limit} characters")
        text = text[:limit]
    return text


def _clean_count(value: Any, name: str, notes: list[str]) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        notes.append(f"{name}: {_describe(value)} is not a count, stored as 0")
        return 0
    if value < 0:
        notes.append(f"{name}: {_describe(value)} stored as 0")
        return 0
    if value > MAX_TOKENS:
        notes.append(f"{name}: {_describe(value)} clamped to {MAX_TOKENS}")
        return MAX_TOKENS
    return value


def _clean_float(value: Any, name: str, default: float | None, notes: list[str]) -> float | None:
    if value is None:
        if default is not None:
            notes.append(f"{name}: missing, stored as {default}")
        return default
    if isinstance(value, bool) or not isinstance(value, int | float):
        notes.append(f"{name}: {_describe(value)} is not a number, stored as {default}")
        return default
    try:
        number = float(value)
    except OverflowError:
        number = math.inf
    if not math.isfinite(number):
        notes.append(f"{name}: {_describe(value)} stored as {default}")
        return default
    return number


def _clean_money(value: Any, name: str, notes: list[str]) -> Decimal | None:
    if value is None:
        return None
    if isinstance(value, int | str) and not isinstance(value, bool):
        kind = type(value).__name__
        try:
            value = Decimal(value)
            notes.append(f"{name}: {kind} read as a Decimal")
        except ArithmeticError:
            value = None
    money: Decimal | None = value if isinstance(value, Decimal) else None
    if money is None or money.is_nan():
        notes.append(f"{name}: {_describe(value)} stored as unpriced")
    elif money.is_infinite() or money.adjusted() > 30:
        notes.append(f"{name}: {_describe(money)} clamped to {'-' if money < 0 else ''}10**31-1")
        money = _MONEY_MAX.copy_sign(money)
    elif money and money.adjusted() < _MONEY_MIN_EXP:
        notes.append(f"{name}: {_describe(money)} stored as 0")
        money = Decimal(0)
    return money


def _json_list(values: Any, name: str, notes: list[str]) -> str:
    """A JSON list of strings for a sanitised row ("[]" when it cannot be stored whole)."""
    try:
        text = json.dumps([str(v) for v in values], ensure_ascii=False)
    except TypeError:
        notes.append(f"{name}: not a sequence, left empty")
        return "[]"
    cleaned = _clean_text(text, name, _LIMITS[name], notes)
    return cleaned if cleaned == text else "[]"


def _json_object(value: Any, name: str, notes: list[str]) -> str | None:
    """A JSON object for a sanitised row (None when it cannot be stored whole)."""
    if value is None:
        return None
    try:
        text = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    except (TypeError, ValueError):
        notes.append(f"{name}: not JSON, dropped")
        return None
    cleaned = _clean_text(text, name, _LIMITS[name], notes)
    return cleaned if cleaned == text else None


def _json_features(values: Any, notes: list[str]) -> str | None:
    """The route features as JSON for a sanitised row (None when they are not numbers)."""
    if values is None:
        return None
    try:
        return _features_param(values)
    except (TypeError, ValueError, OverflowError):
        notes.append("route_features: not numbers, dropped")
        return None

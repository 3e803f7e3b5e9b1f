"""Reading and writing ledger rows on a :class:`~tierwise.ledger.db.Database`.

:class:`LedgerStore` turns :class:`~tierwise.types.LedgerEntry` objects into rows (and back),
inserts batches idempotently (``ON CONFLICT (request_id) DO NOTHING``: a batch retried after a
lost acknowledgement is not recorded twice), and answers the aggregate queries the reports and
the budgets need. Money sums are exact (see :mod:`tierwise.ledger.db`).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from tierwise.ledger.db import Database, connect, to_decimal
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
)
_USAGE = (
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_write_5m_tokens",
    "cache_write_1h_tokens",
    "thinking_tokens",
)
_MONEY = ("cost_usd", "classifier_cost_usd", "baseline_cost_usd", "saved_usd")

GROUPS = ("tier", "model", "key", "day")


@dataclass(frozen=True, slots=True)
class Gap:
    """Entries that never reached the queue (counted, so reports can say so)."""

    ts: dt.datetime
    dropped: int
    reason: str
    host: str
    pid: int


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
            f"INSERT INTO requests ({', '.join(COLUMNS)}) "  # noqa: S608 - fixed column names
            f"VALUES ({', '.join('?' for _ in COLUMNS)}) "
            "ON CONFLICT (request_id) DO NOTHING"
        )

    @classmethod
    def open(cls, url: str | None, home: Any) -> LedgerStore:
        """Connect and bring the schema up to date."""
        db = connect(url, home)
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
        db = self.db
        return (
            e.request_id,
            db.ts_param(e.ts),
            e.source,
            e.status,
            e.api,
            e.key_name,
            json.dumps(e.tags, sort_keys=True, ensure_ascii=False),
            e.requested_model,
            e.tier,
            e.model,
            e.classifier,
            e.confidence,
            e.reason,
            json.dumps(list(e.fallbacks), ensure_ascii=False),
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
            json.dumps(list(e.usage_flags), ensure_ascii=False),
            json.dumps(list(e.adapted), ensure_ascii=False),
            e.stop_reason,
            e.session_id,
            e.session_rule,
            None
            if e.session_shape is None
            else json.dumps(e.session_shape, sort_keys=True, separators=(",", ":")),
        )

    def insert(self, entries: Sequence[LedgerEntry], gaps: Sequence[Gap] = ()) -> None:
        """Write a batch (and gap counts) in one transaction."""
        rows = [self.to_row(e) for e in entries]
        with self.db.transaction():
            if rows:
                self.db.executemany(self._insert_sql, rows)
            for gap in gaps:
                self.db.execute(
                    "INSERT INTO ledger_gaps (ts, dropped, reason, host, pid) "
                    "VALUES (?, ?, ?, ?, ?)",
                    (self.db.ts_param(gap.ts), gap.dropped, gap.reason, gap.host, gap.pid),
                )

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
        )

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
        limit: int | None = None,
    ) -> list[LedgerEntry]:
        """Rows as entries, oldest first."""
        where, params = self._window(since, until)
        if key_name is not None:
            where += " AND key_name = ?"
            params.append(key_name)
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

    def group_expr(self, by: str | None) -> str:
        if by is None:
            return "'all'"
        if by == "tier":
            return "COALESCE(tier, '(none)')"
        if by == "model":
            return "COALESCE(model, '(none)')"
        if by == "key":
            return "COALESCE(key_name, '(none)')"
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

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
        s = self.db.money_sum
        group = self.group_expr(by)
        comparable = (
            f"cost_usd IS NOT NULL AND baseline_cost_usd IS NOT NULL AND ({stored_baseline_where})"
        )
        where, params = self._window(since, until)
        # Every interpolated fragment is built here from fixed text; values go in params.
        sql = f"""
            SELECT {group} AS grp,
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
            GROUP BY 1
            ORDER BY 1
        """  # noqa: S608
        out: dict[str, Aggregate] = {}
        for row in self.db.query(sql, params):
            zero = Decimal(0)
            out[str(row[0])] = Aggregate(
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

"""The ledger's schema as an ordered list of migrations, recorded in ``tierwise_migrations``.

:func:`migrate` runs on every start. It takes the database's migration lock (SQLite: the write
lock of ``BEGIN IMMEDIATE``; PostgreSQL: a transaction-scoped advisory lock), reads which
versions are applied and applies the others in order, each recorded in the same transaction. Two
processes starting at once therefore apply each migration exactly once; the second waits, then
finds nothing to do. Never edit a released migration: append a new one.

``{money}``, ``{ts}``, ``{float}`` and ``{id_pk}`` are replaced with the dialect's column types
(:attr:`tierwise.ledger.db.Database.types`): money is TEXT in SQLite and NUMERIC in PostgreSQL,
never a float.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from tierwise.ledger.db import Database


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    statements: tuple[str, ...]


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "requests and ledger gaps",
        (
            """CREATE TABLE requests (
                request_id TEXT PRIMARY KEY,
                ts {ts} NOT NULL,
                source TEXT NOT NULL,
                status TEXT NOT NULL,
                api TEXT,
                key_name TEXT,
                tags TEXT NOT NULL DEFAULT '{{}}',
                requested_model TEXT,
                tier TEXT,
                model TEXT,
                classifier TEXT,
                confidence {float},
                reason TEXT,
                fallbacks TEXT NOT NULL DEFAULT '[]',
                error_type TEXT,
                http_status INTEGER,
                input_tokens BIGINT NOT NULL DEFAULT 0,
                output_tokens BIGINT NOT NULL DEFAULT 0,
                cache_read_tokens BIGINT NOT NULL DEFAULT 0,
                cache_write_5m_tokens BIGINT NOT NULL DEFAULT 0,
                cache_write_1h_tokens BIGINT NOT NULL DEFAULT 0,
                thinking_tokens BIGINT NOT NULL DEFAULT 0,
                cost_usd {money},
                classifier_cost_usd {money} NOT NULL,
                price_version TEXT,
                baseline_model TEXT,
                baseline_cost_usd {money},
                saved_usd {money},
                decision_ms {float} NOT NULL DEFAULT 0,
                upstream_ms {float} NOT NULL DEFAULT 0,
                total_ms {float} NOT NULL DEFAULT 0,
                streaming INTEGER NOT NULL DEFAULT 0,
                simulated INTEGER NOT NULL DEFAULT 0,
                prompt TEXT,
                reply TEXT
            )""",
            "CREATE INDEX requests_ts ON requests (ts)",
            "CREATE INDEX requests_key_ts ON requests (key_name, ts)",
            # Entries the write-behind queue could not take (queue full, ledger closed): the
            # count is recorded so reports can say how many requests are missing.
            """CREATE TABLE ledger_gaps (
                id {id_pk},
                ts {ts} NOT NULL,
                dropped INTEGER NOT NULL,
                reason TEXT NOT NULL,
                host TEXT NOT NULL,
                pid INTEGER NOT NULL
            )""",
            "CREATE INDEX ledger_gaps_ts ON ledger_gaps (ts)",
        ),
    ),
    Migration(
        2,
        "gateway keys",
        (
            """CREATE TABLE api_keys (
                id {id_pk},
                name TEXT NOT NULL,
                key_hash TEXT NOT NULL UNIQUE,
                key_prefix TEXT NOT NULL,
                budget_usd {money},
                period TEXT NOT NULL DEFAULT 'month',
                created_at {ts} NOT NULL,
                revoked_at {ts}
            )""",
            # A name belongs to one live key at a time; a revoked name can be reused.
            "CREATE UNIQUE INDEX api_keys_live_name ON api_keys (name) WHERE revoked_at IS NULL",
        ),
    ),
    Migration(
        3,
        "feedback",
        (
            # Users' judgement of one answer (0 = useless … 1 = perfect), the latest one per
            # request. No foreign key: the library's feedback can arrive while the request's
            # own row is still in the write-behind queue; reports join on request_id.
            """CREATE TABLE feedback (
                request_id TEXT PRIMARY KEY,
                ts {ts} NOT NULL,
                score {float} NOT NULL,
                comment TEXT,
                source TEXT NOT NULL,
                key_name TEXT
            )""",
            "CREATE INDEX feedback_ts ON feedback (ts)",
        ),
    ),
    Migration(
        4,
        "rejected and sanitised ledger rows",
        (
            # An entry the database refused (its data, not the database's state) is recorded
            # as a gap of 1 with its request id: in ledger_gaps rather than a table of its own
            # so that every reader of the gaps (reports' dropped_requests, "rows + gaps ==
            # requests" checks) counts it without a change. NULL for counted drops.
            "ALTER TABLE ledger_gaps ADD COLUMN request_id TEXT",
            # NULL, or what the row builder changed to make the row storable (a clamped token
            # count, replaced invalid UTF-8, a truncated text...).
            "ALTER TABLE requests ADD COLUMN sanitized TEXT",
        ),
    ),
    Migration(
        5,
        "gateway key roles",
        (
            # 'user': its own requests only (dashboard); 'admin': everything, and /metrics.
            # Keys made before this migration are users: an admin is made on purpose.
            "ALTER TABLE api_keys ADD COLUMN role TEXT NOT NULL DEFAULT 'user'",
        ),
    ),
    Migration(
        6,
        "request lifecycle: usage checks, adaptation, stop reason",
        (
            # Why the recorded usage differs from what the upstream reported (clamped to what
            # the request could consume), as a JSON list of short sentences.
            "ALTER TABLE requests ADD COLUMN usage_flags TEXT NOT NULL DEFAULT '[]'",
            # What tierwise changed in the request body for the model that answered.
            "ALTER TABLE requests ADD COLUMN adapted TEXT NOT NULL DEFAULT '[]'",
            "ALTER TABLE requests ADD COLUMN stop_reason TEXT",
        ),
    ),
    Migration(
        7,
        "routing decision data and shadow judge verdicts",
        (
            # The decision as data (tierwise.policy.ledger_fields), so calibration and
            # training never parse the reason text: the classifier's score, each tier's
            # predicted quality (JSON object), the policy rule that decided, the model that
            # computed them, and its compact learning features (JSON list; never the text).
            "ALTER TABLE requests ADD COLUMN decision_score {float}",
            "ALTER TABLE requests ADD COLUMN tier_quality TEXT",
            "ALTER TABLE requests ADD COLUMN decision_rule TEXT",
            "ALTER TABLE requests ADD COLUMN router_model TEXT",
            "ALTER TABLE requests ADD COLUMN route_features TEXT",
            # A judge's comparison of the answer a request got (from a cheaper tier) with a
            # reference tier's answer to the same request, asked in both orders to cancel
            # position bias: 'cheap' | 'tie' | 'reference' per order (NULL when that call
            # failed). The shadow call's and the judge's cost are kept here, apart from the
            # traffic's cost in `requests`.
            """CREATE TABLE shadow_verdicts (
                request_id TEXT PRIMARY KEY,
                ts {ts} NOT NULL,
                tier TEXT NOT NULL,
                model TEXT NOT NULL,
                reference_tier TEXT NOT NULL,
                reference_model TEXT NOT NULL,
                judge_model TEXT NOT NULL,
                rubric TEXT NOT NULL,
                verdict_cheap_first TEXT,
                verdict_reference_first TEXT,
                shadow_input_tokens BIGINT NOT NULL DEFAULT 0,
                shadow_output_tokens BIGINT NOT NULL DEFAULT 0,
                judge_input_tokens BIGINT NOT NULL DEFAULT 0,
                judge_output_tokens BIGINT NOT NULL DEFAULT 0,
                shadow_cost_usd {money},
                judge_cost_usd {money},
                error TEXT
            )""",
            "CREATE INDEX shadow_verdicts_ts ON shadow_verdicts (ts)",
        ),
    ),
    Migration(
        8,
        "sessions",
        (
            # Session routing: the session id, the rule that chose the tier, and the request's
            # shape as JSON without any text (tierwise.gateway.shape.RequestShape.record), which
            # `tierwise replay --from-ledger` reads back.
            "ALTER TABLE requests ADD COLUMN session_id TEXT",
            "ALTER TABLE requests ADD COLUMN session_rule TEXT",
            "ALTER TABLE requests ADD COLUMN session_shape TEXT",
            "CREATE INDEX requests_session_ts ON requests (session_id, ts)",
        ),
    ),
)


def migrate(db: Database, migrations: tuple[Migration, ...] = MIGRATIONS) -> list[int]:
    """Apply the migrations the database lacks; return the versions applied now."""
    applied: list[int] = []
    with db.migration_lock():
        db.execute(
            "CREATE TABLE IF NOT EXISTS tierwise_migrations ("
            "version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)"
        )
        done = {int(row[0]) for row in db.query("SELECT version FROM tierwise_migrations")}
        for migration in sorted(migrations, key=lambda m: m.version):
            if migration.version in done:
                continue
            for statement in migration.statements:
                db.execute(statement.format(**db.types))
            db.execute(
                "INSERT INTO tierwise_migrations (version, name, applied_at) VALUES (?, ?, ?)",
                (migration.version, migration.name, dt.datetime.now(dt.UTC).isoformat()),
            )
            applied.append(migration.version)
    return applied


def applied_versions(db: Database) -> list[int]:
    return [int(r[0]) for r in db.query("SELECT version FROM tierwise_migrations ORDER BY 1")]

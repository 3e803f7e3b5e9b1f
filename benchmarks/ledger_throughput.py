"""Ledger write throughput: how many rows per second the batch writer stores.

    .venv/bin/python benchmarks/ledger_throughput.py                       # SQLite in a temp dir
    .venv/bin/python benchmarks/ledger_throughput.py --url postgresql://postgres@127.0.0.1/test

Records N complete entries as fast as one thread can (the queue is sized to hold them all, so
nothing is dropped), then closes the ledger, which drains it. Prints the cost of ``record()``
per call and the rows/s from the first record to the last commit. On PostgreSQL the rows go
to a throwaway schema that is dropped afterwards.
"""

from __future__ import annotations

import argparse
import datetime as dt
import tempfile
import time
import uuid
from decimal import Decimal
from pathlib import Path

from tierwise.config import load, revalidate
from tierwise.ledger import open_ledger
from tierwise.types import LedgerEntry, Usage


def entries(n: int) -> list[LedgerEntry]:
    now = dt.datetime.now(dt.UTC)
    return [
        LedgerEntry(
            request_id=f"tw_{uuid.uuid4().hex}",
            ts=now,
            source="gateway",
            status="ok",
            api="messages",
            key_name="bench",
            tags={"team": "bench"},
            requested_model="auto",
            tier="haiku",
            model="claude-haiku-4-5",
            classifier="rules",
            confidence=0.9,
            reason="simple formatting",
            usage=Usage(input_tokens=1200, output_tokens=300, cache_read_tokens=4000),
            cost_usd=Decimal("0.0031"),
            classifier_cost_usd=Decimal(0),
            price_version="claude-haiku-4-5@release",
            baseline_model="claude-opus-4-6",
            baseline_cost_usd=Decimal("0.0155"),
            saved_usd=Decimal("0.0124"),
            decision_ms=0.05,
            upstream_ms=800.0,
            total_ms=801.0,
        )
        for _ in range(n)
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=None, help="ledger URL (default: SQLite in a temp dir)")
    parser.add_argument("-n", type=int, default=50_000)
    parser.add_argument("--batch-size", type=int, default=500)
    args = parser.parse_args()

    schema = None
    url = args.url
    if url and url.startswith("postgres"):
        import psycopg

        schema = f"tw_bench_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f"CREATE SCHEMA {schema}")
        url = f"{url}{'&' if '?' in url else '?'}options=-csearch_path%3D{schema}"
    try:
        with tempfile.TemporaryDirectory() as home:
            env = {"TIERWISE_HOME": home, **({"TIERWISE_DB": url} if url else {})}
            settings = load(environ=env)
            cfg = settings.ledger.model_copy(
                update={"queue_size": args.n + 1, "batch_size": args.batch_size}
            )
            ledger = open_ledger(revalidate(settings, ledger=cfg))
            batch = entries(args.n)
            start = time.perf_counter()
            for e in batch:
                ledger.record(e)
            recorded = time.perf_counter()
            ledger.close()
            done = time.perf_counter()
            where = "sqlite " + str(Path(home) / "tierwise.db") if not url else "postgresql"
            print(f"{where}: {args.n} rows, batch {args.batch_size}")
            print(f"  record(): {(recorded - start) / args.n * 1e6:.1f} µs per call")
            print(f"  written:  {args.n / (done - start):,.0f} rows/s  (dropped {ledger.dropped})")
    finally:
        if schema is not None:
            import psycopg

            with psycopg.connect(args.url, autocommit=True) as conn:
                conn.execute(f"DROP SCHEMA {schema} CASCADE")


if __name__ == "__main__":
    main()

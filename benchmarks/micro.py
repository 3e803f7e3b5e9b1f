"""In-process benchmarks, one per subcommand, each printing one JSON object on stdout.

    python benchmarks/micro.py import
    python benchmarks/micro.py classifier --prompts ../shared/data/prompts/sharegpt_first_turns.jsonl
    python benchmarks/micro.py ledger --url sqlite --rows 50000
    python benchmarks/micro.py ledger --url postgresql://postgres@127.0.0.1:5432/test

``benchmarks/run.py`` runs these as subprocesses (fresh interpreters) and takes medians.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..100) of a non-empty list."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def bench_import(repeat: int) -> dict[str, Any]:
    """``import tierwise`` in a fresh interpreter, ``repeat`` times (seconds)."""
    code = "import time; t = time.perf_counter(); import tierwise; print(time.perf_counter() - t)"
    times = []
    for _ in range(repeat):
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
        )
        times.append(float(out.stdout.strip()))
    return {"import_s": sorted(times)[len(times) // 2], "samples_s": times}


def bench_classifier(prompts_path: Path, passes: int) -> dict[str, Any]:
    """Decision latency of the configured default classifier over real prompts.

    ``classify_*``: the classifier alone; ``decide_*``: ``Router.decide`` (classifier + policy),
    which is what the gateway calls per request. One warm-up pass, then ``passes`` timed ones.
    """
    from tierwise import config
    from tierwise.router import Router, make_classifier
    from tierwise.types import ClassifyInput

    rows = [json.loads(line) for line in prompts_path.read_text().splitlines() if line.strip()]
    inputs = [ClassifyInput(str(r.get("prompt") or ""), str(r.get("system") or "")) for r in rows]
    with tempfile.TemporaryDirectory() as home:
        settings = config.load(environ={"TIERWISE_HOME": home, "TIERWISE_PROVIDER": "simulated"})
        router = Router(settings)
        classifier = make_classifier(settings, router.provider)
        router.classifier = classifier

        async def run() -> tuple[list[float], list[float]]:
            classify: list[float] = []
            decide: list[float] = []
            clock = time.perf_counter_ns
            for p in range(passes + 1):
                for item in inputs:
                    t0 = clock()
                    await classifier.classify(item)
                    t1 = clock()
                    await router.decide(item)
                    t2 = clock()
                    if p:
                        classify.append((t1 - t0) / 1e6)
                        decide.append((t2 - t1) / 1e6)
            return classify, decide

        classify, decide = asyncio.run(run())
    return {
        "classifier": settings.classifier.kind,
        "classifier_type": type(classifier).__name__,
        "prompts": len(inputs),
        "passes": passes,
        "classify_p50_ms": percentile(classify, 50),
        "classify_p99_ms": percentile(classify, 99),
        "decide_p50_ms": percentile(decide, 50),
        "decide_p99_ms": percentile(decide, 99),
        "decide_max_ms": max(decide),
    }


def _entry(n: int) -> Any:
    from tierwise.types import LedgerEntry, Usage

    return LedgerEntry(
        request_id=f"tw_bench_{uuid.uuid4().hex}",
        ts=dt.datetime(2026, 11, 20, 12, 0, tzinfo=dt.UTC) + dt.timedelta(milliseconds=n),
        source="gateway",
        status="ok",
        api="messages",
        key_name="bench",
        requested_model="auto",
        tier="haiku",
        model="claude-haiku-4-5",
        classifier="rules",
        confidence=0.95,
        reason="simple formatting",
        http_status=200,
        usage=Usage(input_tokens=1200, output_tokens=345),
        cost_usd=Decimal("0.002925"),
        classifier_cost_usd=Decimal(0),
        price_version="claude-haiku-4-5@2025-10-01",
        baseline_model="claude-opus-4-6",
        baseline_cost_usd=Decimal("0.014625"),
        saved_usd=Decimal("0.0117"),
        decision_ms=0.05,
        upstream_ms=812.5,
        total_ms=813.0,
    )


def bench_ledger(url: str, rows: int) -> dict[str, Any]:
    """Rows per second through the write-behind ledger (``record`` → batches → commit),
    from the first ``record`` until ``flush`` returns with every row written."""
    from tierwise import config
    from tierwise.ledger import open_ledger

    schema = None
    db_url: str | None = None
    if url.startswith("postgresql"):
        import psycopg

        try:
            psycopg.connect(url, connect_timeout=3).close()
        except psycopg.OperationalError as exc:
            return {"url": url, "error": f"unreachable: {str(exc).strip().splitlines()[0]}"}
        schema = f"tw_bench_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f"CREATE SCHEMA {schema}")
        sep = "&" if "?" in url else "?"
        db_url = f"{url}{sep}options=-csearch_path%3D{schema}"
    try:
        with tempfile.TemporaryDirectory() as home:
            env = {"TIERWISE_HOME": home, "TIERWISE_PROVIDER": "simulated"}
            if db_url:
                env["TIERWISE_DB"] = db_url
            settings = config.load(environ=env)
            settings = config.revalidate(
                settings, ledger=settings.ledger.model_copy(update={"queue_size": rows + 10})
            )
            entries = [_entry(i) for i in range(rows)]
            ledger = open_ledger(settings)
            try:
                t0 = time.perf_counter()
                for e in entries:
                    ledger.record(e)
                ok = ledger.flush(timeout_s=600)
                elapsed = time.perf_counter() - t0
                stats = ledger.stats()
                count = ledger.store.count()
            finally:
                ledger.close()
    finally:
        if schema is not None:
            import psycopg

            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute(f"DROP SCHEMA {schema} CASCADE")
    return {
        "url": "sqlite (WAL, $TIERWISE_HOME/tierwise.db)" if db_url is None else url,
        "rows": rows,
        "flushed": ok,
        "written": stats.written,
        "dropped": stats.dropped,
        "rows_in_db": count,
        "seconds": elapsed,
        "rows_per_s": rows / elapsed,
        "batch_size": settings.ledger.batch_size,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    sub = parser.add_subparsers(dest="cmd", required=True)
    p_import = sub.add_parser("import")
    p_import.add_argument("--repeat", type=int, default=7)
    p_cls = sub.add_parser("classifier")
    p_cls.add_argument("--prompts", type=Path, required=True)
    p_cls.add_argument("--passes", type=int, default=1)
    p_led = sub.add_parser("ledger")
    p_led.add_argument("--url", default="sqlite")
    p_led.add_argument("--rows", type=int, default=50_000)
    args = parser.parse_args(argv)
    os.environ.pop("TIERWISE_CONFIG", None)
    if args.cmd == "import":
        result = bench_import(args.repeat)
    elif args.cmd == "classifier":
        result = bench_classifier(args.prompts, args.passes)
    else:
        result = bench_ledger("" if args.url == "sqlite" else args.url, args.rows)
    print(json.dumps(result))


if __name__ == "__main__":
    main()

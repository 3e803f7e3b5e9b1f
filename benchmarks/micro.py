"""In-process benchmarks, one per subcommand, each printing one JSON object on stdout.

    python benchmarks/micro.py import
    python benchmarks/micro.py classifier --prompts ../shared/data/prompts/sharegpt_first_turns.jsonl
    python benchmarks/micro.py ledger --url sqlite --rows 50000
    python benchmarks/micro.py ledger --url postgresql://postgres@127.0.0.1:5432/test
    python benchmarks/micro.py upstream-client --base-url http://127.0.0.1:9100  # fake running
    python benchmarks/micro.py gc
    python benchmarks/micro.py asgi --requests 20000   # the gateway's CPU per request, no sockets

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


def bench_upstream_client(base_url: str, requests: int, concurrency: int) -> dict[str, Any]:
    """CPU time per upstream call: the gateway's client (``HttpUpstream`` on
    ``tierwise.gateway.http1``) against aiohttp configured as the gateway used it before
    (pooled ``TCPConnector``, a ``ClientTimeout`` per call), ``concurrency`` calls in flight."""
    import aiohttp
    import uvloop

    from tierwise.gateway.upstream import HttpUpstream

    body = orjson_body()
    headers = {"anthropic-version": "2023-06-01"}

    async def load(call: Any) -> tuple[float, float]:
        left = requests

        async def worker() -> None:
            nonlocal left
            while left > 0:
                left -= 1
                await call()

        t0, c0 = time.perf_counter(), time.process_time()
        await asyncio.gather(*[worker() for _ in range(concurrency)])
        return time.perf_counter() - t0, time.process_time() - c0

    async def run() -> dict[str, Any]:
        out: dict[str, Any] = {}
        upstream = HttpUpstream(base_url, "sk-bench")

        async def ours() -> None:
            reply = await upstream.post("/v1/messages", body, headers, stream=False, timeout_s=300)
            assert reply.status == 200

        connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=300, keepalive_timeout=30)
        session = aiohttp.ClientSession(
            connector=connector, auto_decompress=True, skip_auto_headers=("User-Agent",)
        )

        async def theirs() -> None:
            timeout = aiohttp.ClientTimeout(total=300, connect=5, sock_read=300)
            send = {**headers, "x-api-key": "sk-bench", "content-type": "application/json"}
            response = await session.post(
                base_url + "/v1/messages", data=body, headers=send, timeout=timeout
            )
            await response.read()
            response.release()
            assert response.status == 200

        for name, call in (("http1", ours), ("aiohttp", theirs), ("http1_again", ours)):
            await load(call)  # warm-up: connections, caches
            wall, cpu = await load(call)
            out[name] = {"rps": requests / wall, "cpu_us_per_call": 1e6 * cpu / requests}
        await upstream.aclose()
        await session.close()
        return out

    return {"requests": requests, "concurrency": concurrency, **uvloop.run(run())}


def orjson_body() -> bytes:
    return json.dumps(
        {
            "model": "claude-haiku-4-5",
            "max_tokens": 64,
            "messages": [{"role": "user", "content": "Convert to JSON: name=Ann, age=31"}],
        }
    ).encode()


def bench_gc() -> dict[str, Any]:
    """What ``gc.freeze()`` at start-up saves: tracked objects after building the gateway app,
    and the time of a full collection before and after freezing them."""
    import gc

    from tierwise import config
    from tierwise.gateway.server import make_app

    with tempfile.TemporaryDirectory() as home:
        env = {
            "TIERWISE_HOME": home,
            "ANTHROPIC_API_KEY": "sk-bench",
            "ANTHROPIC_BASE_URL": "http://127.0.0.1:9",
        }
        make_app(config.load(environ=env))
        gc.collect()
        gc.unfreeze()
        tracked = len(gc.get_objects())
        t0 = time.perf_counter()
        gc.collect()
        before = time.perf_counter() - t0
        gc.freeze()
        t0 = time.perf_counter()
        gc.collect()
        after = time.perf_counter() - t0
    return {"tracked_objects": tracked, "full_gc_ms": before * 1000, "frozen_gc_ms": after * 1000}


def bench_asgi(requests: int, model: str) -> dict[str, Any]:
    """The gateway's own CPU per request, without sockets: ``make_app`` (ledger on, SQLite)
    driven through the ASGI interface, the upstream an in-memory object answering a fixed
    reply. Excludes uvicorn's HTTP parsing and the upstream connection; includes routing,
    Starlette, admission (classifier), the engine, the response and the ledger record."""
    import uvloop

    from tierwise import config
    from tierwise.gateway import server
    from tierwise.gateway.upstream import UpstreamReply

    reply_body = json.dumps(
        {
            "id": "msg_bench_0001",
            "type": "message",
            "role": "assistant",
            "model": "claude-haiku-4-5",
            "content": [{"type": "text", "text": "Hello from the benchmark upstream."}],
            "stop_reason": "end_turn",
            "stop_sequence": None,
            "usage": {"input_tokens": 12, "output_tokens": 8},
        }
    ).encode()

    class Upstream:
        simulated = False

        async def post(self, *args: Any, **kwargs: Any) -> UpstreamReply:
            return UpstreamReply(200, {"content-type": "application/json"}, body=reply_body)

        async def aclose(self) -> None:
            return None

    body = json.dumps(
        {
            "model": model,
            "max_tokens": 64,
            "messages": [{"role": "user", "content": "Convert to JSON: name=Ann, age=31"}],
        }
    ).encode()
    headers = [
        (b"host", b"127.0.0.1"),
        (b"content-type", b"application/json"),
        (b"anthropic-version", b"2023-06-01"),
        (b"content-length", str(len(body)).encode()),
    ]

    async def run(app: Any) -> tuple[float, float]:
        statuses: list[int] = []

        async def one() -> None:
            sent = False

            async def receive() -> dict[str, Any]:
                nonlocal sent
                if not sent:
                    sent = True
                    return {"type": "http.request", "body": body, "more_body": False}
                await asyncio.sleep(3600)  # the client never disconnects
                return {"type": "http.disconnect"}

            async def send(message: dict[str, Any]) -> None:
                if message["type"] == "http.response.start":
                    statuses.append(message["status"])

            scope = {
                "type": "http",
                "asgi": {"version": "3.0"},
                "http_version": "1.1",
                "method": "POST",
                "scheme": "http",
                "path": "/v1/messages",
                "raw_path": b"/v1/messages",
                "root_path": "",
                "query_string": b"",
                "headers": headers,
                "client": ("127.0.0.1", 50000),
                "server": ("127.0.0.1", 8080),
                "state": {},
            }
            await app(scope, receive, send)

        for _ in range(min(2000, requests)):
            await one()
        statuses.clear()
        t0, c0 = time.perf_counter(), time.process_time()
        for _ in range(requests):
            await one()
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        assert statuses.count(200) == requests, statuses[:5]
        return wall, cpu

    with tempfile.TemporaryDirectory() as home:
        env = {
            "TIERWISE_HOME": home,
            "ANTHROPIC_API_KEY": "sk-bench",
            "ANTHROPIC_BASE_URL": "http://127.0.0.1:9",
        }
        settings = config.load(environ=env)
        built = server.make_app(settings)
        gateway = built.state.gateway
        fake = Upstream()
        gateway.upstream = gateway.engine.upstream = gateway.engine.caller.upstream = fake
        from starlette.applications import Starlette

        def plain(scope: Any, receive: Any, send: Any) -> Any:
            return Starlette.__call__(built, scope, receive, send)  # the full middleware stack

        # Alternated three times; the minimum of each (noise on a shared machine only adds).
        cpu_us: dict[str, list[float]] = {"direct": [], "full_stack": []}
        for _ in range(3):
            for name, app in (("direct", built), ("full_stack", plain)):
                _, cpu = uvloop.run(run(app))
                cpu_us[name].append(1e6 * cpu / requests)
    return {
        "requests": requests,
        "model": model,
        "direct_us_cpu": min(cpu_us["direct"]),
        "full_stack_us_cpu": min(cpu_us["full_stack"]),
        "samples_us_cpu": cpu_us,
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
    p_up = sub.add_parser("upstream-client")
    p_up.add_argument("--base-url", required=True)
    p_up.add_argument("--requests", type=int, default=20_000)
    p_up.add_argument("--concurrency", type=int, default=32)
    sub.add_parser("gc")
    p_asgi = sub.add_parser("asgi")
    p_asgi.add_argument("--requests", type=int, default=20_000)
    p_asgi.add_argument("--model", default="auto")
    args = parser.parse_args(argv)
    os.environ.pop("TIERWISE_CONFIG", None)
    if args.cmd == "import":
        result = bench_import(args.repeat)
    elif args.cmd == "classifier":
        result = bench_classifier(args.prompts, args.passes)
    elif args.cmd == "upstream-client":
        result = bench_upstream_client(args.base_url, args.requests, args.concurrency)
    elif args.cmd == "gc":
        result = bench_gc()
    elif args.cmd == "asgi":
        result = bench_asgi(args.requests, args.model)
    else:
        result = bench_ledger("" if args.url == "sqlite" else args.url, args.rows)
    print(json.dumps(result))


if __name__ == "__main__":
    main()

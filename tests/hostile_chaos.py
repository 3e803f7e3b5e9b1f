"""The full hostile suite (`make chaos`): one real `tierwise serve` under everything at once.

Concurrently, against one gateway (one worker, or ``--workers 2`` with budgets in Redis):

(a) the fault-injection mix of tests/chaos.py: both dialects, streaming and not, ``auto`` and
    forced tiers, the upstream failing a share of attempts (429, 529, 500, resets, slow
    replies, broken streams);
(b) malicious upstream replies (tests/fakes/hostile_upstream.py): gzip bombs (JSON and SSE), a
    50 MB SSE line, endless and trickling streams, 200 MB of headers, an 8 MB request-id,
    invalid UTF-8 / NaN / ``{}`` / ``{"type":"error"}`` with 200, ``content: ["a"]``, negative /
    string / huge usage, a bad block index, a 302 on a stream, CR-only streams, resets. Each
    request names its attack with a marker in its text, which tests/chaos_upstream.py (the one
    upstream the gateway talks to) switches on; unmarked requests go to the faulty fake;
(c) client floods: waves of idle TCP connections past the connection cap, slowloris heads, and
    anonymous requests (no key, wrong key);
(d) budgeted keys under attack: bursts of concurrent CJK prompts billed one token per
    character ($0.01 key), upstreams lying about usage ($0.05 key), documents by URL ($0.05
    key),

while another process (tests/chaos_monitor.py) polls ``/health`` every 50 ms and samples the
gateway's RSS and descriptors. Then SIGTERM, and the checks: ledger rows == requests answered
(or counted in ``ledger_gaps``), every reply complete or a well-formed error in its dialect,
every stream ended by message_stop / [DONE] or an error event, each attack's expected outcome,
spend ≤ budget per key, RSS, /health latency, no unhandled exception in the gateway's log, a
clean stop. Prints a table (attack, bound, measured, result) and exits 1 when a bound failed.

    python -m tests.hostile_chaos                       # full size (make chaos)
    python -m tests.hostile_chaos --workers 2 --redis-url redis://127.0.0.1:6379/0
    python -m tests.hostile_chaos --scale small         # what tests/test_chaos.py runs

The small scale keeps every attack and check but with small counts and sizes, and the gateway's
head deadline set low (2 s) so that the floods meet it; the idle flood stays under the
connection cap there (eviction at the cap is tested on its own, tests/test_client_floods.py,
and its race with kept-alive clients is an xfail in tests/test_chaos.py). Its /health bound is
``TIERWISE_HEALTH_BOUND_S`` (default 1 s), as in tests/test_hostile_upstream.py.

Bugs the suite found that src/ still has are listed in :data:`KNOWN_BUGS` (each with its
xfail(strict) test); `make chaos` sends those attacks and fails on them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import re
import resource
import signal
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from collections import Counter
from collections.abc import Awaitable
from dataclasses import asdict, dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

import aiohttp

from tests.chaos import UNHANDLED, _request, check, free_port
from tests.chaos_upstream import CJK, SIZES, marker
from tests.fakes.anthropic_server import DEFAULT_API_KEY

TIERWISE = str(Path(sys.executable).parent / "tierwise")
ROOT = Path(__file__).resolve().parent.parent
GC_PROBE_DIR = Path(__file__).resolve().parent / "gcprobe"
HEALTH_BOUND_MS_SMALL = 1000 * float(os.environ.get("TIERWISE_HEALTH_BOUND_S", "1.0"))
MODEL_ID = "claude-haiku-4-5"
MAX_READ = 8 * 1024 * 1024  # the most of one reply the client keeps (it counts the rest)
T = TypeVar("T")


@dataclass(frozen=True)
class Scale:
    name: str
    mix_requests: int
    mix_concurrency: int
    fault_rate: float
    hostile_repeats: int  # each attack × both dialects × this
    hostile_concurrency: int
    budget_burst: int  # concurrent requests per budget attack
    memory_burst: int  # concurrent gzip bombs, and as many long SSE lines, at once
    idle_sockets: int  # per wave
    idle_waves: int
    slowloris: int
    anonymous: int
    upstream_timeout_s: float
    attempt_timeout_s: float
    header_timeout_s: float
    max_connections: int | None  # None: the gateway's default (from ulimit -n)
    health_bound_ms: float
    rss_bound_mb: float = 400.0
    client_timeout_s: float = 120.0


SCALES = {
    "full": Scale(
        "full",
        mix_requests=5000,
        mix_concurrency=64,
        fault_rate=0.25,
        hostile_repeats=4,
        hostile_concurrency=12,
        budget_burst=200,
        memory_burst=16,
        idle_sockets=12_000,
        idle_waves=3,
        slowloris=200,
        anonymous=10_000,
        upstream_timeout_s=8.0,
        attempt_timeout_s=5.0,
        header_timeout_s=10.0,
        max_connections=None,
        health_bound_ms=100.0,
    ),
    "small": Scale(
        "small",
        mix_requests=300,
        mix_concurrency=24,
        fault_rate=0.25,
        hostile_repeats=1,
        hostile_concurrency=8,
        budget_burst=30,
        memory_burst=2,
        idle_sockets=300,
        idle_waves=1,
        slowloris=20,
        anonymous=100,
        upstream_timeout_s=3.0,
        attempt_timeout_s=2.0,
        header_timeout_s=2.0,
        # not 200: at the cap, eviction closes kept-alive clients (an xfail in test_chaos.py)
        max_connections=None,
        health_bound_ms=HEALTH_BOUND_MS_SMALL,
        client_timeout_s=60.0,
    ),
}

# Bugs this suite found that src/ still has: (attack case, dialect) → the xfail(strict) test
# that pins each down. `make chaos` sends them (and fails on them); `--skip-known-bugs` leaves
# them out, which is how `make test` runs the small scale. Remove an entry with its fix.
KNOWN_BUGS: dict[tuple[str, str], str] = {}

BUDGETS = {"cjk": Decimal("0.01"), "liar": Decimal("0.05"), "docs": Decimal("0.05")}


def _mb(n: int) -> str:
    return f"{n / 1024 / 1024:.0f} MiB" if n % (1024 * 1024) == 0 else f"{n / 1e6:.0f} MB"


@dataclass(frozen=True)
class Attack:
    case: str  # the marker chaos_upstream switches on
    stream: bool
    expect: str  # "error": never a success; "ok": a complete answer
    label: str
    bound: str
    max_tokens: int = 50


def attacks(scale: Scale) -> list[Attack]:
    s = SIZES[scale.name]
    deadline = f"upstream_timeout_s ({scale.upstream_timeout_s:g} s)"
    bad = "a well-formed 502 (error in the dialect), never a 200"
    cut = "the stream ends with an error event, never message_stop/[DONE]"
    return [
        Attack(
            "gzip_bomb",
            False,
            "error",
            f"gzip bomb, {_mb(s.gzip_decoded)} decoded, JSON",
            "502; decoded body ≤ upstream_max_body_bytes (32 MiB)",
        ),
        Attack(
            "gzip_bomb",
            True,
            "error",
            f"gzip bomb, {_mb(s.gzip_decoded)} decoded, SSE",
            "an error; decoded stream bounded",
        ),
        Attack(
            "long_line",
            True,
            "error",
            f"{_mb(s.long_line)} SSE line",
            "an error at upstream_max_event_bytes (16 MiB)",
        ),
        Attack(
            "endless",
            True,
            "error",
            "endless stream, max_tokens 50",
            "cut once the text passes what max_tokens allows",
        ),
        Attack(
            "endless",
            True,
            "error",
            "endless stream, max_tokens 4096",
            f"cut at {deadline}",
            max_tokens=4096,
        ),
        Attack(
            "trickle", True, "error", "trickling stream (a byte every 50 ms)", f"cut at {deadline}"
        ),
        Attack("trickle", False, "error", "trickling JSON reply", "an error at the timeouts"),
        Attack(
            "huge_headers",
            False,
            "error",
            f"{_mb(s.huge_headers)} of response headers, JSON",
            "502 after 64 KiB of head",
        ),
        Attack(
            "huge_headers",
            True,
            "error",
            f"{_mb(s.huge_headers)} of response headers, SSE",
            "502 after 64 KiB of head",
        ),
        Attack(
            "huge_request_id",
            False,
            "error",
            f"{_mb(s.huge_header)} request-id header",
            "502; nothing of it reaches the client",
        ),
        Attack("invalid_utf8", False, "error", "invalid UTF-8 body with 200", bad),
        Attack("nan", False, "error", "NaN in usage with 200", bad),
        Attack("empty_object", False, "error", "`{}` with 200", bad),
        Attack("error_200", False, "error", '`{"type":"error"}` with 200', bad),
        Attack("content_strings", False, "error", '`content: ["a"]`', bad),
        Attack("usage_negative", False, "error", "negative usage, JSON", bad),
        Attack("usage_negative", True, "error", "negative usage, SSE", cut),
        Attack("usage_string", False, "error", 'usage as a string ("12"), JSON', bad),
        Attack("usage_string", True, "error", 'usage as a string ("12"), SSE', cut),
        Attack(
            "usage_huge",
            False,
            "ok",
            "usage 10^30 tokens, JSON",
            "answered, usage clamped and flagged, ledger keeps writing",
        ),
        Attack(
            "usage_huge",
            True,
            "ok",
            "usage 10^30 tokens, SSE",
            "answered, usage clamped and flagged, ledger keeps writing",
        ),
        Attack("bad_index", True, "error", "content block index never started (7)", cut),
        Attack("redirect", True, "error", "302 on a stream", "502"),
        Attack("cr_only", True, "ok", "CR-only line endings", "a complete stream, no error"),
        Attack("reset", False, "error", "TCP reset mid-body, JSON", "502"),
        Attack("reset", True, "error", "TCP reset mid-stream", cut),
    ]


# -- client records ----------------------------------------------------------------------------


@dataclass
class Record:
    group: str  # "mix", "hostile", "budget:<key>"
    case: str
    dialect: str
    stream: bool
    key: str
    status: int = 0
    ok: bool = False
    problem: str | None = None  # set when the reply was NOT well formed
    error_type: str | None = None
    request_id: str | None = None
    transport_error: str | None = None
    body_bytes: int = 0
    head_bytes: int = 0
    seconds: float = 0.0
    started_at: float = 0.0  # wall clock, to line up with the monitor's samples
    marker: str = ""  # the chaos_upstream case a hostile request names
    error_message: str | None = None  # of an error reply, cut to 160 characters


def anthropic_body(text: Any, model: str, stream: bool, max_tokens: int = 50) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": model,
        "max_tokens": max_tokens,
        "messages": [{"role": "user", "content": text}],
    }
    if stream:
        body["stream"] = True
    return body


def openai_body(text: str, model: str, stream: bool, max_tokens: int = 50) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": model,
        "max_tokens": max_tokens,
        "messages": [{"role": "user", "content": text}],
    }
    if stream:
        body |= {"stream": True, "stream_options": {"include_usage": True}}
    return body


def key_headers(dialect: str, key: str | None) -> dict[str, str]:
    headers = {"content-type": "application/json", "anthropic-version": "2023-06-01"}
    if key is not None:
        if dialect == "anthropic":
            headers["x-api-key"] = key
        else:
            headers["authorization"] = f"Bearer {key}"
    return headers


async def send(
    session: aiohttp.ClientSession,
    base: str,
    rec: Record,
    body: dict[str, Any],
    key: str | None,
) -> Record:
    """One request; whatever happens is written into ``rec`` (transport errors included)."""
    path = "/v1/messages" if rec.dialect == "anthropic" else "/v1/chat/completions"
    started = time.monotonic()
    rec.started_at = time.time()
    try:
        async with session.post(
            base + path, data=json.dumps(body), headers=key_headers(rec.dialect, key)
        ) as response:
            rec.status = response.status
            rec.request_id = response.headers.get("x-tierwise-request-id")
            kept = bytearray()
            total = 0
            async for piece in response.content.iter_chunked(65536):
                total += len(piece)
                if len(kept) < MAX_READ:
                    kept += piece[: MAX_READ - len(kept)]
            rec.body_bytes = total
            rec.head_bytes = sum(len(k) + len(v) for k, v in response.raw_headers)
            ctype = response.headers.get("content-type", "")
            rec.ok, rec.problem, rec.error_type = check(
                rec.dialect, rec.stream, response.status, ctype, bytes(kept)
            )
            if total > MAX_READ:
                rec.problem = f"reply of {total} bytes (over {MAX_READ})"
            if response.status >= 400 and rec.problem is None:
                rec.error_message = str(json.loads(kept)["error"].get("message"))[:160]
    except (TimeoutError, aiohttp.ClientError) as exc:
        rec.transport_error = f"{type(exc).__name__}: {exc}"[:200]
        rec.problem = f"transport: {rec.transport_error}"
    except (KeyError, ValueError, TypeError, AttributeError) as exc:  # check() on odd JSON
        rec.problem = f"unparseable reply: {type(exc).__name__}: {exc}"[:200]
    rec.seconds = round(time.monotonic() - started, 3)
    return rec


def session(limit: int, timeout_s: float) -> aiohttp.ClientSession:
    # keepalive below the gateway's idle_timeout_s (5 s): a good client does not reuse what
    # the server is about to close
    connector = aiohttp.TCPConnector(limit=limit, keepalive_timeout=2.0)
    return aiohttp.ClientSession(
        connector=connector, timeout=aiohttp.ClientTimeout(total=timeout_s)
    )


class Progress:
    """How far the mix is; other attacks start at fractions of it."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.done = 0
        self._waiting: list[tuple[float, asyncio.Event]] = []
        self.finished = asyncio.Event()

    def step(self) -> None:
        self.done += 1
        for fraction, event in self._waiting:
            if self.done >= fraction * self.total:
                event.set()
        if self.done >= self.total:
            self.finished.set()

    async def reached(self, fraction: float) -> None:
        if self.done >= fraction * self.total:
            return
        event = asyncio.Event()
        self._waiting.append((fraction, event))
        await event.wait()


# -- (a) the fault-injection mix, (b) hostile upstream, (d) budgets --------------------------------


async def run_mix(base: str, key: str, scale: Scale, progress: Progress) -> list[Record]:
    records: list[Record] = []
    indices = iter(range(scale.mix_requests))

    async def worker(s: aiohttp.ClientSession) -> None:
        for i in indices:
            dialect, stream, model, body = _request(i)
            rec = Record("mix", model, dialect, stream, "load")
            records.append(await send(s, base, rec, body, key))
            progress.step()

    async with session(scale.mix_concurrency, scale.client_timeout_s) as s:
        await asyncio.gather(*(worker(s) for _ in range(scale.mix_concurrency)))
    return records


def hostile_plan(scale: Scale, seed: int, skip_known_bugs: bool) -> list[tuple[Attack, str, str]]:
    plan = [
        (attack, dialect, MODEL_ID if r % 2 == 0 else "auto")
        for attack in attacks(scale)
        for dialect in ("anthropic", "openai")
        for r in range(scale.hostile_repeats)
        if not (skip_known_bugs and (attack.case, dialect) in KNOWN_BUGS)
    ]
    random.Random(seed).shuffle(plan)
    return plan


async def run_hostile(
    base: str, key: str, scale: Scale, seed: int, skip_known_bugs: bool
) -> list[Record]:
    records: list[Record] = []
    plan = iter(hostile_plan(scale, seed, skip_known_bugs))

    async def worker(s: aiohttp.ClientSession) -> None:
        for attack, dialect, model in plan:
            text = f"Say hello. {marker(attack.case)}"
            make = anthropic_body if dialect == "anthropic" else openai_body
            body = make(text, model, attack.stream, attack.max_tokens)
            rec = Record("hostile", attack.label, dialect, attack.stream, "load")
            rec.marker = attack.case
            records.append(await send(s, base, rec, body, key))

    async with session(scale.hostile_concurrency, scale.client_timeout_s) as s:
        await asyncio.gather(*(worker(s) for _ in range(scale.hostile_concurrency)))
    return records


def budget_requests(kind: str, n: int) -> list[tuple[Record, dict[str, Any]]]:
    out: list[tuple[Record, dict[str, Any]]] = []
    for i in range(n):
        dialect = "anthropic" if i % 2 == 0 or kind == "docs" else "openai"
        make = anthropic_body if dialect == "anthropic" else openai_body
        if kind == "cjk":
            stream = False
            body = make(f"{CJK} {marker('cjk_usage')}", "haiku", stream, max_tokens=60)
        elif kind == "liar":
            stream = i % 4 < 2
            case = "lying_output" if stream else "lying_input"
            body = make(f"Say hello number {i}. {marker(case)}", "sonnet", stream)
        else:
            stream = False
            content = [
                {
                    "type": "document",
                    "source": {"type": "url", "url": f"https://example.com/{i}.pdf"},
                },
                {"type": "text", "text": f"Summarise this document. {marker('normal')}"},
            ]
            body = anthropic_body(content, "sonnet", stream)
        out.append((Record(f"budget:{kind}", kind, dialect, stream, kind), body))
    return out


async def run_budget(
    base: str, keys: dict[str, str], scale: Scale, progress: Progress, phases: Phases
) -> list[Record]:
    records: list[Record] = []
    for fraction, kind in ((0.2, "cjk"), (0.45, "liar"), (0.7, "docs")):
        await progress.reached(fraction)
        async with session(scale.budget_burst, scale.client_timeout_s) as s:
            burst = budget_requests(kind, scale.budget_burst)
            records += await phases.timed(
                f"budget burst {kind}",
                asyncio.gather(*(send(s, base, rec, body, keys[kind]) for rec, body in burst)),
            )
    return records


BURST = ("gzip_bomb", False), ("long_line", True)


async def run_memory_burst(
    base: str, key: str, scale: Scale, progress: Progress, phases: Phases
) -> list[Record]:
    """Every reply the gateway reads is bounded (a decoded body, one SSE event); a malicious
    upstream answers many requests at once. ``memory_burst`` gzip bombs and as many long SSE
    lines, all at once, half of each per dialect."""
    await progress.reached(0.6)
    labels = {(a.case, a.stream): a.label for a in attacks(scale)}
    plan: list[tuple[Record, dict[str, Any]]] = []
    for case, stream in BURST:
        for i in range(scale.memory_burst):
            dialect = "anthropic" if i % 2 == 0 else "openai"
            make = anthropic_body if dialect == "anthropic" else openai_body
            rec = Record("burst", labels[case, stream], dialect, stream, "load")
            rec.marker = case
            plan.append((rec, make(f"Say hello. {marker(case)}", MODEL_ID, stream)))
    async with session(len(plan), scale.client_timeout_s) as s:
        return await phases.timed(
            "memory burst", asyncio.gather(*(send(s, base, rec, body, key) for rec, body in plan))
        )


# -- (c) client floods ---------------------------------------------------------------------------


class _Idle(asyncio.Protocol):
    def __init__(self, flood: IdleFlood) -> None:
        self.flood = flood
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.flood.open.add(self)
        self.flood.opened += 1

    def data_received(self, data: bytes) -> None:
        self.flood.replies[data.split(b"\r\n", 1)[0].decode("latin-1")[:40]] += 1

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if self in self.flood.open:
            self.flood.open.discard(self)
            if not self.flood.closing:
                self.flood.closed_by_server += 1


class IdleFlood:
    """Waves of TCP connections that never send a byte."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.open: set[_Idle] = set()
        self.opened = 0
        self.closed_by_server = 0
        self.peak_open = 0
        self.connect_errors: Counter[str] = Counter()
        self.replies: Counter[str] = Counter()
        self.closing = False
        self.wave_seconds: list[float] = []
        self.opening_spans: list[tuple[float, float]] = []  # wall clock

    async def wave(self, n: int, hold_s: float) -> None:
        loop = asyncio.get_running_loop()
        gate = asyncio.Semaphore(128)
        started = time.monotonic()
        wall = time.time()

        async def one() -> None:
            async with gate:
                try:
                    await loop.create_connection(lambda: _Idle(self), "127.0.0.1", self.port)
                except OSError as exc:
                    self.connect_errors[type(exc).__name__] += 1
                self.peak_open = max(self.peak_open, len(self.open))

        await asyncio.gather(*(one() for _ in range(n)))
        self.wave_seconds.append(round(time.monotonic() - started, 1))
        self.opening_spans.append((wall, time.time()))
        deadline = time.monotonic() + hold_s  # the server closes them at its head deadline
        while self.open and time.monotonic() < deadline:
            await asyncio.sleep(0.2)

    def close(self) -> None:
        self.closing = True
        for conn in list(self.open):
            if conn.transport is not None:
                conn.transport.abort()
        self.open.clear()


class Slowloris:
    """Connections that send a request head one byte a second; each one closed by the
    server is replaced until :meth:`stop`."""

    def __init__(self, port: int, header_timeout_s: float) -> None:
        self.port = port
        self.header_timeout_s = header_timeout_s
        self.stopping = asyncio.Event()
        self.lifetimes: list[float] = []
        self.replies: Counter[str] = Counter()
        self.survived = 0  # still open when the suite gave up on them
        self.errors: Counter[str] = Counter()

    async def connection(self) -> None:
        loop = asyncio.get_running_loop()
        while not self.stopping.is_set():
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
            except OSError as exc:
                self.errors[type(exc).__name__] += 1
                await asyncio.sleep(1)
                continue
            opened = loop.time()
            closed = False
            try:
                writer.write(b"POST /v1/messages HTTP/1.1\r\nhost: x\r\nx-drip: ")
                give_up = opened + self.header_timeout_s * 3 + 10
                while loop.time() < give_up:
                    try:
                        data = await asyncio.wait_for(reader.read(4096), 1.0)
                    except TimeoutError:
                        writer.write(b"a")
                        await writer.drain()
                        continue
                    if not data:
                        closed = True
                        break
                    self.replies[data.split(b"\r\n", 1)[0].decode("latin-1")[:40]] += 1
            except ConnectionError:
                closed = True
            finally:
                writer.close()
            if closed:
                self.lifetimes.append(round(loop.time() - opened, 2))
            else:
                self.survived += 1

    async def run(self, n: int) -> None:
        await asyncio.gather(*(self.connection() for _ in range(n)))


async def run_anonymous(base: str, scale: Scale, until: asyncio.Event) -> dict[str, Any]:
    statuses: Counter[int] = Counter()
    problems: list[str] = []
    transport: Counter[str] = Counter()
    sent = 0

    async def worker(s: aiohttp.ClientSession, w: int) -> None:
        nonlocal sent
        while sent < scale.anonymous and not until.is_set():
            i = sent
            sent += 1
            dialect = "anthropic" if i % 2 == 0 else "openai"
            key = None if i % 3 == 0 else f"sk-tw-wrong-{w}-{i}"
            make = anthropic_body if dialect == "anthropic" else openai_body
            path = "/v1/messages" if dialect == "anthropic" else "/v1/chat/completions"
            try:
                async with s.post(
                    base + path,
                    data=json.dumps(make("hi", "auto", False)),
                    headers=key_headers(dialect, key),
                ) as response:
                    raw = await response.read()
                    statuses[response.status] += 1
                    _, problem, _ = check(
                        dialect,
                        False,
                        response.status,
                        response.headers.get("content-type", ""),
                        raw,
                    )
                    if problem or response.status not in (401, 429):
                        problems.append(f"{response.status}: {problem or raw[:120]!r}")
            except (TimeoutError, aiohttp.ClientError) as exc:
                transport[type(exc).__name__] += 1
            await asyncio.sleep(0.02)

    async with session(8, 30) as s:
        await asyncio.gather(*(worker(s, w) for w in range(8)))
    return {
        "sent": sent,
        "statuses": dict(statuses),
        "problems": problems[:5],
        "problem_count": len(problems),
        "transport_errors": dict(transport),
    }


# -- processes -------------------------------------------------------------------------------


@dataclass
class Proc:
    proc: subprocess.Popen[bytes]
    port: int


def start_helper(module: str, *args: str, log: Path) -> Proc:
    """A helper process that prints ``port <n>`` when ready and stops when its stdin closes;
    its stderr goes to ``log`` (the fake upstream logs the resets it injects)."""
    with log.open("wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", module, *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=err,
            cwd=ROOT,
        )
    assert proc.stdout is not None
    line = proc.stdout.readline().decode()
    if not line.startswith("port "):
        proc.kill()
        raise RuntimeError(f"{module} did not start: {line!r} {log.read_text()[-2000:]}")
    return Proc(proc, int(line.split()[1]))


def stop_helper(helper: Proc) -> None:
    with contextlib.suppress(OSError):
        assert helper.proc.stdin is not None
        helper.proc.stdin.close()
    try:
        helper.proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        helper.proc.kill()
        helper.proc.wait()


def make_keys(home: Path) -> dict[str, str]:
    from tierwise.config import load
    from tierwise.keys import KeyStore

    store = KeyStore(load(environ={"TIERWISE_HOME": str(home)}))
    try:
        keys = {"load": store.create("load")[0], "admin": store.create("ops", role="admin")[0]}
        for name, budget in BUDGETS.items():
            keys[name] = store.create(name, budget_usd=budget, period="day")[0]
    finally:
        store.close()
    return keys


def gateway_config(scale: Scale, redis_url: str | None, redis_prefix: str) -> str:
    lines = [
        "[gateway]",
        f"attempt_timeout_s = {scale.attempt_timeout_s}",
        "retry_after_cap_s = 0.05",
        "cooldown_s = 0.5",
        f"upstream_timeout_s = {scale.upstream_timeout_s}",
        f"header_timeout_s = {scale.header_timeout_s}",
    ]
    if scale.max_connections is not None:
        lines.append(f"max_connections = {scale.max_connections}")
    if redis_url:
        lines += ["[budgets]", f'redis_url = "{redis_url}"', f'redis_prefix = "{redis_prefix}"']
    return "\n".join(lines) + "\n"


def _stalls(stalls: list[dict[str, Any]] | None) -> str:
    """The event-loop stalls the probe saw (``--gc-probe``): how many, the longest, and where
    the loop was then (its innermost frame, or "in C" when only the loop's own frames show)."""
    if stalls is None:
        return ""
    if not stalls:
        return "; loop stalls over 50 ms: 0"
    worst = max(stalls, key=lambda s: s["ms"])
    own = ("uvicorn/_compat.py", "asyncio/runners.py", "asyncio/base_events.py")
    inner = [stack[-1] for stack in worst["stacks"] if stack and not stack[-1].startswith(own)]
    where = inner[0] if inner else "in C (libuv, uvloop) or the kernel"
    return (
        f"; loop stalls over 50 ms: {len(stalls)}, longest {worst['ms']:.0f} ms "
        f"({worst['on_cpu_ms']:.0f} ms on the CPU, {worst['runqueue_ms']:.0f} ms waiting "
        f"for it; at {where})"
    )


def start_gateway(
    home: Path, upstream_port: int, config: str, workers: int, *, gc_probe: bool = False
) -> tuple[subprocess.Popen[bytes], int, Path]:
    (home / "config.toml").write_text(config)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANTHROPIC_", "TIERWISE_"))}
    env |= {
        "TIERWISE_HOME": str(home),
        "ANTHROPIC_API_KEY": DEFAULT_API_KEY,
        "ANTHROPIC_BASE_URL": f"http://127.0.0.1:{upstream_port}",
    }
    if gc_probe:  # tests/gcprobe/sitecustomize.py: the gateway's collections, timed
        path = os.pathsep.join(p for p in (str(GC_PROBE_DIR), env.get("PYTHONPATH")) if p)
        env |= {"PYTHONPATH": path, "TIERWISE_GC_PROBE": str(home / "gc")}
    port = free_port()
    log = home / "serve.log"
    args = [TIERWISE, "serve", "--port", str(port), "--config", str(home / "config.toml")]
    if workers > 1:
        args += ["--workers", str(workers)]
    with log.open("wb") as err:
        proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=err)
    deadline = time.monotonic() + 60
    import http.client

    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the gateway exited: {log.read_text()[-2000:]}")
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            connection.request("GET", "/health")
            if connection.getresponse().status == 200:
                connection.close()
                return proc, port, log
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("the gateway did not answer /health within 60 s")


async def scrape_metrics(base: str, admin_key: str) -> dict[str, float]:
    wanted = (
        "tierwise_auth_failures_total",
        "tierwise_client_connections_closed_total",
        "tierwise_usage_clamped_total",
        "tierwise_ledger_dropped_total",
    )
    async with (
        session(1, 30) as s,
        s.get(base + "/metrics", headers={"authorization": f"Bearer {admin_key}"}) as response,
    ):
        text = await response.text()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith(wanted) and "_created" not in line:
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


async def upstream_stats(port: int) -> dict[str, Any]:
    async with session(1, 30) as s, s.get(f"http://127.0.0.1:{port}/__stats") as response:
        data: dict[str, Any] = await response.json()
        return data


# -- the run ------------------------------------------------------------------------------------


class Phases:
    """When each part of the attack ran (wall clock), to say what a slow /health or the
    peak RSS coincided with."""

    def __init__(self) -> None:
        self.spans: list[tuple[str, float, float]] = []

    async def timed(self, name: str, work: Awaitable[T]) -> T:
        started = time.time()
        try:
            return await work
        finally:
            self.spans.append((name, started, time.time()))


@dataclass
class Clients:
    records: list[Record] = field(default_factory=list)
    phases: list[tuple[str, float, float]] = field(default_factory=list)
    anonymous: dict[str, Any] = field(default_factory=dict)
    idle: dict[str, Any] = field(default_factory=dict)
    slowloris: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0


async def drive(
    port: int, keys: dict[str, str], scale: Scale, seed: int, skip_known_bugs: bool
) -> Clients:
    base = f"http://127.0.0.1:{port}"
    progress = Progress(scale.mix_requests)
    phases = Phases()
    idle = IdleFlood(port)
    slow = Slowloris(port, scale.header_timeout_s)
    started = time.monotonic()

    async def waves() -> None:
        for w in range(scale.idle_waves):
            await progress.reached((w + 0.5) / (scale.idle_waves + 0.5))
            await phases.timed(
                f"idle wave {w + 1}",
                idle.wave(scale.idle_sockets, hold_s=scale.header_timeout_s + 5),
            )

    slow_task = asyncio.create_task(slow.run(scale.slowloris))
    anonymous_task = asyncio.create_task(run_anonymous(base, scale, progress.finished))
    mix, hostile, budget, burst, _ = await asyncio.gather(
        phases.timed("mix", run_mix(base, keys["load"], scale, progress)),
        phases.timed("hostile", run_hostile(base, keys["load"], scale, seed, skip_known_bugs)),
        run_budget(base, keys, scale, progress, phases),
        run_memory_burst(base, keys["load"], scale, progress, phases),
        waves(),
    )
    seconds = time.monotonic() - started
    slow.stopping.set()
    anonymous = await anonymous_task
    await slow_task  # the connections still dripping: until the server closes them
    idle.close()
    openings = [
        (f"(opening its {scale.idle_sockets:,} sockets)", a, b)
        for i, (a, b) in enumerate(idle.opening_spans)
    ]
    return Clients(
        records=[*mix, *hostile, *budget, *burst],
        phases=phases.spans + openings,
        anonymous=anonymous,
        idle={
            "waves": scale.idle_waves,
            "sockets_per_wave": scale.idle_sockets,
            "opened": idle.opened,
            "closed_by_server": idle.closed_by_server,
            "peak_open_at_once": idle.peak_open,
            "connect_errors": dict(idle.connect_errors),
            "replies": dict(idle.replies),
            "seconds_to_open_each_wave": idle.wave_seconds,
        },
        slowloris={
            "connections": len(slow.lifetimes) + slow.survived,
            "closed_by_server": len(slow.lifetimes),
            "survived": slow.survived,
            "lifetime_s_max": max(slow.lifetimes, default=None),
            "lifetime_s_min": min(slow.lifetimes, default=None),
            "replies": dict(slow.replies),
            "connect_errors": dict(slow.errors),
        },
        seconds=round(seconds, 1),
    )


def read_ledger(home: Path) -> dict[str, Any]:
    with contextlib.closing(sqlite3.connect(home / "tierwise.db")) as db:
        rows = {
            r[0]: {
                "status": r[1],
                "key": r[2],
                "cost": Decimal(str(r[3])) if r[3] is not None else Decimal(0),
                "classifier_cost": Decimal(str(r[4])) if r[4] is not None else Decimal(0),
                "usage_flags": json.loads(r[5] or "[]"),
                "error_type": r[6],
            }
            for r in db.execute(
                "SELECT request_id, status, key_name, cost_usd, classifier_cost_usd,"
                " usage_flags, error_type FROM requests"
            )
        }
        gaps = [
            {"dropped": r[0], "reason": r[1], "request_id": r[2]}
            for r in db.execute("SELECT dropped, reason, request_id FROM ledger_gaps")
        ]
        integrity = str(db.execute("PRAGMA integrity_check").fetchone()[0])
    return {"rows": rows, "gaps": gaps, "integrity": integrity}


@dataclass
class Row:
    attack: str
    bound: str
    measured: str
    passed: bool


def _pct(part: int, whole: int) -> str:
    return f"{100 * part / whole:.1f}%" if whole else "n/a"


def which(records: list[Record]) -> str:
    """Which attacks (and dialects) ``records`` came from, known bugs named."""
    found = Counter((r.case, r.marker, r.dialect) for r in records)
    return ", ".join(
        f"{case} ({dialect}) ×{n}" + (" [known bug]" if (mark, dialect) in KNOWN_BUGS else "")
        for (case, mark, dialect), n in found.most_common(4)
    )


def during(t: float, clients: Clients) -> str:
    """What was running at wall-clock ``t`` besides the mix: phases, hostile attacks."""
    names = [n for n, a, b in clients.phases if a <= t <= b and n not in ("mix", "hostile")]
    hostile = Counter(
        r.case
        for r in clients.records
        if r.group == "hostile" and r.started_at <= t <= r.started_at + r.seconds
    )
    parts = names + [f"{case} ×{n}" for case, n in hostile.most_common(3)]
    return ", ".join(parts) or "the mix alone"


def evaluate(
    scale: Scale,
    clients: Clients,
    ledger: dict[str, Any],
    monitor: dict[str, Any],
    metrics: dict[str, float],
    upstream: dict[str, Any],
    log: str,
    exit_code: int | None,
    workers: int,
    redis: bool = False,
) -> list[Row]:
    rows: list[Row] = []
    records = clients.records
    ledger_rows: dict[str, dict[str, Any]] = ledger["rows"]

    # (a) the mix
    mix = [r for r in records if r.group == "mix"]
    ok = sum(r.ok for r in mix)
    malformed = [r for r in mix if r.problem]
    injected = upstream.get("injected", {})
    rows.append(
        Row(
            f"fault-injection mix: {len(mix)} requests at concurrency {scale.mix_concurrency}, "
            f"{scale.fault_rate:.0%} of upstream attempts faulty",
            "every reply complete or a well-formed error in its dialect; no transport error",
            f"{len(mix) - len(malformed)}/{len(mix)} well formed, {ok} complete "
            f"({_pct(ok, len(mix))}); faults injected: {sum(injected.values())} "
            f"({', '.join(f'{k} {v}' for k, v in sorted(injected.items()))})"
            + (
                f"; problems: {Counter(r.problem for r in malformed).most_common(3)}"
                if malformed
                else ""
            ),
            not malformed and len(mix) == scale.mix_requests,
        )
    )

    # (b) each hostile attack
    for attack in attacks(scale):
        got = [r for r in records if r.group == "hostile" and r.case == attack.label]
        wrong = [
            r
            for r in got
            if r.problem
            or (attack.expect == "error" and r.ok)
            or (attack.expect == "ok" and not r.ok)
        ]
        disagree = [
            r
            for r in got
            if r.request_id in ledger_rows and (ledger_rows[r.request_id]["status"] == "ok") != r.ok
        ]
        flagged = sum(
            1
            for r in got
            if r.ok and r.request_id in ledger_rows and ledger_rows[r.request_id]["usage_flags"]
        )
        kinds = Counter(
            ("ok" if r.ok else f"{r.status} {r.error_type}") for r in got if not r.problem
        )
        measured = f"{len(got) - len(wrong)}/{len(got)} as bound: " + ", ".join(
            f"{k} ×{v}" for k, v in sorted(kinds.items())
        )
        if attack.case == "usage_huge":
            measured += f"; {flagged} rows flagged"
        if got:
            measured += (
                f"; reply ≤ {max(r.body_bytes for r in got):,} B, head ≤ "
                f"{max(r.head_bytes for r in got):,} B, ≤ {max(r.seconds for r in got):.1f} s"
            )
        if wrong:
            measured += f"; WRONG: {(wrong[0].status, wrong[0].problem, wrong[0].error_type)}"
        if disagree:
            measured += f"; ledger disagrees with the client on {len(disagree)}"
        passed = bool(got) and not wrong and not disagree
        if attack.case == "usage_huge":
            passed = passed and flagged == sum(r.ok for r in got)
        if attack.case == "huge_request_id":
            passed = passed and all(r.head_bytes < 16_384 for r in got)
        rows.append(Row(f"upstream: {attack.label}", attack.bound, measured, passed))

    burst = [r for r in records if r.group == "burst"]
    burst_wrong = [r for r in burst if r.problem or r.ok]
    span = next(((a, b) for n, a, b in clients.phases if n == "memory burst"), None)
    during_burst = [
        mb for t, mb in monitor.get("rss_timeline", []) if span and span[0] <= t <= span[1] + 1
    ]
    rows.append(
        Row(
            f"upstream: {scale.memory_burst} gzip bombs and {scale.memory_burst} "
            f"{_mb(SIZES[scale.name].long_line)} SSE lines at once",
            "well-formed errors; the gateway's RSS < "
            f"{scale.rss_bound_mb:.0f} MB (each reply is bounded: 32 MiB decoded, 16 MiB "
            "per event)",
            f"{len(burst) - len(burst_wrong)}/{len(burst)} errors as bound "
            f"({dict(Counter(f'{r.status} {r.error_type}' for r in burst))}); RSS sampled "
            f"during the burst ≤ {max(during_burst, default=0):.0f} MB"
            + (" (largest process)" if workers > 1 else ""),
            bool(burst) and not burst_wrong and max(during_burst, default=0) < scale.rss_bound_mb,
        )
    )

    # (c) floods
    anon = clients.anonymous
    anonymous_rows = [rid for rid, row in ledger_rows.items() if row["key"] not in KEY_NAMES]
    rows.append(
        Row(
            f"anonymous flood: {anon['sent']} requests without a key or with a wrong one",
            "401, then 429 past auth_failures_per_minute; well-formed; no ledger row",
            f"statuses {anon['statuses']}; {anon['problem_count']} malformed; "
            f"{len(anonymous_rows)} ledger rows without a key; transport errors "
            f"{anon['transport_errors'] or 0}",
            anon["problem_count"] == 0 and not anonymous_rows and not anon["transport_errors"],
        )
    )
    idle = clients.idle
    evicted = metrics.get('tierwise_client_connections_closed_total{reason="evicted"}', 0)
    cap = scale.max_connections or "default (ulimit -n)"
    rows.append(
        Row(
            f"idle-connection flood: {idle['waves']} wave(s) of {idle['sockets_per_wave']:,} "
            f"sockets (cap {cap})",
            "real requests keep being answered (the mix above); oldest idle evicted at the cap; "
            "all closed at header_timeout_s",
            f"{idle['opened']:,} opened, {idle['closed_by_server']:,} closed by the gateway "
            f"({int(evicted):,} evicted), peak {idle['peak_open_at_once']:,} open at once; "
            f"connect errors {idle['connect_errors'] or 0}",
            idle["opened"] > 0 and idle["closed_by_server"] == idle["opened"],
        )
    )
    slow = clients.slowloris
    rows.append(
        Row(
            f"slowloris: {scale.slowloris} connections dripping a head, replaced when closed",
            f"closed at header_timeout_s ({scale.header_timeout_s:g} s)",
            f"{slow['closed_by_server']}/{slow['connections']} closed by the gateway, after "
            f"{slow['lifetime_s_min']}–{slow['lifetime_s_max']} s; replies {slow['replies']}",
            slow["survived"] == 0 and slow["closed_by_server"] > 0,
        )
    )

    # (d) budgets
    for kind, budget in BUDGETS.items():
        got = [r for r in records if r.group == f"budget:{kind}"]
        spent = sum(
            (
                row["cost"] + row["classifier_cost"]
                for row in ledger_rows.values()
                if row["key"] == kind
            ),
            Decimal(0),
        )
        keyed = sum(1 for row in ledger_rows.values() if row["key"] == kind)
        statuses = Counter(r.status for r in got)
        wrong = [r for r in got if r.problem]
        refused = [r.error_message for r in got if r.status == 503]
        label = {
            "cjk": "CJK prompts billed one token per character",
            "liar": "upstream reporting 10^15 input / 10^9 output tokens (JSON and SSE)",
            "docs": "documents by URL",
        }[kind]
        rows.append(
            Row(
                f"budget: {len(got)} concurrent, {label}, ${budget} key",
                f"spend ≤ ${budget} (RELIABILITY.md, Budgets: never overspent); the others "
                "refused with 429 (budget), never 503 while "
                + ("Redis is up" if workers > 1 or redis else "the budgets are in process"),
                f"spent ${spent:.6f} over {keyed} rows; statuses {dict(statuses)}"
                + (f"; {len(wrong)} malformed" if wrong else "")
                + (f"; 503: {refused[0]}" if refused else ""),
                spent <= budget
                and not wrong
                and not refused
                and set(statuses) <= {200, 429}
                and len(got) == scale.budget_burst,
            )
        )

    # ledger == requests
    answered = [r for r in records if r.request_id]
    ids = {r.request_id for r in answered}
    gap_ids = {g["request_id"] for g in ledger["gaps"] if g["request_id"]}
    counted = sum(g["dropped"] for g in ledger["gaps"] if not g["request_id"])
    missing = ids - set(ledger_rows) - gap_ids
    extra = set(ledger_rows) - ids
    transport = [r for r in records if r.transport_error]
    no_id = [r for r in records if not r.request_id and not r.transport_error]
    rows.append(
        Row(
            "ledger after SIGTERM",
            "rows == requests answered; every missing row counted in ledger_gaps",
            f"{len(answered):,} answered, {len(ledger_rows):,} rows, "
            f"{len(gap_ids)} rejected + {counted} counted in ledger_gaps, {len(missing)} "
            f"missing, {len(extra)} rows without an answer; integrity {ledger['integrity']}"
            + (f"; {len(no_id)} replies without a request id" if no_id else ""),
            len(ids) == len(answered)
            and len(missing) <= counted
            and len(extra) <= len(transport)
            and ledger["integrity"] == "ok",
        )
    )
    disagree = [
        r
        for r in answered
        if r.request_id in ledger_rows and (ledger_rows[r.request_id]["status"] == "ok") != r.ok
    ]
    examples = [
        (r.case, r.status, r.error_type, ledger_rows[str(r.request_id)]["status"])
        for r in disagree[:3]
    ]
    rows.append(
        Row(
            "ledger status agrees with the client",
            "a row says ok exactly when the client got a complete answer",
            f"{len(answered) - len(disagree):,}/{len(answered):,} agree"
            + (f"; e.g. {examples}" if disagree else ""),
            not disagree,
        )
    )
    streams = [r for r in records if r.stream and r.status == 200]
    stream_bad = [r for r in streams if r.problem]
    rows.append(
        Row(
            "every stream's end",
            "message_stop / [DONE], or an error event",
            f"{len(streams) - len(stream_bad):,}/{len(streams):,}: "
            f"{sum(r.ok for r in streams):,} complete, "
            f"{sum(not r.ok and not r.problem for r in streams):,} error events"
            + (f"; the others: {which(stream_bad)}" if stream_bad else ""),
            not stream_bad,
        )
    )
    rows.append(
        Row(
            "client transport errors",
            "none (every request gets an HTTP answer)",
            f"{len(transport)}"
            + (
                f": {Counter(r.transport_error for r in transport).most_common(2)}, "
                f"in {which(transport)}"
                if transport
                else ""
            ),
            not transport,
        )
    )

    # the gateway's process
    peaks = monitor.get("peak_rss_mb_by_process", {})
    peak = max(peaks.values(), default=0.0)
    timeline = monitor.get("rss_timeline", [])
    top = max(timeline, key=lambda p: p[1], default=None)
    when = f", highest sample during {during(top[0], clients)}" if top else ""
    rows.append(
        Row(
            "gateway memory" + (f" ({workers} workers)" if workers > 1 else ""),
            f"RSS < {scale.rss_bound_mb:.0f} MB" + (" per process" if workers > 1 else ""),
            f"peak {peak:.0f} MB (VmHWM)"
            + (
                f"; all processes together ≤ {monitor.get('sampled_total_rss_mb')} MB sampled"
                if workers > 1
                else ""
            )
            + f"{when}; peak fds "
            + f"{max(monitor.get('peak_fds_by_process', {}).values(), default=0):,}",
            0 < peak < scale.rss_bound_mb,
        )
    )
    health = monitor.get("health_ms", {})
    control = monitor.get("control_ms") or {}
    load = monitor.get("loadavg_1min", {})
    slowest = sorted(monitor.get("health_slow", []), key=lambda p: -p[1])
    collections = monitor.get("gc", [])

    def collected(t: float, ms: float) -> str:
        """A full collection that ended while this /health answer was awaited."""
        pauses = [p for tt, gen, p in collections if gen == 2 and t <= tt <= t + ms / 1000 + 0.01]
        return f" (a {max(pauses):.0f} ms gen-2 GC pause in it)" if pauses else ""

    worst = (
        f"; over {scale.health_bound_ms:.0f} ms: "
        + ", ".join(
            f"{ms:.0f} ms during {during(t, clients)}{collected(t, ms)}" for t, ms in slowest[:3]
        )
        if slowest and slowest[0][1] >= scale.health_bound_ms
        else ""
    )
    rows.append(
        Row(
            "/health polled every 50 ms throughout",
            f"every answer within {scale.health_bound_ms:.0f} ms",
            f"n {health.get('n')}, p50 {health.get('p50')} ms, p99 {health.get('p99')} ms, "
            f"max {health.get('max')} ms ({health.get('over_100ms')} over 100 ms), statuses "
            f"{monitor.get('health_statuses')}; control server p50 {control.get('p50')} / p99 "
            f"{control.get('p99')} / max {control.get('max')} ms; load average "
            f"{load.get('start')} → max {load.get('max')} ({os.cpu_count()} cores){worst}"
            + (
                f"; gen-2 GC pauses: {len(full)}, longest {max(full):.0f} ms"
                if (full := [p for _, gen, p in collections if gen == 2])
                else ""
            )
            + _stalls(monitor.get("loop_stalls")),
            bool(health.get("n"))
            and (health.get("max") or 1e9) < scale.health_bound_ms
            and not monitor.get("health_failures"),
        )
    )
    unhandled = [line for line in log.splitlines() if any(u in line for u in UNHANDLED)]
    errors = [line for line in log.splitlines() if line.startswith("ERROR")]
    raised = Counter(
        line for line in log.splitlines() if re.match(r"^[A-Za-z_.]+(Error|Exception): ", line)
    )
    where = Counter(
        line.split("unhandled error in ", 1)[1] for line in errors if "unhandled error in " in line
    )
    rows.append(
        Row(
            "gateway log",
            "no unhandled exception",
            f"{len(unhandled)} unhandled-error lines, {len(errors)} ERROR lines"
            + (f"; raised: {dict(raised.most_common(3))}" if raised else "")
            + (f"; in: {dict(where)}" if where else ""),
            not unhandled,
        )
    )
    rows.append(
        Row(
            "SIGTERM at the end",
            "exits cleanly within 60 s",
            f"exit status {exit_code}",
            exit_code in (0, -signal.SIGTERM),
        )
    )
    return rows


KEY_NAMES = {"load", "ops", *BUDGETS}


def run(
    scale: Scale,
    *,
    workers: int = 1,
    redis_url: str | None = None,
    seed: int = 7,
    skip_known_bugs: bool = False,
    gc_probe: bool = False,
) -> dict[str, Any]:
    """One run of the suite at ``scale``; ``gc_probe``: time the gateway's garbage
    collections (tests/gcprobe) and line them up with slow /health answers."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = scale.idle_sockets + scale.slowloris + scale.budget_burst + 2048
    if soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(need, hard), hard))
    prefix = f"tierwise-chaos-{uuid.uuid4().hex[:8]}:"
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        keys = make_keys(home)
        upstream = start_helper(
            "tests.chaos_upstream",
            "--scale",
            scale.name,
            "--rate",
            str(scale.fault_rate),
            "--seed",
            str(seed),
            "--slow-s",
            str(scale.attempt_timeout_s + 0.5),
            log=home / "upstream.log",
        )
        control = start_helper("tests.chaos_monitor", "control", log=home / "control.log")
        gateway: subprocess.Popen[bytes] | None = None
        monitor: subprocess.Popen[bytes] | None = None
        try:
            gateway, port, log_path = start_gateway(
                home,
                upstream.port,
                gateway_config(scale, redis_url, prefix),
                workers,
                gc_probe=gc_probe,
            )
            monitor = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "tests.chaos_monitor",
                    "watch",
                    "--port",
                    str(port),
                    "--pid",
                    str(gateway.pid),
                    "--control-port",
                    str(control.port),
                ],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                cwd=ROOT,
            )
            started = time.monotonic()
            clients = asyncio.run(drive(port, keys, scale, seed, skip_known_bugs))
            base = f"http://127.0.0.1:{port}"
            metrics = asyncio.run(scrape_metrics(base, keys["admin"]))
            stats = asyncio.run(upstream_stats(upstream.port))
            out, _ = monitor.communicate(b"stop\n", timeout=60)
            watched = json.loads(out)
            gateway.send_signal(signal.SIGTERM)
            try:
                exit_code: int | None = gateway.wait(timeout=60)
            except subprocess.TimeoutExpired:
                exit_code = None
                gateway.kill()
                gateway.wait()
            seconds = time.monotonic() - started
            log = log_path.read_text(errors="replace")
            keep = os.environ.get("CHAOS_KEEP_LOG")  # a path: keep the gateway's log there
            if keep:
                Path(keep).write_text(log)
            ledger = read_ledger(home)
            watched["gc"] = [
                [float(t), int(gen), float(ms)]
                for probe in home.glob("gc.*")
                for t, gen, ms in (line.split() for line in probe.read_text().splitlines())
            ]
            watched["loop_stalls"] = [  # tests/gcprobe: turns of the loop over 50 ms
                json.loads(line)
                for probe in home.glob("gc-loop.*")
                for line in probe.read_text().splitlines()
            ]
        finally:
            for proc in (monitor, gateway):
                if proc is not None and proc.poll() is None:
                    proc.kill()
                    proc.wait()
            stop_helper(upstream)
            stop_helper(control)
            if redis_url:
                from tests.dbs import delete_redis_prefix

                delete_redis_prefix(redis_url, prefix)
    rows = evaluate(
        scale, clients, ledger, watched, metrics, stats, log, exit_code, workers, bool(redis_url)
    )
    return {
        "scale": scale.name,
        "workers": workers,
        "redis": bool(redis_url),
        "known_bugs": "skipped" if skip_known_bugs else "sent",
        "seconds": round(seconds, 1),
        "passed": all(r.passed for r in rows),
        "rows": [asdict(r) for r in rows],
        "clients": {
            "seconds": clients.seconds,
            "records": len(clients.records),
            "anonymous": clients.anonymous,
            "idle": clients.idle,
            "slowloris": clients.slowloris,
        },
        "mix_complete_by_kind": mix_by_kind(clients.records),
        "problems": [asdict(r) for r in clients.records if r.problem or r.transport_error][:50],
        "monitor": watched,
        "metrics": metrics,
        "upstream": stats,
        "ledger": {
            "rows": len(ledger["rows"]),
            "gaps": ledger["gaps"][:20],
            "statuses": dict(Counter(r["status"] for r in ledger["rows"].values())),
        },
        "log_tail": log.splitlines()[-20:],
    }


def mix_by_kind(records: list[Record]) -> dict[str, str]:
    """Share of complete answers in the mix: ``auto`` or a forced tier, streaming or not."""
    kinds: dict[str, list[bool]] = {}
    for r in records:
        if r.group == "mix":
            routed = "auto" if r.case == "auto" else "forced"
            kinds.setdefault(f"{routed}, {'stream' if r.stream else 'json'}", []).append(r.ok)
    kinds["all"] = [r.ok for r in records if r.group == "mix"]
    return {k: f"{100 * sum(v) / len(v):.1f}% of {len(v)}" for k, v in sorted(kinds.items())}


def table(rows: list[dict[str, Any]], width: int = 160) -> str:
    a, b, r = 44, 40, 6
    m = width - a - b - r - 9
    out = [f"{'attack':<{a}} | {'bound':<{b}} | {'measured':<{m}} | result", "-" * width]
    for row in rows:
        cols = [
            textwrap.wrap(row["attack"], a) or [""],
            textwrap.wrap(row["bound"], b) or [""],
            textwrap.wrap(row["measured"], m) or [""],
            ["pass" if row["passed"] else "FAIL"],
        ]
        for i in range(max(len(c) for c in cols)):
            parts = [c[i] if i < len(c) else "" for c in cols]
            out.append(f"{parts[0]:<{a}} | {parts[1]:<{b}} | {parts[2]:<{m}} | {parts[3]}")
    return "\n".join(out)


def markdown(rows: list[dict[str, Any]]) -> str:
    out = ["| Attack | Bound | Measured | |", "|---|---|---|---|"]
    for row in rows:
        cells = [
            row["attack"],
            row["bound"],
            row["measured"],
            "pass" if row["passed"] else "**FAIL**",
        ]
        out.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--scale", choices=sorted(SCALES), default="full")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument(
        "--redis-url", default=None, help="budgets in Redis (needed for --workers > 1)"
    )
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--json", type=Path, default=None, help="write the whole result here")
    parser.add_argument("--markdown", action="store_true", help="also print a Markdown table")
    parser.add_argument(
        "--skip-known-bugs", action="store_true", help="leave out the attacks in KNOWN_BUGS"
    )
    parser.add_argument(
        "--gc-probe",
        action="store_true",
        help="time the gateway's garbage collections (tests/gcprobe/sitecustomize.py)",
    )
    args = parser.parse_args(argv)
    result = run(
        SCALES[args.scale],
        workers=args.workers,
        redis_url=args.redis_url,
        seed=args.seed,
        skip_known_bugs=args.skip_known_bugs,
        gc_probe=args.gc_probe,
    )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2, default=str))
    print(table(result["rows"]))
    if args.markdown:
        print()
        print(markdown(result["rows"]))
    failed = [r["attack"] for r in result["rows"] if not r["passed"]]
    print(
        f"\n{args.scale} run, {args.workers} worker(s){' + Redis' if args.redis_url else ''}: "
        f"{result['seconds']} s; "
        + ("every bound held" if not failed else f"{len(failed)} bound(s) FAILED: {failed}")
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

"""Fault-injection load: mixed requests through a real `tierwise serve` in front of the fake
upstream that fails a share of attempts. Its requests and reply checks are part (a) of the
hostile suite (tests/hostile_chaos.py, `make chaos`); its load drives the crash tests of
tests/test_chaos.py; alone: `python -m tests.chaos --requests 5000 --concurrency 64`.

Every client request must end in a complete response or a well-formed error in its dialect;
every stream must end with message_stop / [DONE] or an error event; the gateway must log no
unhandled exception; after a graceful stop the ledger holds exactly one row per request.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from tests.fakes.anthropic_server import FakeAnthropic

TIERWISE = str(Path(sys.executable).parent / "tierwise")
PROMPTS = [
    ("Format this record as JSON: name Ann, age 31", ""),
    ("Write a Python function that merges two sorted lists.", ""),
    ("Review this distributed architecture for race conditions.", "You are a principal architect."),
    ("Translate 'good morning' into French.", ""),
]
MODELS = ["auto", "auto", "haiku", "sonnet", "opus"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Gateway:
    proc: subprocess.Popen[bytes]
    base_url: str
    home: Path
    stderr_path: Path

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")


def start_gateway(
    fake: FakeAnthropic,
    home: Path,
    *,
    port: int | None = None,
    extra_toml: str = "",
    extra_env: dict[str, str] | None = None,
) -> Gateway:
    home.mkdir(parents=True, exist_ok=True)
    config = home / "config.toml"
    config.write_text(
        "[gateway]\nattempt_timeout_s = 0.5\nretry_after_cap_s = 0.05\ncooldown_s = 0.5\n"
        "upstream_timeout_s = 20\n" + extra_toml
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANTHROPIC_", "TIERWISE_"))}
    env |= {
        "TIERWISE_HOME": str(home),
        "ANTHROPIC_API_KEY": fake.api_key,
        "ANTHROPIC_BASE_URL": fake.base_url,
        **(extra_env or {}),
    }
    port = port or free_port()
    stderr_path = home / f"serve-{port}-{time.monotonic_ns()}.log"
    proc = subprocess.Popen(
        [TIERWISE, "serve", "--port", str(port), "--config", str(config), "--log-level", "info"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=stderr_path.open("wb"),
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"gateway exited: {stderr_path.read_text()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return Gateway(proc, base, home, stderr_path)
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("gateway did not start")


def stop_gateway(gw: Gateway, sig: int = signal.SIGTERM, timeout_s: float = 60) -> int:
    gw.proc.send_signal(sig)
    return gw.proc.wait(timeout=timeout_s)


@dataclass
class Outcome:
    index: int
    dialect: str
    stream: bool
    model: str
    status: int
    ok: bool
    problem: str | None = None  # set when the reply was NOT well formed
    error_type: str | None = None
    request_id: str | None = None


def _request(i: int) -> tuple[str, bool, str, dict[str, Any]]:
    dialect = "anthropic" if i % 2 == 0 else "openai"
    stream = i % 3 == 0
    model = MODELS[i % len(MODELS)]
    prompt, system = PROMPTS[i % len(PROMPTS)]
    if dialect == "anthropic":
        body: dict[str, Any] = {
            "model": model,
            "max_tokens": 300,
            "messages": [{"role": "user", "content": prompt}],
        }
        if system:
            body["system"] = system
    else:
        messages = ([{"role": "system", "content": system}] if system else []) + [
            {"role": "user", "content": prompt}
        ]
        body = {"model": model, "max_tokens": 300, "messages": messages}
        if stream:
            body["stream_options"] = {"include_usage": True}
    if stream:
        body["stream"] = True
    return dialect, stream, model, body


def _events(raw: bytes) -> list[tuple[str | None, str]]:
    out = []
    # SSE ends lines with CRLF, LF or a lone CR (a CR-only stream relayed as-is is valid)
    for block in raw.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n\n"):
        if not block.strip():
            continue
        name, data = None, []
        for line in block.split(b"\n"):
            if line.startswith(b"event:"):
                name = line[6:].strip().decode()
            elif line.startswith(b"data:"):
                data.append(line[5:].strip().decode())
        out.append((name, "\n".join(data)))
    return out


def check(
    dialect: str, stream: bool, status: int, ctype: str, raw: bytes
) -> tuple[bool, str | None, str | None]:
    """(ok, problem, error_type): problem is set when the reply is not well formed."""
    if status >= 400 or not stream:
        try:
            data = json.loads(raw)
        except ValueError:
            return False, f"status {status} body is not JSON", None
        if status >= 400:
            if dialect == "anthropic":
                good = data.get("type") == "error" and {"type", "message"} <= set(
                    data.get("error", {})
                )
            else:
                good = {"message", "type", "param", "code"} <= set(data.get("error", {}))
            kind = (
                data.get("error", {}).get("type")
                if dialect == "anthropic"
                else data.get("error", {}).get("code")
            )
            return False, None if good else f"bad error shape: {raw[:200]!r}", kind
        if dialect == "anthropic":
            good = (
                data.get("type") == "message"
                and isinstance(data.get("content"), list)
                and "usage" in data
            )
        else:
            good = data.get("object") == "chat.completion" and bool(data.get("choices"))
        return good, None if good else f"bad success body: {raw[:200]!r}", None
    if "text/event-stream" not in ctype:
        return False, f"stream with content-type {ctype}", None
    events = _events(raw)
    if not events:
        return False, "empty stream", None
    last_name, last_data = events[-1]
    if dialect == "anthropic":
        for name, data in events:
            if name is None:
                return False, "event without a name", None
            try:
                obj = json.loads(data)
            except ValueError:
                return False, f"{name} data is not JSON", None
            if obj.get("type") != name:
                return False, f"{name} data type mismatch", None
        if last_name == "message_stop":
            return True, None, None
        if last_name == "error":
            return False, None, json.loads(last_data)["error"]["type"]
        return False, f"stream ended with {last_name} (no message_stop, no error)", None
    datas = [d for _, d in events]
    chunks = []
    for data in datas[:-1] if datas[-1] == "[DONE]" else datas:
        try:
            chunks.append(json.loads(data))
        except ValueError:
            return False, "a chunk is not JSON", None
    errors = [c for c in chunks if isinstance(c, dict) and "error" in c]
    if errors:  # an error chunk ends the stream (a [DONE] after it changes nothing)
        if errors[0] is not chunks[-1]:
            return False, "chunks after an error chunk", None
        return False, None, errors[0]["error"].get("code")
    if datas[-1] != "[DONE]":
        return False, "stream ended without [DONE] or an error chunk", None
    finished = any(choice.get("finish_reason") for c in chunks for choice in c.get("choices") or [])
    if not finished:
        return False, "[DONE] without a finish_reason", None
    return True, None, None


async def one(session: aiohttp.ClientSession, base: str, i: int) -> Outcome:
    dialect, stream, model, body = _request(i)
    path = "/v1/messages" if dialect == "anthropic" else "/v1/chat/completions"
    headers = {"content-type": "application/json", "anthropic-version": "2023-06-01"}
    async with session.post(base + path, data=json.dumps(body), headers=headers) as response:
        raw = await response.read()
        ok, problem, kind = check(
            dialect, stream, response.status, response.headers.get("content-type", ""), raw
        )
        return Outcome(
            i,
            dialect,
            stream,
            model,
            response.status,
            ok,
            problem,
            kind,
            response.headers.get("x-tierwise-request-id"),
        )


@dataclass
class LoadReport:
    sent: int = 0
    outcomes: list[Outcome] = field(default_factory=list)
    transport_errors: Counter[str] = field(default_factory=Counter)

    @property
    def answered(self) -> int:
        return len(self.outcomes)

    @property
    def malformed(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.problem is not None]

    def _by_kind(self) -> dict[str, float]:
        kinds: dict[str, list[bool]] = {}
        for o in self.outcomes:
            routed = "auto" if o.model == "auto" else "forced"
            kinds.setdefault(f"{routed}, {'stream' if o.stream else 'json'}", []).append(o.ok)
        return {k: round(sum(v) / len(v), 3) for k, v in sorted(kinds.items())}

    def summary(self) -> dict[str, Any]:
        ok = sum(1 for o in self.outcomes if o.ok)
        return {
            "sent": self.sent,
            "answered": self.answered,
            "ok": ok,
            "success_rate": round(ok / self.answered, 4) if self.answered else 0.0,
            "success_by_kind": self._by_kind(),
            "errors_by_type": dict(Counter(o.error_type for o in self.outcomes if not o.ok)),
            "malformed": len(self.malformed),
            "transport_errors": dict(self.transport_errors),
        }


async def load(
    base: str, requests: int, concurrency: int, *, stop_after_s: float | None = None
) -> LoadReport:
    report = LoadReport()
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(requests):
        queue.put_nowait(i)
    deadline = time.monotonic() + (stop_after_s or 3600)
    timeout = aiohttp.ClientTimeout(total=60)

    async def worker(session: aiohttp.ClientSession) -> None:
        while not queue.empty() and time.monotonic() < deadline:
            i = queue.get_nowait()
            report.sent += 1
            try:
                report.outcomes.append(await one(session, base, i))
            except (TimeoutError, aiohttp.ClientError) as exc:
                report.transport_errors[type(exc).__name__] += 1

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
    return report


def ledger_rows(home: Path) -> list[tuple[str, str]]:
    with sqlite3.connect(home / "tierwise.db") as db:
        return [(r[0], r[1]) for r in db.execute("SELECT request_id, status FROM requests")]


def integrity(home: Path) -> str:
    with sqlite3.connect(home / "tierwise.db") as db:
        return str(db.execute("PRAGMA integrity_check").fetchone()[0])


UNHANDLED = ("Traceback", "unhandled error", "Exception in ASGI application")


def run(requests: int, concurrency: int, rate: float, seed: int = 7) -> dict[str, Any]:
    with FakeAnthropic() as fake, tempfile.TemporaryDirectory() as tmp:
        fake.chaos(rate, seed=seed, slow_s=1.0)
        gw = start_gateway(fake, Path(tmp))
        started = time.monotonic()
        report = asyncio.run(load(gw.base_url, requests, concurrency))
        elapsed = time.monotonic() - started
        code = stop_gateway(gw)
        rows = ledger_rows(gw.home)
        log = gw.stderr()
        return {
            **report.summary(),
            "seconds": round(elapsed, 2),
            "requests_per_s": round(report.answered / elapsed, 1),
            "injected": dict(fake.chaos_counts),
            "ledger_rows": len(rows),
            "ledger_unique": len({r for r, _ in rows}),
            "exit_code": code,
            "unhandled": [line for line in log.splitlines() if any(u in line for u in UNHANDLED)],
            "malformed_examples": [o.problem for o in report.malformed[:5]],
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--rate", type=float, default=0.25)
    args = parser.parse_args()
    result = run(args.requests, args.concurrency, args.rate)
    print(json.dumps(result, indent=2))
    good = (
        not result["malformed"]
        and not result["unhandled"]
        and not result["transport_errors"]
        and result["ledger_rows"] == result["ledger_unique"] == result["sent"]
    )
    sys.exit(0 if good else 1)


if __name__ == "__main__":
    main()

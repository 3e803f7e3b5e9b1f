"""Client floods at full size against `tierwise serve` (the small versions run in `make test`,
tests/test_client_floods.py): idle TCP connections up to and past the file descriptor limit,
slowloris heads, then real requests.

    .venv/bin/python -m tests.floods --sockets 19990 --slowloris 200

Prints one JSON object: the server's peak RSS and open descriptors, /health latency sampled
during the flood, how many real requests succeeded during and after it, and the gateway's
connection counters. Exits 1 when a real request failed or the RSS passed --max-rss-mb.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import select
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx2 as httpx

from tests.fakes.anthropic_server import FakeAnthropic

TIERWISE = str(Path(sys.executable).parent / "tierwise")
MSG = {"model": "auto", "max_tokens": 20, "messages": [{"role": "user", "content": "hi"}]}


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS"):
            return int(line.split()[1]) / 1024
    return 0.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sockets", type=int, default=19_990, help="idle connections to open")
    parser.add_argument("--slowloris", type=int, default=200, help="connections dripping a head")
    parser.add_argument("--fd-limit", type=int, default=None, help="the server's ulimit -n")
    parser.add_argument("--max-rss-mb", type=float, default=400.0)
    args = parser.parse_args(argv)
    need = min(args.sockets, 12_000) + args.slowloris + 256
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(need, hard), hard))

    def server_limit() -> None:
        if args.fd_limit:
            resource.setrlimit(resource.RLIMIT_NOFILE, (args.fd_limit, hard))

    with FakeAnthropic() as fake, tempfile.TemporaryDirectory() as home:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("ANTHROPIC_", "TIERWISE_"))}
        env |= {
            "TIERWISE_HOME": home,
            "ANTHROPIC_API_KEY": fake.api_key,
            "ANTHROPIC_BASE_URL": fake.base_url,
        }
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        proc = subprocess.Popen(
            [TIERWISE, "serve", "--port", str(port)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=server_limit,  # noqa: PLW1509 - only sets a resource limit
        )
        base = f"http://127.0.0.1:{port}"
        try:
            result = flood(proc.pid, base, port, args)
        finally:
            proc.terminate()
            proc.wait(timeout=60)
    print(json.dumps(result, indent=2))
    failed = result["real_requests_ok"] < result["real_requests"]
    return 1 if failed or result["peak_rss_mb"] > args.max_rss_mb else 0


def reap(socks: list[socket.socket]) -> list[socket.socket]:
    """Close the sockets the server has closed; return the others."""
    poller = select.poll()
    by_fd = {s.fileno(): s for s in socks}
    for fd in by_fd:
        poller.register(fd, select.POLLIN)
    for fd, _ in poller.poll(0):
        by_fd.pop(fd).close()
    return list(by_fd.values())


def flood(pid: int, base: str, port: int, args: argparse.Namespace) -> dict[str, Any]:
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(base + "/health", timeout=0.5).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError("the gateway did not start")
        time.sleep(0.05)
    client = httpx.Client(base_url=base, timeout=30)
    socks: list[socket.socket] = []
    health_ms: list[float] = []
    peak_rss = peak_fds = 0.0
    real = ok = 0
    started = time.monotonic()
    for i in range(args.sockets):
        socks.append(socket.create_connection(("127.0.0.1", port)))
        if i % 500 == 0:
            socks = reap(socks)  # the ones the gateway closed (this process's fds are finite)
            t = time.perf_counter()
            client.get("/health")
            health_ms.append((time.perf_counter() - t) * 1000)
            real += 1
            ok += client.post("/v1/messages", json=MSG).status_code == 200
            peak_rss = max(peak_rss, rss_mb(pid))
            peak_fds = max(peak_fds, len(os.listdir(f"/proc/{pid}/fd")))
    opened_s = time.monotonic() - started
    held = len(reap(socks))
    drips = [socket.create_connection(("127.0.0.1", port)) for _ in range(args.slowloris)]
    for s in drips:
        s.sendall(b"POST /v1/messages HTTP/1.1\r\nHost: x\r\n")
    for _ in range(30):  # a header byte a second from each, for 30 s
        for s in list(drips):
            try:
                s.sendall(b"a")
            except OSError:
                drips.remove(s)
        t = time.perf_counter()
        client.get("/health")
        health_ms.append((time.perf_counter() - t) * 1000)
        peak_rss = max(peak_rss, rss_mb(pid))
        time.sleep(1)
    for _ in range(10):
        real += 1
        ok += client.post("/v1/messages", json=MSG).status_code == 200
    counters = {
        line.split(" ")[0]: float(line.split(" ")[1])
        for line in client.get("/metrics").text.splitlines()
        if line.startswith(("tierwise_client_connections", "tierwise_auth_failures_total"))
        and "_created" not in line
    }
    for s in socks:
        s.close()
    health_ms.sort()
    return {
        "sockets": args.sockets,
        "opened_in_s": round(opened_s, 1),
        "still_open_at_the_end_of_the_flood": held,
        "slowloris_still_open_after_30s": len(drips),
        "peak_rss_mb": round(peak_rss, 1),
        "peak_open_fds": int(peak_fds),
        "health_ms": {
            "n": len(health_ms),
            "p50": round(health_ms[len(health_ms) // 2], 1),
            "max": round(health_ms[-1], 1),
        },
        "real_requests": real,
        "real_requests_ok": ok,
        "counters": counters,
    }


if __name__ == "__main__":
    sys.exit(main())

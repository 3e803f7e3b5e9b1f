"""Watches a gateway from its own process while the hostile suite runs (tests/hostile_chaos.py):
``GET /health`` every ``--interval`` (50 ms) on a keep-alive connection, the gateway's RSS and
open file descriptors (the serve process and its workers) every ``--sample`` (250 ms), and the
machine's load average. The same requests to a trivial control server (``control``, another
process) measure what the machine itself adds: on a shared, loaded machine a slow /health is
only the gateway's fault when the control server stayed fast.

    python -m tests.chaos_monitor control            # prints "port <n>", answers 200 "ok"
    python -m tests.chaos_monitor watch --port P --pid PID --control-port C

``watch`` runs until its stdin closes or says anything, then prints one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import re
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any


def status_kb(pid: int, name: str) -> int:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    match = re.search(rf"^{name}:\s+(\d+) kB", text, re.MULTILINE)
    return int(match.group(1)) if match else 0


def process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants (uvicorn's supervisor and its worker processes)."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            parents[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
    tree, frontier = [pid], [pid]
    while frontier:
        children = [c for c, p in parents.items() if p in frontier]
        tree += children
        frontier = children
    return tree


def fd_count(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0


def loadavg() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


def summary_ms(values: list[float]) -> dict[str, Any]:
    if not values:
        return {"n": 0}
    ordered = sorted(values)

    def q(p: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(p * len(ordered)))], 1)

    return {
        "n": len(ordered),
        "p50": q(0.5),
        "p99": q(0.99),
        "max": round(ordered[-1], 1),
        "over_100ms": sum(1 for v in ordered if v > 100.0),
    }


class Poller(threading.Thread):
    """GET ``path`` every ``interval`` s on one keep-alive connection (reopened on failure)."""

    def __init__(self, port: int, path: str, interval: float, stop: threading.Event) -> None:
        super().__init__(daemon=True)
        self.port, self.path, self.interval, self.stop = port, path, interval, stop
        self.latencies_ms: list[float] = []
        self.statuses: Counter[str] = Counter()
        self.failures: list[str] = []
        self.worst_at: float = 0.0  # seconds since start of the slowest answer
        self.slow: list[tuple[float, float]] = []  # (wall-clock start, ms) of answers over 50 ms
        self.stale_retries = 0  # requests sent again after the server closed a kept-alive one

    def run(self) -> None:
        started_all = time.monotonic()
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        next_at = time.monotonic()
        while not self.stop.is_set():
            started = time.perf_counter()
            wall = time.time()
            for attempt in (1, 2):
                try:
                    connection.request("GET", self.path)
                    response = connection.getresponse()
                    response.read()
                    self.statuses[str(response.status)] += 1
                    break
                except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                    # The server may close an idle keep-alive connection at any moment (its
                    # idle timeout; at the connection cap the oldest idle one goes): a client
                    # sends its request again on a new connection, once, as urllib3 does.
                    connection.close()
                    if attempt == 1:
                        self.stale_retries += 1
                        continue
                    self.failures.append("closed twice in a row")
                    self.statuses["failed"] += 1
                except (OSError, http.client.HTTPException) as exc:
                    self.failures.append(f"{type(exc).__name__}: {exc}"[:200])
                    self.statuses["failed"] += 1
                    connection.close()
                    break
            elapsed = (time.perf_counter() - started) * 1000
            if not self.latencies_ms or elapsed > max(self.latencies_ms):
                self.worst_at = round(time.monotonic() - started_all, 1)
            self.latencies_ms.append(elapsed)
            if elapsed > 50.0 and len(self.slow) < 1000:
                self.slow.append((round(wall, 3), round(elapsed, 1)))
            next_at += self.interval
            self.stop.wait(max(0.0, next_at - time.monotonic()))
            next_at = max(next_at, time.monotonic() - self.interval)
        connection.close()


def watch(args: argparse.Namespace) -> dict[str, Any]:
    stop = threading.Event()
    health = Poller(args.port, "/health", args.interval, stop)
    control = Poller(args.control_port, "/", args.interval, stop) if args.control_port else None
    rss_mb: dict[int, float] = {}
    fds: dict[int, int] = {}
    total_rss = 0.0
    loads: list[float] = []
    rss_timeline: list[tuple[float, float]] = []  # (wall clock, MB of the largest process)

    def sample() -> None:
        nonlocal total_rss
        tree = process_tree(args.pid)
        while not stop.is_set():
            now_total = now_max = 0.0
            for pid in tree:
                rss = status_kb(pid, "VmRSS") / 1024
                now_total += rss
                now_max = max(now_max, rss)
                rss_mb[pid] = max(rss_mb.get(pid, 0.0), rss)
                fds[pid] = max(fds.get(pid, 0), fd_count(pid))
            total_rss = max(total_rss, now_total)
            rss_timeline.append((round(time.time(), 2), round(now_max, 1)))
            loads.append(loadavg())
            stop.wait(args.sample)
            if len(tree) == 1 and len(loads) % 20 == 0:  # workers may start after their parent
                tree = process_tree(args.pid)

    sampler = threading.Thread(target=sample, daemon=True)
    started = time.monotonic()
    for thread in (health, control, sampler):
        if thread is not None:
            thread.start()
    sys.stdin.readline()
    tree = process_tree(args.pid)
    peaks = {pid: round(status_kb(pid, "VmHWM") / 1024, 1) for pid in tree}
    stop.set()
    for thread in (health, control, sampler):
        if thread is not None:
            thread.join(30)
    return {
        "seconds": round(time.monotonic() - started, 1),
        "health_ms": summary_ms(health.latencies_ms),
        "health_worst_at_s": health.worst_at,
        "health_statuses": dict(health.statuses),
        "health_failures": health.failures[:10],
        "health_stale_retries": health.stale_retries,
        "health_slow": health.slow,
        "control_slow": control.slow if control else [],
        "rss_timeline": rss_timeline,
        "control_ms": summary_ms(control.latencies_ms) if control else None,
        "peak_rss_mb_by_process": peaks,  # VmHWM: the true peak of each process
        "sampled_rss_mb_by_process": {p: round(v, 1) for p, v in rss_mb.items()},
        "sampled_total_rss_mb": round(total_rss, 1),
        "peak_fds_by_process": fds,
        "loadavg_1min": {
            "start": loads[0] if loads else None,
            "max": max(loads) if loads else None,
            "mean": round(sum(loads) / len(loads), 2) if loads else None,
        },
    }


async def control_server() -> None:
    reply = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-type: text/plain\r\n\r\nok"

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while await reader.readuntil(b"\r\n\r\n"):
                writer.write(reply)
                await writer.drain()
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    print(f"port {server.sockets[0].getsockname()[1]}", flush=True)
    loop = asyncio.get_running_loop()
    done = asyncio.Event()
    stdin = sys.stdin.fileno()
    loop.add_reader(stdin, lambda: None if os.read(stdin, 64) else done.set())
    await done.wait()
    server.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("control", help="a trivial HTTP server (the machine's own latency)")
    w = sub.add_parser("watch", help="poll /health and sample the gateway's processes")
    w.add_argument("--port", type=int, required=True)
    w.add_argument("--pid", type=int, required=True)
    w.add_argument("--control-port", type=int, default=0)
    w.add_argument("--interval", type=float, default=0.05)
    w.add_argument("--sample", type=float, default=0.25)
    args = parser.parse_args(argv)
    if args.command == "control":
        asyncio.run(control_server())
    else:
        print(json.dumps(watch(args)), flush=True)


if __name__ == "__main__":
    main()

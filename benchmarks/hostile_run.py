"""Full-size hostile-upstream attacks against a real ``tierwise serve`` process: the gateway's
peak RSS and ``/health`` latency while each attack runs, and what the client got.

    python benchmarks/hostile_run.py                    # every attack, full size
    python benchmarks/hostile_run.py --only gzip_bomb   # one of them
    python benchmarks/hostile_run.py --concurrency 12   # 12 of each attack at once

The malicious upstream is :mod:`tests.fakes.hostile_upstream` (in this process, a thread);
the gateway is a separate ``tierwise serve`` process (default settings, one worker) pointed at
it, so its RSS (``VmHWM`` of its process, reset before each attack) is its own. ``/health`` is
polled every 20 ms from another thread during each attack. One JSON object on stdout.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.fakes.hostile_upstream import HostileUpstream, MiB  # noqa: E402

# (name, behaviour, parameters, stream)
ATTACKS: list[tuple[str, str, dict[str, Any], bool]] = [
    ("gzip bomb, 1 GiB decoded, JSON", "gzip_bomb", {"decoded_bytes": 1024 * MiB}, False),
    ("gzip bomb, 1 GiB decoded, SSE", "gzip_bomb", {"decoded_bytes": 1024 * MiB}, True),
    ("200 MB of response headers", "huge_headers", {"total_bytes": 200_000_000}, False),
    ("8 MB request-id header", "huge_header", {"value_bytes": 8_000_000}, False),
    ("50 MB SSE line", "long_line", {"line_bytes": 50_000_000}, True),
    ("endless stream (upstream_timeout_s 5)", "endless", {"interval_s": 0.005}, True),
    ("normal reply (control)", "normal", {}, False),
    ("normal stream (control)", "normal", {}, True),
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def status_kb(pid: int, field: str) -> int:
    text = Path(f"/proc/{pid}/status").read_text()
    match = re.search(rf"^{field}:\s+(\d+) kB", text, re.MULTILINE)
    return int(match.group(1)) if match else 0


def post(port: int, stream: bool, timeout_s: float) -> dict[str, Any]:
    """One Messages request; what came back (status, bytes, an error event?), bounded."""
    body = json.dumps(
        {
            "model": "claude-haiku-4-5",
            "max_tokens": 50,
            "stream": stream,
            "messages": [{"role": "user", "content": "hi"}],
        }
    ).encode()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout_s)
    started = time.monotonic()
    try:
        connection.request("POST", "/v1/messages", body, {"content-type": "application/json"})
        response = connection.getresponse()
        received, tail = 0, b""
        while time.monotonic() - started < timeout_s:
            piece = response.read1(65536) if stream else response.read(65536)
            if not piece:
                break
            received += len(piece)
            tail = (tail + piece)[-400:]
        else:
            return {"status": response.status, "outcome": f"still running after {timeout_s}s"}
        error = re.search(rb'"error":\{"type":"([a-z_]+)"', tail)
        return {
            "status": response.status,
            "bytes": received,
            "error_type": error.group(1).decode() if error else None,
            "seconds": round(time.monotonic() - started, 3),
        }
    except (OSError, http.client.HTTPException) as exc:
        return {"outcome": f"{type(exc).__name__}: {exc}"[:200]}
    finally:
        connection.close()


_POLL = """
import http.client, json, sys, threading, time
port = int(sys.argv[1])
stop = threading.Event()
threading.Thread(target=lambda: (sys.stdin.readline(), stop.set()), daemon=True).start()
latencies = []
connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
while not stop.is_set():
    started = time.perf_counter()
    try:
        connection.request("GET", "/health")
        connection.getresponse().read()
    except (OSError, http.client.HTTPException):
        connection.close()
    latencies.append(time.perf_counter() - started)
    stop.wait(0.02)
print(json.dumps(latencies))
"""


def attack(
    upstream: HostileUpstream,
    pid: int,
    port: int,
    behaviour: str,
    params: dict[str, Any],
    stream: bool,
    concurrency: int = 1,
) -> dict[str, Any]:
    upstream.set_default(behaviour, **params)
    baseline = status_kb(pid, "VmRSS")
    Path(f"/proc/{pid}/clear_refs").write_text("5")
    # The poller is its own process: in this one it would wait for the GIL behind the client
    # and the fake upstream, and measure them instead of the gateway.
    poller = subprocess.Popen(  # noqa: S603 - this interpreter, fixed code
        [sys.executable, "-c", _POLL, str(port)], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    time.sleep(0.1)
    with ThreadPoolExecutor(concurrency) as pool:
        replies = list(pool.map(lambda _: post(port, stream, timeout_s=60), range(concurrency)))
    reply = replies[0] if concurrency == 1 else {"replies": replies}
    out, _ = poller.communicate(b"stop\n", timeout=120)
    latencies = json.loads(out)
    ordered = sorted(latencies)
    return {
        "reply": reply,
        "health_p50_ms": round(1000 * ordered[len(ordered) // 2], 1) if ordered else None,
        "health_max_ms": round(1000 * ordered[-1], 1) if ordered else None,
        "health_samples": len(ordered),
        "rss_before_mb": round(baseline / 1024, 1),
        "rss_peak_mb": round(status_kb(pid, "VmHWM") / 1024, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", help="run only the attacks whose behaviour is this")
    parser.add_argument(
        "--concurrency", type=int, default=1, help="requests at once per attack (default 1)"
    )
    args = parser.parse_args()
    port = free_port()
    results: dict[str, Any] = {}
    with HostileUpstream() as upstream, tempfile.TemporaryDirectory() as home:
        config = Path(home) / "config.toml"
        config.write_text("[gateway]\nupstream_timeout_s = 5.0\nattempt_timeout_s = 5.0\n")
        env = {
            **os.environ,
            "TIERWISE_HOME": home,
            "ANTHROPIC_API_KEY": "sk-ant-hostile",
            "ANTHROPIC_BASE_URL": upstream.base_url,
        }
        server = subprocess.Popen(  # noqa: S603 - our own CLI, fixed arguments
            [
                str(Path(sys.executable).parent / "tierwise"),
                "serve",
                "--port",
                str(port),
                "--config",
                str(config),
            ],
            env=env,
        )
        try:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                try:
                    with socket.create_connection(("127.0.0.1", port), timeout=1):
                        break
                except OSError:
                    time.sleep(0.1)
            for name, behaviour, params, stream in ATTACKS:
                if args.only and behaviour != args.only:
                    continue
                results[name] = attack(
                    upstream, server.pid, port, behaviour, params, stream, args.concurrency
                )
                print(name, json.dumps(results[name]), file=sys.stderr, flush=True)
        finally:
            server.terminate()
            server.wait(30)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()

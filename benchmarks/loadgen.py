"""Load generation for the benchmarks: a precise concurrency-1 client, and wrk for throughput.

``LatencyClient`` is a blocking keep-alive HTTP/1.1 client on a raw socket with httptools'
response parser: it times each request from the first byte sent to the first body byte
(time to first byte) and to the end of the response, with nothing else in the way, so the
difference between two targets measured with it is what the gateway adds.
"""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httptools
import orjson


def request_bytes(port: int, path: str, body: dict[str, Any]) -> bytes:
    payload = orjson.dumps(body)
    head = (
        f"POST {path} HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\ncontent-type: application/json\r\n"
        f"anthropic-version: 2023-06-01\r\nx-api-key: sk-bench-client\r\n"
        f"content-length: {len(payload)}\r\n\r\n"
    )
    return head.encode() + payload


class LatencyClient:
    def __init__(self, port: int, timeout_s: float = 30.0) -> None:
        self.port = port
        self.timeout_s = timeout_s
        self.sock: socket.socket | None = None
        self._parser = httptools.HttpResponseParser(self)
        self._now = 0.0
        self._first: float | None = None
        self._done = False
        self._body: list[bytes] = []

    # httptools callbacks
    def on_message_begin(self) -> None:
        self._first = None
        self._done = False
        self._body = []

    def on_body(self, body: bytes) -> None:
        if self._first is None:
            self._first = self._now
        self._body.append(body)

    def on_message_complete(self) -> None:
        self._done = True

    def _connect(self) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=self.timeout_s)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._parser = httptools.HttpResponseParser(self)
        return sock

    def request(self, raw: bytes) -> tuple[int, float, float, bytes]:
        """(status, seconds to the first body byte, seconds to the end, body)."""
        if self.sock is None:
            self.sock = self._connect()
        sock = self.sock
        clock = time.perf_counter
        t0 = clock()
        sock.sendall(raw)
        self._done = False
        deadline = t0 + self.timeout_s
        while not self._done:
            data = sock.recv(262144)  # each recv is bounded by the socket's timeout
            self._now = clock()
            if self._now > deadline:
                self.close()
                raise TimeoutError(f"no complete response within {self.timeout_s:g}s")
            if not data:
                self.close()
                raise ConnectionError("server closed the connection")
            self._parser.feed_data(data)
        end = self._now
        status = self._parser.get_status_code()
        if not self._parser.should_keep_alive():
            self.close()
        first = self._first if self._first is not None else end
        return status, first - t0, end - t0, b"".join(self._body)

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None


@dataclass
class LatencyRun:
    ttfb_s: list[float] = field(default_factory=list)
    total_s: list[float] = field(default_factory=list)
    errors: int = 0


def measure_latency(
    port: int, raw: bytes, *, warmup: int, count: int, budget_s: float
) -> LatencyRun:
    """``warmup`` untimed requests, then up to ``count`` timed ones within ``budget_s``."""
    client = LatencyClient(port)
    run = LatencyRun()
    deadline = time.monotonic() + budget_s
    try:
        for i in range(warmup + count):
            if time.monotonic() > deadline:
                break
            try:
                status, ttfb, total, _ = client.request(raw)
            except (OSError, httptools.HttpParserError):
                run.errors += 1
                client.close()
                continue
            if status != 200:
                run.errors += 1
                continue
            if i >= warmup:
                run.ttfb_s.append(ttfb)
                run.total_s.append(total)
    finally:
        client.close()
    return run


# -- wrk --------------------------------------------------------------------------------------


def ensure_wrk() -> str:
    """wrk from Debian, installed if missing (the benchmarks run as root on these machines)."""
    found = shutil.which("wrk")
    if found:
        return found
    print("wrk not found: installing it with apt-get", flush=True)
    subprocess.run(["apt-get", "update", "-qq"], check=True, timeout=600)
    subprocess.run(
        ["apt-get", "install", "-y", "-qq", "wrk"],
        check=True,
        timeout=600,
        env={"DEBIAN_FRONTEND": "noninteractive", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
    )
    found = shutil.which("wrk")
    if not found:
        raise RuntimeError("wrk is still missing after apt-get install wrk")
    return found


def write_lua(path: Path, body: dict[str, Any]) -> Path:
    payload = orjson.dumps(body).decode()
    lua = (
        'wrk.method = "POST"\n'
        f"wrk.body = [==[{payload}]==]\n"
        'wrk.headers["content-type"] = "application/json"\n'
        'wrk.headers["anthropic-version"] = "2023-06-01"\n'
        'wrk.headers["x-api-key"] = "sk-bench-client"\n'
    )
    path.write_text(lua)
    return path


@dataclass
class WrkResult:
    requests: int
    seconds: float
    rps: float
    non_2xx: int
    socket_errors: int
    p50_ms: float | None
    p99_ms: float | None
    raw: str


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


def _ms(text: str) -> float | None:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text.strip())
    return float(m.group(1)) * _UNITS[m.group(2)] if m else None


def run_wrk(
    wrk: str, url: str, lua: Path, *, connections: int, seconds: float, threads: int = 1
) -> WrkResult:
    cmd = [
        wrk,
        f"-t{threads}",
        f"-c{connections}",
        f"-d{max(1, round(seconds))}s",
        "--timeout",
        "10s",
        "--latency",
        "-s",
        str(lua),
        url,
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60).stdout
    m = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m)", out)
    requests = int(m.group(1)) if m else 0
    elapsed = (_ms(m.group(2) + m.group(3)) or 0.0) / 1000 if m else seconds
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    p50 = re.search(r"^\s+50%\s+(\S+)", out, re.M)
    p99 = re.search(r"^\s+99%\s+(\S+)", out, re.M)
    return WrkResult(
        requests=requests,
        seconds=elapsed,
        rps=requests / elapsed if elapsed else 0.0,
        non_2xx=int(non2xx.group(1)) if non2xx else 0,
        socket_errors=sum(int(x) for x in sock.groups()) if sock else 0,
        p50_ms=_ms(p50.group(1)) if p50 else None,
        p99_ms=_ms(p99.group(1)) if p99 else None,
        raw=out,
    )

"""The long-stream benchmark: C concurrent SSE streams of N events over T seconds each, through
one ``tierwise serve`` worker, through LiteLLM's proxy (one worker), through a bare relay that
only copies bytes (``floor_relay.py``: what any Python relay on uvloop costs on this machine)
and directly against the upstream, all in the same run (issue 16).

    make bench-streams                     # full: C = 500, 2,000, 5,000; N=200 over T=20 s; 3 runs
    make bench-streams QUICK=1             # C = 200, N=50 over 5 s, one run (about a minute)
    python benchmarks/longstream.py --streams 1000 --runs 1 --targets direct,tierwise
    python benchmarks/longstream.py --targets direct,tierwise --ref 5bc09a1 --out X.json
                                           # the gateway as of a commit, this harness
    python benchmarks/longstream.py client --port 9100 --streams 500   # the client alone

How it measures (see BENCHMARKS.md, "Long streams"):

- The upstream is ``benchmarks/fake_upstream.py --stream-events N --stream-seconds T``: every
  text delta carries the upstream's CLOCK_MONOTONIC send time (ns) in its text. The client
  (this module, ``client`` subcommand: asyncio + uvloop, one ``asyncio.Protocol`` and one
  httptools parser per stream, no task per stream) reads the marker of every delta as it
  arrives and records ``receive time - send time``: the event's transit time through
  whatever is between them (nothing, tierwise or LiteLLM) plus the client's own reading.
- Added delay per event = a percentile of that transit time through a gateway minus the same
  percentile of the direct run at the same C in the same run (the direct run has the same
  upstream, client, scheduling and machine; only the gateway is missing). So the direct run
  measures the instrument (client + upstream + kernel), and the difference is what the
  gateway adds. The direct run is made twice at each C, before and after the gateways, and
  the lower of the two is the reference (per percentile): the machine is shared, and a
  stall caused by another tenant must not be credited to a gateway.
- Time to first byte: from the start of the TCP connect to the first byte of the response
  (status line), per stream.
- The gateway's process (and its children) is sampled every 0.25 s from /proc: resident
  memory (peak = max of the samples and of VmHWM), open file descriptors, CPU time
  (utime + stime); streams start spread evenly over a ramp (``--ramp``), so that all C are
  open at once for T - ramp seconds.

Every child process is started in its own session and killed at the end (also on error or
Ctrl-C); ports are free ports chosen at run time; results are written after every phase to
``.bench/longstream.partial.json`` so that a crash keeps what was measured. Only 127.0.0.1 is
contacted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httptools

sys.path.insert(0, str(Path(__file__).resolve().parent))

import procs

ROOT = Path(__file__).resolve().parent.parent
MARK = re.compile(rb"\[t:(\d{19})\]")
MARK_MAX = 24  # len("[t:" + 19 digits + "]"): a marker cut by a read is kept for the next one
STOP = b"message_stop"
ERROR_EVENT = re.compile(rb"event: ?error|\"type\": ?\"error\"")


def raise_nofile() -> tuple[int, int]:
    """Soft RLIMIT_NOFILE up to the hard limit; returns the limits now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


# -- the client --------------------------------------------------------------------------------


class Stream(asyncio.Protocol):
    """One streamed request on its own connection. Work per read: one httptools feed, one
    regular-expression scan of the new body bytes, one subtraction per event."""

    __slots__ = (
        "body",
        "complete",
        "done",
        "error_text",
        "events",
        "outcome",
        "parser",
        "request",
        "sink",
        "status",
        "stopped",
        "t_connected",
        "t_first_byte",
        "t_start",
        "tail",
        "transport",
    )

    def __init__(self, request: bytes, t_start: int, sink: list[int], done: Any) -> None:
        self.request = request
        self.t_start = t_start
        self.t_connected = 0
        self.t_first_byte = 0
        self.status = 0
        self.tail = b""
        self.body: list[bytes] = []
        self.events = 0
        self.stopped = False
        self.error_text = b""
        self.complete = False
        self.outcome = ""
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.sink = sink
        self.done = done

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.t_connected = time.monotonic_ns()
        self.transport = transport  # type: ignore[assignment]
        transport.write(self.request)  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        now = time.monotonic_ns()
        if not self.t_first_byte:
            self.t_first_byte = now
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self.finish(f"bad_http: {type(exc).__name__}")
            return
        body = self.body
        if body:
            buf = (
                self.tail + b"".join(body)
                if self.tail
                else b"".join(body)
                if len(body) > 1
                else body[0]
            )
            body.clear()
            marks = MARK.findall(buf)
            if marks:
                append = self.sink.append
                for mark in marks:
                    append(now - int(mark))
                self.events += len(marks)
                rest = buf[buf.rindex(b"]") + 1 :]
            else:
                rest = buf
            if b"error" in buf and not self.error_text and ERROR_EVENT.search(buf):
                self.error_text = buf[:300]
            if not self.stopped and STOP in buf:
                self.stopped = True
            self.tail = rest[-MARK_MAX:] if len(rest) > MARK_MAX else rest
        if self.complete:
            self.finish("")

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.outcome:
            if exc is None:
                self.finish("closed_early" if self.t_first_byte else "closed_no_response")
            else:
                where = (
                    "mid_stream"
                    if self.events
                    else "no_response"
                    if not self.t_first_byte
                    else "no_event"
                )
                self.finish(f"{type(exc).__name__}_{where}")

    # httptools callbacks
    def on_status(self, status: bytes) -> None:
        self.status = self.parser.get_status_code()

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        self.complete = True

    def finish(self, failure: str) -> None:
        if self.outcome:
            return
        if failure:
            self.outcome = failure
        elif self.status != 200:
            self.outcome = f"http_{self.status}"
        elif self.error_text:
            self.outcome = "error_event"
        elif not self.stopped:
            self.outcome = "no_message_stop"
        else:
            self.outcome = "completed"
        if self.transport is not None:
            self.transport.close()
        self.done(self)


def _request(port: int, model: str, max_tokens: int) -> bytes:
    import orjson

    body = orjson.dumps(
        {
            "model": model,
            "max_tokens": max_tokens,
            "stream": True,
            "messages": [
                {
                    "role": "user",
                    "content": "Explain in a few paragraphs why streamed answers matter "
                    "for a gateway that sits in front of a language model.",
                }
            ],
        }
    )
    head = (
        f"POST /v1/messages HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\n"
        "content-type: application/json\r\nanthropic-version: 2023-06-01\r\n"
        f"x-api-key: sk-bench-client\r\naccept: text/event-stream\r\n"
        f"content-length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def percentiles(values: list[int], scale: float) -> dict[str, float | None]:
    """p50/p90/p99/p99.9/max/mean of integer nanoseconds, in ``scale`` units."""
    if not values:
        return dict.fromkeys(("p50", "p90", "p99", "p999", "max", "mean"))
    ordered = sorted(values)
    n = len(ordered)

    def q(p: float) -> float:
        return ordered[max(0, min(n - 1, round(p / 100 * n + 0.5) - 1))] / scale

    return {
        "p50": q(50),
        "p90": q(90),
        "p99": q(99),
        "p999": q(99.9),
        "max": ordered[-1] / scale,
        "mean": statistics.fmean(ordered) / scale,
    }


async def run_client(
    port: int,
    streams: int,
    events: int,
    seconds: float,
    ramp_s: float,
    grace_s: float,
    model: str,
) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    request = _request(port, model, 4096)
    delays: list[int] = []
    finished: list[Stream] = []
    open_now = 0
    max_open = 0
    connect_errors: dict[str, int] = {}
    all_done = loop.create_future()
    live: set[Stream] = set()
    expected = events - 6

    def done(stream: Stream) -> None:
        nonlocal open_now
        live.discard(stream)
        open_now -= 1
        finished.append(stream)
        if len(finished) + sum(connect_errors.values()) >= streams and not all_done.done():
            all_done.set_result(None)

    async def open_one(i: int) -> None:
        nonlocal open_now, max_open
        stream = Stream(request, time.monotonic_ns(), delays, done)
        live.add(stream)
        open_now += 1
        max_open = max(max_open, open_now)
        try:
            await loop.create_connection(lambda: stream, "127.0.0.1", port)
        except OSError as exc:
            live.discard(stream)
            open_now -= 1
            name = f"connect_{type(exc).__name__}"
            connect_errors[name] = connect_errors.get(name, 0) + 1
            if len(finished) + sum(connect_errors.values()) >= streams and not all_done.done():
                all_done.set_result(None)

    ru0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = loop.time()
    step = ramp_s / streams if streams > 1 else 0.0
    pending: list[asyncio.TimerHandle] = []
    for i in range(streams):
        pending.append(loop.call_at(t0 + i * step, lambda i=i: loop.create_task(open_one(i))))
    deadline = ramp_s + seconds + grace_s
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.shield(all_done), deadline)
    for handle in pending:
        handle.cancel()
    never_started = streams - len(finished) - len(live) - sum(connect_errors.values())
    for stream in list(live):  # still open at the deadline: where had each one got to?
        if not stream.t_first_byte:
            stream.finish("timeout_no_response")
        elif not stream.events:
            stream.finish("timeout_no_event")
        else:
            stream.finish("timeout_mid_stream")
    wall = loop.time() - t0
    ru1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
    outcomes: dict[str, int] = dict(connect_errors)
    if never_started > 0:
        outcomes["not_started"] = never_started
    short = 0
    for s in finished:
        outcomes[s.outcome] = outcomes.get(s.outcome, 0) + 1
        if s.outcome == "completed" and s.events != expected:
            short += 1
    ttfb = [s.t_first_byte - s.t_start for s in finished if s.t_first_byte]
    connect = [s.t_connected - s.t_start for s in finished if s.t_connected]
    reply = [s.t_first_byte - s.t_connected for s in finished if s.t_first_byte and s.t_connected]
    samples = [
        s.error_text.decode("utf-8", "replace")
        for s in finished
        if s.error_text and s.outcome != "completed"
    ][:3]
    return {
        "streams": streams,
        "completed": outcomes.get("completed", 0),
        "outcomes": outcomes,
        "completed_with_missing_events": short,
        "events_expected_per_stream": expected,
        "events_received": len(delays),
        "max_open": max_open,
        "wall_s": wall,
        "client_cpu_s": cpu,
        "client_us_per_event": 1e6 * cpu / len(delays) if delays else None,
        "transit_ms": percentiles(delays, 1e6),
        "ttfb_ms": percentiles(ttfb, 1e6),
        "connect_ms": percentiles(connect, 1e6),
        "request_to_first_byte_ms": percentiles(reply, 1e6),
        "error_samples": samples,
    }


def client_main(args: argparse.Namespace) -> None:
    limits = raise_nofile()
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvicorn[standard] brings it
        runner = asyncio.run
    else:
        runner = uvloop.run
    res = runner(
        run_client(
            args.port, args.streams, args.events, args.seconds, args.ramp, args.grace, args.model
        )
    )
    res["nofile"] = list(limits)
    text = json.dumps(res)
    if args.out:
        Path(args.out).write_text(text)
    print(text)


# -- the orchestrator --------------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    streams: tuple[int, ...]
    events: int
    seconds: float
    ramp_s: float
    grace_s: float
    runs: int


FULL = Plan((500, 2000, 5000), 200, 20.0, 5.0, 30.0, 3)
QUICK = Plan((200,), 50, 5.0, 1.0, 10.0, 1)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def loadavg() -> list[float]:
    return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]


def fd_count(pids: list[int]) -> int:
    total = 0
    for p in pids:
        with contextlib.suppress(OSError):
            total += len(os.listdir(f"/proc/{p}/fd"))
    return total


_LISTEN_KEYS = ("ListenOverflows", "ListenDrops", "TCPAbortOnData", "TCPAbortOnClose")


def tcp_counters() -> dict[str, int]:
    """System-wide TcpExt counters (listen-queue overflows, aborts) from /proc/net/netstat."""
    lines = Path("/proc/net/netstat").read_text().splitlines()
    for head, values in zip(lines[::2], lines[1::2], strict=False):
        if head.startswith("TcpExt:"):
            table = dict(zip(head.split()[1:], (int(v) for v in values.split()[1:]), strict=False))
            return {k: table.get(k, 0) for k in _LISTEN_KEYS}
    return {}


def hwm_mb(pids: list[int]) -> float:
    total_kb = 0
    for p in pids:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    total_kb += int(line.split()[1])
                    break
    return total_kb / 1024


def accept_queue(port: int) -> int | None:
    """Connections waiting in the accept queue of the socket listening on ``port`` (``ss``'s
    Recv-Q of a LISTEN socket; the kernel filters, so this is cheap with 10,000 sockets)."""
    try:
        out = subprocess.run(
            ["ss", "-Hltn", f"sport = :{port}"], capture_output=True, text=True, timeout=5
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    fields = out.split()
    return int(fields[1]) if len(fields) > 1 and fields[1].isdigit() else None


class Sampler(threading.Thread):
    """Peak RSS and descriptors of a process tree every ``period`` seconds, and the accept
    queues of the given listening ports every second, until stopped."""

    def __init__(self, pid: int, ports: dict[str, int], period: float = 0.25) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.ports = ports
        self.period = period
        self.stop_flag = threading.Event()
        self.rss_peak = 0.0
        self.fd_peak = 0
        self.samples = 0
        self.accept_peak: dict[str, int] = {}

    def run(self) -> None:
        pids = procs.tree_pids(self.pid)
        refreshed = time.monotonic()
        while not self.stop_flag.is_set():
            if time.monotonic() - refreshed > 2.0:
                pids = procs.tree_pids(self.pid)
                refreshed = time.monotonic()
            self.rss_peak = max(self.rss_peak, procs.rss_mb(self.pid))
            self.fd_peak = max(self.fd_peak, fd_count(pids))
            if self.samples % max(1, round(1 / self.period)) == 0:
                for name, port in self.ports.items():
                    queued = accept_queue(port)
                    if queued is not None:
                        self.accept_peak[name] = max(self.accept_peak.get(name, 0), queued)
            self.samples += 1
            self.stop_flag.wait(self.period)

    def finish(self) -> None:
        self.stop_flag.set()
        self.join(5)


def start_upstream(stack: Any, plan: Plan) -> tuple[procs.Server, int]:
    import run

    port = procs.free_port()
    argv = [
        str(run.PY),
        str(ROOT / "benchmarks" / "fake_upstream.py"),
        "--port",
        str(port),
        "--stream-events",
        str(plan.events),
        "--stream-seconds",
        str(plan.seconds),
    ]
    server = stack.start("fake-upstream-long", argv, run.clean_env())
    health = b"GET /health HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"
    server.wait_ready(port, health, 30)
    return server, port


def start_floor(stack: Any, upstream_port: int) -> tuple[procs.Server, int, float]:
    """The bare relay (``benchmarks/floor_relay.py``) in front of the upstream."""
    import run

    port = procs.free_port()
    argv = [
        str(run.PY),
        str(Path(__file__).resolve().parent / "floor_relay.py"),
        "--port",
        str(port),
        "--upstream-port",
        str(upstream_port),
    ]
    server = stack.start("floor-relay", argv, run.clean_env())
    health = b"GET /health HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"
    startup = server.wait_ready(port, health, 30)
    return server, port, startup


def warm_up(port: int, count: int = 20) -> None:
    """A few non-streaming requests (the probe body) so that lazy imports and caches are done
    before the idle memory is read."""
    import run

    for _ in range(count):
        procs._answers_200(port, run.probe(port))


def one_phase(
    target: str,
    streams: int,
    plan: Plan,
    stack: Any,
    upstream: procs.Server,
    upstream_port: int,
    litellm: Path | None,
    workdir: Path,
) -> dict[str, Any]:
    import run

    server: procs.Server | None = None
    out: dict[str, Any] = {"target": target, "streams": streams, "load_before": loadavg()}
    try:
        if target == "direct":
            port, pid, model = upstream_port, upstream.pid, run.PINNED
        elif target == "tierwise":
            server, port, startup = run.start_tierwise(stack, upstream_port)
            pid, model = server.pid, "auto"
            out["startup_s"] = startup
        elif target == "litellm":
            assert litellm is not None
            server, port, startup = run.start_litellm(stack, litellm, upstream_port)
            pid, model = server.pid, "auto"
            out["startup_s"] = startup
        elif target == "floor":
            server, port, startup = start_floor(stack, upstream_port)
            pid, model = server.pid, run.PINNED
            out["startup_s"] = startup
        else:
            raise ValueError(f"unknown target {target!r}")
        if server is not None:
            warm_up(port)
            time.sleep(0.5)
        pids = procs.tree_pids(pid)
        out["rss_idle_mb"] = procs.rss_mb(pid)
        out["fds_idle"] = fd_count(pids)
        cpu0 = procs.cpu_seconds(pid)
        up_cpu0 = procs.cpu_seconds(upstream.pid)
        tcp0 = tcp_counters()
        ports = (
            {"target": port} if target == "direct" else {"target": port, "upstream": upstream_port}
        )
        sampler = Sampler(pid, ports)
        sampler.start()
        result_file = workdir / f"client-{target}-{streams}.json"
        argv = [
            str(run.PY),
            str(Path(__file__).resolve()),
            "client",
            "--port",
            str(port),
            "--streams",
            str(streams),
            "--events",
            str(plan.events),
            "--seconds",
            str(plan.seconds),
            "--ramp",
            str(plan.ramp_s),
            "--grace",
            str(plan.grace_s),
            "--model",
            model,
            "--out",
            str(result_file),
        ]
        budget = plan.ramp_s + plan.seconds + plan.grace_s + 60
        client = stack.start(f"client-{target}-{streams}", argv, run.clean_env())
        try:
            client.proc.wait(budget)
        except subprocess.TimeoutExpired:
            out["client_error"] = f"client still running after {budget:.0f}s: killed"
        finally:
            sampler.finish()
            stack.stop(client)
        out["cpu_s"] = procs.cpu_seconds(pid) - cpu0
        out["tcp"] = {k: v - tcp0.get(k, 0) for k, v in tcp_counters().items()}
        out["upstream_cpu_s"] = procs.cpu_seconds(upstream.pid) - up_cpu0
        out["rss_peak_mb"] = max(sampler.rss_peak, hwm_mb(procs.tree_pids(pid)))
        out["rss_sampled_peak_mb"] = sampler.rss_peak
        out["fds_peak"] = sampler.fd_peak
        out["accept_queue_peak"] = sampler.accept_peak
        out["rss_end_mb"] = procs.rss_mb(pid)
        out["load_after"] = loadavg()
        if result_file.exists():
            out["client"] = json.loads(result_file.read_text())
        elif "client_error" not in out:
            out["client_error"] = f"client exited {client.proc.returncode}; see {client.log}"
        if server is not None and server.proc.poll() is not None:
            out["server_exit"] = server.proc.returncode
    finally:
        if server is not None:
            stack.stop(server)
            cl = out.get("client") or {}
            if cl.get("completed") != streams:  # keep the gateway's last words
                with contextlib.suppress(OSError):
                    lines = server.log.read_text(errors="replace").splitlines()
                    out["log_tail"] = [line[:300] for line in lines[-15:]]
    c = out.get("client") or {}
    if c:
        opened = max(1, c.get("max_open") or 1)
        out["rss_per_stream_kb"] = (
            1024 * (out["rss_peak_mb"] - out["rss_idle_mb"]) / opened
            if target != "direct"
            else None
        )
        out["cpu_ms_per_stream"] = 1000 * out["cpu_s"] / streams
        ev = c.get("events_received") or 0
        out["cpu_us_per_event"] = 1e6 * out["cpu_s"] / ev if ev else None
        out["upstream_us_per_event"] = 1e6 * out["upstream_cpu_s"] / ev if ev else None
    return out


def machine(litellm: Path | None) -> dict[str, Any]:
    import run

    m = run.machine()
    m["litellm"] = run.litellm_version(litellm) if litellm else None
    m["nofile"] = list(resource.getrlimit(resource.RLIMIT_NOFILE))
    # the gateway's code (the harness may be newer): the last commit that touched it
    m["src_commit"] = subprocess.run(
        ["git", "log", "-1", "--format=%h", "--", "src", "pyproject.toml"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    ).stdout.strip()
    m["src_dirty"] = bool(
        subprocess.run(
            ["git", "status", "--porcelain", "--", "src", "pyproject.toml"],
            capture_output=True,
            text=True,
            cwd=ROOT,
        ).stdout.strip()
    )
    for key in ("net.core.somaxconn", "net.ipv4.ip_local_port_range", "net.ipv4.tcp_tw_reuse"):
        path = Path("/proc/sys") / key.replace(".", "/")
        with contextlib.suppress(OSError):
            m[key] = " ".join(path.read_text().split())
    return m


def orchestrate(args: argparse.Namespace) -> Path:
    import run

    plan = QUICK if args.quick else FULL
    if args.streams:
        plan = Plan(
            tuple(int(x) for x in args.streams.split(",")),
            plan.events,
            plan.seconds,
            plan.ramp_s,
            plan.grace_s,
            plan.runs,
        )
    if args.events or args.seconds or args.runs or args.ramp is not None:
        plan = Plan(
            plan.streams,
            args.events or plan.events,
            args.seconds or plan.seconds,
            plan.ramp_s if args.ramp is None else args.ramp,
            plan.grace_s,
            args.runs or plan.runs,
        )
    targets = [t for t in args.targets.split(",") if t]
    if args.ref:
        # tierwise phases run another commit's src/ (exported as for make bench-ab), with
        # this harness: a baseline measured with the same instrument as the results
        import ab

        os.environ["PYTHONPATH"] = str(ab.export(args.ref))
    limits = raise_nofile()  # inherited by every process started from here
    need = 2 * max(plan.streams) + 200
    if limits[0] < need:
        log(
            f"warning: RLIMIT_NOFILE {limits[0]} < {need} needed by a gateway at C={max(plan.streams)}"
        )
    litellm = run.ensure_litellm() if "litellm" in targets else None
    run.BENCH.mkdir(parents=True, exist_ok=True)
    out_path = (
        Path(args.out)
        if args.out
        else (
            run.BENCH / "quick" / "longstream.json"
            if args.quick
            else run.RESULTS / "longstream.json"
        )
    )
    out_path.parent.mkdir(parents=True, exist_ok=True)
    partial = run.BENCH / "longstream.partial.json"
    meta = machine(litellm)
    meta["profile"] = "quick" if args.quick else "full"
    if args.ref:
        meta["src_commit"] = subprocess.run(
            ["git", "rev-parse", "--short", args.ref],
            capture_output=True,
            text=True,
            cwd=ROOT,
            check=True,
        ).stdout.strip()
        meta["src_dirty"] = False
    result: dict[str, Any] = {
        "machine": meta,
        "plan": plan.__dict__,
        "targets": targets,
        "label": args.label or "",
        "runs": [],
    }
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="streams-", dir=run.BENCH) as tmp:
        workdir = Path(tmp)
        for i in range(1, plan.runs + 1):
            run_out: dict[str, Any] = {"phases": []}
            result["runs"].append(run_out)
            stack = run.Stack(workdir)
            try:
                upstream, up_port = start_upstream(stack, plan)
                order = list(targets)
                if "direct" in order and len(order) > 1:
                    order.append("direct")  # again after the gateways: see report_streams
                for c in plan.streams:
                    for target in order:
                        log(f"run {i}/{plan.runs}: {target}, C={c} (load {loadavg()[0]:.2f})")
                        try:
                            phase = one_phase(
                                target, c, plan, stack, upstream, up_port, litellm, workdir
                            )
                        except (RuntimeError, OSError) as exc:  # a server that did not start
                            phase = {"target": target, "streams": c, "error": str(exc)}
                        run_out["phases"].append(phase)
                        cl = phase.get("client") or {}
                        log(
                            f"  {cl.get('completed', 0)}/{c} completed "
                            f"{cl.get('outcomes', phase.get('error') or phase.get('client_error'))}; "
                            f"transit p99 {(cl.get('transit_ms') or {}).get('p99')} ms; "
                            f"RSS peak {phase.get('rss_peak_mb', 0):.0f} MiB"
                        )
                        partial.write_text(json.dumps(result, indent=1))  # survives a crash
                        time.sleep(1.0)  # let sockets close before the next phase
            finally:
                stack.close()
    result["elapsed_s"] = time.monotonic() - started
    out_path.write_text(json.dumps(result, indent=1))
    log(f"done in {result['elapsed_s']:.0f}s: {out_path}")
    return out_path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    sub = parser.add_subparsers(dest="cmd")
    cl = sub.add_parser("client", help="the load generator alone (one target)")
    cl.add_argument("--port", type=int, required=True)
    cl.add_argument("--streams", type=int, default=500)
    cl.add_argument("--events", type=int, default=200)
    cl.add_argument("--seconds", type=float, default=20.0)
    cl.add_argument("--ramp", type=float, default=5.0)
    cl.add_argument("--grace", type=float, default=30.0)
    cl.add_argument("--model", default="claude-haiku-4-5")
    cl.add_argument("--out")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--streams", help="comma-separated C values (default 500,2000,5000)")
    parser.add_argument("--events", type=int)
    parser.add_argument("--seconds", type=float)
    parser.add_argument("--ramp", type=float)
    parser.add_argument("--runs", type=int)
    parser.add_argument("--targets", default="direct,tierwise,litellm,floor")
    parser.add_argument(
        "--ref", help="run the tierwise phases with the src/ of this commit (a baseline)"
    )
    parser.add_argument("--out", help="results JSON (default benchmarks/results/longstream.json)")
    parser.add_argument("--label", help="stored with the results and shown above the table")
    parser.add_argument("--no-report", action="store_true")
    args = parser.parse_args(argv)
    if args.cmd == "client":
        client_main(args)
        return
    path = orchestrate(args)
    if not args.no_report:
        import report_streams

        md = path.with_suffix(".md")
        md.write_text(report_streams.render(json.loads(path.read_text())) + "\n")
        log(f"table: {md}")


if __name__ == "__main__":
    main()

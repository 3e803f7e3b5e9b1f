"""tierwise's benchmark suite: the gateway side by side with LiteLLM's proxy and a direct call,
all against the same fast fake Anthropic upstream (``benchmarks/fake_upstream.py``).

    make bench            # full: 3 runs, medians → BENCHMARKS.md, benchmarks/*.png, results/
    make bench QUICK=1    # one short run, a few minutes → .bench/quick/ (the committed files stay)
    make soak             # 100,000 requests through the gateway, RSS over time → BENCHMARKS.md
    make bench-streams    # only the long-stream benchmark (benchmarks/longstream.py), QUICK=1 too

Each run starts the fake upstream and then, one at a time (so each has the machine to itself
apart from the upstream and the load generator): the direct baseline, ``tierwise serve``
(ledger on, SQLite in a temporary ``TIERWISE_HOME``), LiteLLM's proxy (its own virtualenv in
``.bench/litellm-venv``, installed on first use) and ``tierwise serve --workers 2``. Every
loop is bounded in count and in time. Only 127.0.0.1 is contacted (plus PyPI/Debian when
LiteLLM or wrk must be installed).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import loadgen
import procs
import report

ROOT = Path(__file__).resolve().parent.parent
BENCH = Path(os.environ.get("TIERWISE_BENCH_DIR") or ROOT / ".bench")
RESULTS = ROOT / "benchmarks" / "results"
PY = Path(sys.executable)
TIERWISE = PY.parent / "tierwise"
LITELLM_SPEC = os.environ.get("LITELLM_SPEC", "litellm[proxy]==1.108.7")
PROMPTS = Path(
    os.environ.get(
        "TIERWISE_BENCH_PROMPTS", ROOT.parent / "shared/data/prompts/sharegpt_first_turns.jsonl"
    )
)
POSTGRES_URL = os.environ.get(
    "TIERWISE_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)

PROMPT = "Convert to JSON: name=Ann, age=31"
PINNED = "claude-haiku-4-5"


@dataclass(frozen=True)
class Profile:
    runs: int
    lat_count: int  # timed requests per scenario at concurrency 1 (direct, tierwise)
    lat_count_slow: int  # the same for LiteLLM
    wrk_s: float
    rss_requests: int  # requests served before resident memory is read (tierwise)
    litellm_rss_cap_s: float  # LiteLLM is too slow to reach rss_requests: bounded top-up
    ledger_rows: int
    classifier_passes: int
    soak_requests: int


FULL = Profile(3, 2000, 200, 10, 50_000, 90, 50_000, 3, 100_000)
QUICK = Profile(1, 300, 60, 4, 10_000, 15, 20_000, 1, 20_000)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def median(values: list[float]) -> float | None:
    vals = [v for v in values if v is not None]
    return statistics.median(vals) if vals else None


# -- the bodies --------------------------------------------------------------------------------


def body(model: str, stream: bool) -> dict[str, Any]:
    out: dict[str, Any] = {
        "model": model,
        "max_tokens": 64,
        "messages": [{"role": "user", "content": PROMPT}],
    }
    if stream:
        out["stream"] = True
    return out


SCENARIOS = {  # name → (model for gateways, stream)
    "auto": ("auto", False),
    "pinned": (PINNED, False),
    "auto_stream": ("auto", True),
    "pinned_stream": (PINNED, True),
}


def probe(port: int) -> bytes:
    raw = loadgen.request_bytes(port, "/v1/messages", body("auto", False))
    return raw.replace(b"\r\n\r\n", b"\r\nconnection: close\r\n\r\n", 1)


# -- set-up ------------------------------------------------------------------------------------


def ensure_litellm() -> Path:
    venv = BENCH / "litellm-venv"
    exe = venv / "bin" / "litellm"
    if exe.exists():
        return exe
    log(f"installing {LITELLM_SPEC} into {venv} (first run only)")
    base = shutil.which("python3") or sys.executable
    subprocess.run([base, "-m", "venv", str(venv)], check=True, timeout=300)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet"]
    subprocess.run([*pip, "--upgrade", "pip"], check=True, timeout=900)
    subprocess.run([*pip, LITELLM_SPEC], check=True, timeout=1800)
    return exe


def litellm_version(exe: Path) -> str:
    out = subprocess.run(
        [
            str(exe.parent / "python"),
            "-c",
            "import importlib.metadata as m; print(m.version('litellm'))",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    return out.stdout.strip() or "unknown"


def machine() -> dict[str, Any]:
    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem_kb = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            mem_kb = int(line.split()[1])
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT
    ).stdout.strip()
    # The long-stream benchmark alone does not use wrk (and does not install it): say so.
    exe = shutil.which("wrk")
    wrk = (
        subprocess.run([exe, "-v"], capture_output=True, text=True).stdout.split("\n")[0]
        if exe
        else "not installed"
    )
    return {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "ram_gib": round(mem_kb / 1024 / 1024, 1),
        "python": platform.python_version(),
        "kernel": platform.release(),
        "commit": commit,
        "wrk": wrk.strip(),
    }


def clean_env(**extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("ANTHROPIC_", "TIERWISE_", "LITELLM_", "OPENAI_"))
    }
    env.update(extra)
    return env


# -- servers -----------------------------------------------------------------------------------


class Stack:
    """The servers of one run; stops whatever it started."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.servers: list[procs.Server] = []

    def start(self, name: str, argv: list[str], env: dict[str, str]) -> procs.Server:
        server = procs.Server(name, argv, env, self.workdir / f"{name}.log", ROOT)
        self.servers.append(server)
        return server

    def stop(self, server: procs.Server) -> None:
        server.stop()
        if server in self.servers:
            self.servers.remove(server)

    def close(self) -> None:
        for server in reversed(self.servers):
            server.stop()
        self.servers.clear()


def start_fake(stack: Stack) -> int:
    port = procs.free_port()
    fake = stack.start(
        "fake-upstream",
        [str(PY), str(ROOT / "benchmarks" / "fake_upstream.py"), "--port", str(port)],
        clean_env(),
    )
    health = b"GET /health HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"
    fake.wait_ready(port, health, 30)
    return port


def start_tierwise(
    stack: Stack, upstream: int, workers: int = 1
) -> tuple[procs.Server, int, float]:
    port = procs.free_port()
    home = Path(tempfile.mkdtemp(prefix="tierwise-bench-", dir=stack.workdir))
    argv = [str(TIERWISE), "serve", "--port", str(port)]
    if workers > 1:
        argv += ["--workers", str(workers)]
    env = clean_env(
        ANTHROPIC_BASE_URL=f"http://127.0.0.1:{upstream}",
        ANTHROPIC_API_KEY="sk-bench-upstream",
        TIERWISE_HOME=str(home),
    )
    server = stack.start(f"tierwise-w{workers}", argv, env)
    startup = server.wait_ready(port, probe(port), 60)
    return server, port, startup


def start_litellm(stack: Stack, exe: Path, upstream: int) -> tuple[procs.Server, int, float]:
    port = procs.free_port()
    cfg = stack.workdir / "litellm.yaml"
    models = "".join(
        f"""  - model_name: {name}
    litellm_params:
      model: anthropic/{PINNED}
      api_base: http://127.0.0.1:{upstream}
      api_key: sk-bench-upstream
"""
        for name in ("auto", PINNED)
    )
    cfg.write_text(f"model_list:\n{models}litellm_settings:\n  telemetry: false\n")
    env = clean_env(
        LITELLM_DANGEROUSLY_PERMIT_WEAK_OR_UNSET_MASTER_KEY="true",
        LITELLM_LOCAL_MODEL_COST_MAP="True",
        LITELLM_LOG="ERROR",
        NO_PROXY="127.0.0.1,localhost",
    )
    argv = [str(exe), "--config", str(cfg), "--host", "127.0.0.1", "--port", str(port)]
    argv += ["--num_workers", "1"]
    server = stack.start("litellm", argv, env)
    startup = server.wait_ready(port, probe(port), 180)
    return server, port, startup


# -- measurements ------------------------------------------------------------------------------


def latency(port: int, count: int, *, direct: bool) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, (model, stream) in SCENARIOS.items():
        raw = loadgen.request_bytes(port, "/v1/messages", body(PINNED if direct else model, stream))
        run = loadgen.measure_latency(
            port, raw, warmup=max(20, count // 10), count=count, budget_s=120
        )
        values = run.ttfb_s if stream else run.total_s
        ms = [v * 1000 for v in values]
        out[name] = {
            "n": len(ms),
            "errors": run.errors,
            "p50_ms": report.percentile(ms, 50) if ms else None,
            "p99_ms": report.percentile(ms, 99) if ms else None,
            "metric": "ttfb" if stream else "total",
        }
    return out


def throughput(
    wrk: str, pid: int, port: int, workdir: Path, seconds: float, name: str
) -> dict[str, Any]:
    lua = loadgen.write_lua(
        workdir / f"{name}.lua", body(PINNED if name == "direct" else "auto", False)
    )
    out: dict[str, Any] = {}
    url = f"http://127.0.0.1:{port}/v1/messages"
    loadgen.run_wrk(wrk, url, lua, connections=32, seconds=1)  # warm-up
    for conns in (32, 64):
        cpu0 = procs.cpu_seconds(pid)
        res = loadgen.run_wrk(wrk, url, lua, connections=conns, seconds=seconds)
        cpu = procs.cpu_seconds(pid) - cpu0
        ok = res.requests - res.non_2xx
        out[f"c{conns}"] = {
            "rps": res.rps,
            "requests": res.requests,
            "non_2xx": res.non_2xx,
            "socket_errors": res.socket_errors,
            "p50_ms": res.p50_ms,
            "p99_ms": res.p99_ms,
            "cpu_s": cpu,
            "cpu_ms_per_req": 1000 * cpu / ok if ok else None,
            "cpu_util": cpu / res.seconds if res.seconds else None,
        }
    return out


def top_up(
    wrk: str, pid: int, port: int, workdir: Path, target: int, served: int, cap_s: float
) -> tuple[int, float]:
    """Drive the server with wrk (c=32) until it has served ``target`` requests (or ``cap_s``);
    returns (requests served in all, RSS MB)."""
    lua = loadgen.write_lua(workdir / "topup.lua", body("auto", False))
    url = f"http://127.0.0.1:{port}/v1/messages"
    deadline = time.monotonic() + cap_s
    for _ in range(200):
        if served >= target or time.monotonic() >= deadline:
            break
        res = loadgen.run_wrk(
            wrk, url, lua, connections=32, seconds=min(5, max(1, deadline - time.monotonic()))
        )
        served += res.requests
    time.sleep(1.0)  # let the ledger writer drain
    return served, procs.rss_mb(pid)


def served_so_far(lat: dict[str, Any], tput: dict[str, Any], count: int) -> int:
    warm = sum(max(20, count // 10) + v["n"] + v["errors"] for v in lat.values())
    return warm + sum(v["requests"] for v in tput.values()) + 1


def one_run(i: int, prof: Profile, wrk: str, litellm: Path | None, workdir: Path) -> dict[str, Any]:
    run: dict[str, Any] = {}
    stack = Stack(workdir)
    try:
        upstream = start_fake(stack)
        fake_pid = stack.servers[0].pid
        log(f"run {i}: direct (fake upstream on :{upstream})")
        run["direct"] = {
            "latency": latency(upstream, prof.lat_count, direct=True),
            "throughput": throughput(wrk, fake_pid, upstream, workdir, prof.wrk_s, "direct"),
        }

        log(f"run {i}: floor (bare uvicorn app, no upstream call)")
        port = procs.free_port()
        floor = stack.start(
            "floor",
            [
                str(PY.parent / "uvicorn"),
                "floor_app:app",
                "--app-dir",
                str(ROOT / "benchmarks"),
                "--port",
                str(port),
                "--loop",
                "uvloop",
                "--http",
                "httptools",
                "--log-level",
                "warning",
                "--no-access-log",
            ],
            clean_env(),
        )
        floor.wait_ready(port, probe(port), 30)
        run["floor"] = {
            "throughput": throughput(wrk, floor.pid, port, workdir, prof.wrk_s, "floor")
        }
        stack.stop(floor)

        log(f"run {i}: tierwise serve")
        server, port, startup = start_tierwise(stack, upstream)
        rss_start = procs.rss_mb(server.pid)
        lat = latency(port, prof.lat_count, direct=False)
        tput = throughput(wrk, server.pid, port, workdir, prof.wrk_s, "tierwise")
        served, rss = top_up(
            wrk,
            server.pid,
            port,
            workdir,
            prof.rss_requests,
            served_so_far(lat, tput, prof.lat_count),
            300,
        )
        run["tierwise"] = {
            "startup_s": startup,
            "rss_start_mb": rss_start,
            "rss_mb": rss,
            "rss_after_requests": served,
            "latency": lat,
            "throughput": tput,
        }
        stack.stop(server)

        if litellm is not None:
            log(f"run {i}: LiteLLM proxy")
            server, port, startup = start_litellm(stack, litellm, upstream)
            rss_start = procs.rss_mb(server.pid)
            lat = latency(port, prof.lat_count_slow, direct=False)
            tput = throughput(wrk, server.pid, port, workdir, prof.wrk_s, "litellm")
            served, rss = top_up(
                wrk,
                server.pid,
                port,
                workdir,
                prof.rss_requests,
                served_so_far(lat, tput, prof.lat_count_slow),
                prof.litellm_rss_cap_s,
            )
            run["litellm"] = {
                "startup_s": startup,
                "rss_start_mb": rss_start,
                "rss_mb": rss,
                "rss_after_requests": served,
                "latency": lat,
                "throughput": tput,
            }
            stack.stop(server)

        log(f"run {i}: tierwise serve --workers 2")
        server, port, startup = start_tierwise(stack, upstream, workers=2)
        time.sleep(1.0)  # both workers up (the probe reached one of them)
        run["tierwise_w2"] = {
            "startup_s": startup,
            "throughput": throughput(wrk, server.pid, port, workdir, prof.wrk_s, "tierwise_w2"),
            "rss_mb": procs.rss_mb(server.pid),
        }
        stack.stop(server)
    finally:
        stack.close()
    return run


def micro(cmd: list[str], timeout_s: float = 900) -> dict[str, Any]:
    out = subprocess.run(
        [str(PY), str(ROOT / "benchmarks" / "micro.py"), *cmd],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        env=clean_env(),
        cwd=ROOT,
    )
    if out.returncode != 0:
        return {"error": out.stderr.strip().splitlines()[-1] if out.stderr.strip() else "failed"}
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def micro_all(prof: Profile, workdir: Path) -> dict[str, Any]:
    res: dict[str, Any] = {
        "import": [],
        "classifier": [],
        "ledger_sqlite": [],
        "ledger_postgres": [],
        "asgi": [],
        "upstream_client": [],
        "gc": [micro(["gc"])],
    }
    stack = Stack(workdir)
    try:
        upstream = start_fake(stack)
        for i in range(max(3, prof.runs)):
            log(f"hot path {i + 1}: in-process ASGI, upstream client")
            res["asgi"].append(micro(["asgi", "--requests", str(prof.lat_count * 4)]))
            res["upstream_client"].append(
                micro(
                    [
                        "upstream-client",
                        "--base-url",
                        f"http://127.0.0.1:{upstream}",
                        "--requests",
                        str(prof.lat_count * 10),
                    ]
                )
            )
    finally:
        stack.close()
    for i in range(max(3, prof.runs)):
        log(f"micro {i + 1}: import, classifier, ledger")
        res["import"].append(micro(["import", "--repeat", "5"]))
        res["classifier"].append(
            micro(
                ["classifier", "--prompts", str(PROMPTS), "--passes", str(prof.classifier_passes)]
            )
        )
        res["ledger_sqlite"].append(micro(["ledger", "--rows", str(prof.ledger_rows)]))
        res["ledger_postgres"].append(
            micro(["ledger", "--url", POSTGRES_URL, "--rows", str(prof.ledger_rows)])
        )
    return res


def soak(prof: Profile, wrk: str, workdir: Path) -> dict[str, Any]:
    """``soak_requests`` through one gateway at c=32, RSS sampled every slice."""
    stack = Stack(workdir)
    samples: list[tuple[int, float, float]] = []  # (requests, seconds, RSS MB)
    errors = 0
    try:
        upstream = start_fake(stack)
        server, port, _ = start_tierwise(stack, upstream)
        lua = loadgen.write_lua(workdir / "soak.lua", body("auto", False))
        url = f"http://127.0.0.1:{port}/v1/messages"
        served = 0
        t0 = time.monotonic()
        samples.append((0, 0.0, procs.rss_mb(server.pid)))
        for _ in range(2000):
            if served >= prof.soak_requests or time.monotonic() - t0 > 1800:
                break
            res = loadgen.run_wrk(wrk, url, lua, connections=32, seconds=2)
            served += res.requests
            errors += res.non_2xx + res.socket_errors
            samples.append((served, time.monotonic() - t0, procs.rss_mb(server.pid)))
        log(f"soak: {served} requests in {time.monotonic() - t0:.0f}s, {errors} errors")
    finally:
        stack.close()
    return {"requests": samples[-1][0], "errors": errors, "samples": samples}


# -- main --------------------------------------------------------------------------------------


def longstream(quick: bool, litellm: bool, label: str | None) -> None:
    """The long-stream benchmark (its own module: servers, client, results JSON)."""
    import longstream as ls

    argv = ["--no-report"]
    if quick:
        argv.append("--quick")
    if not litellm:
        argv += ["--targets", "direct,tierwise,floor"]
    if label:
        argv += ["--label", label]
    ls.main(argv)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument(
        "--soak", action="store_true", help="only the soak (RSS over 100k requests)"
    )
    parser.add_argument(
        "--streams",
        action="store_true",
        help="only the long-stream benchmark (benchmarks/longstream.py; --quick: C=200, ~1 min)",
    )
    parser.add_argument("--no-streams", action="store_true", help="skip the long-stream benchmark")
    parser.add_argument("--no-litellm", action="store_true")
    parser.add_argument("--runs", type=int)
    parser.add_argument("--label", help="a label for the long-stream results (e.g. a baseline)")
    args = parser.parse_args(argv)
    prof = QUICK if args.quick else FULL
    if args.runs:
        prof = Profile(**{**prof.__dict__, "runs": args.runs})
    out_dir = BENCH / "quick" if args.quick else RESULTS
    out_dir.mkdir(parents=True, exist_ok=True)
    BENCH.mkdir(exist_ok=True)
    started = time.monotonic()
    if not args.streams:
        wrk = loadgen.ensure_wrk()
        with tempfile.TemporaryDirectory(prefix="run-", dir=BENCH) as tmp:
            workdir = Path(tmp)
            if args.soak:
                soak_only = {"machine": machine(), "soak": soak(prof, wrk, workdir)}
                (out_dir / "soak.json").write_text(json.dumps(soak_only, indent=1))
            else:
                litellm = None if args.no_litellm else ensure_litellm()
                meta = machine()
                meta["litellm"] = litellm_version(litellm) if litellm else None
                meta["profile"] = "quick" if args.quick else "full"
                result: dict[str, Any] = {
                    "machine": meta,
                    "micro": micro_all(prof, workdir),
                    "runs": [],
                }
                partial = BENCH / "bench.partial.json"
                partial.write_text(json.dumps(result, indent=1))
                for i in range(1, prof.runs + 1):
                    result["runs"].append(one_run(i, prof, wrk, litellm, workdir))
                    partial.write_text(json.dumps(result, indent=1))  # survives a crash later
                result["elapsed_s"] = time.monotonic() - started
                (out_dir / "bench.json").write_text(json.dumps(result, indent=1))
                if not args.quick:
                    log("soak")
                    soak_res = {"machine": meta, "soak": soak(prof, wrk, workdir)}
                    (out_dir / "soak.json").write_text(json.dumps(soak_res, indent=1))
    if args.streams or not (args.soak or args.no_streams):
        log("long streams (benchmarks/longstream.py)")
        longstream(args.quick, not args.no_litellm, args.label)
    md = BENCH / "quick" / "BENCHMARKS.md" if args.quick else ROOT / "BENCHMARKS.md"
    report.write(
        out_dir,
        md,
        chart_dir=out_dir if args.quick else ROOT / "benchmarks",
        notes=not args.quick,  # the hand-written notes discuss the committed full run
    )
    log(f"done in {time.monotonic() - started:.0f}s: {md}")


if __name__ == "__main__":
    main()

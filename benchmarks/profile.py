"""Profile the gateway's hot path: py-spy samples ``tierwise serve`` while wrk drives it.

    make profile                       # model="auto", non-streaming, c=32, 15 s
    .venv/bin/python benchmarks/profile.py --seconds 20 --stream

py-spy is installed on first use into ``.bench/tools-venv`` (git-ignored). Output:
``.bench/profile.raw`` (collapsed stacks: feed to flamegraph.pl or speedscope),
and ``.bench/profile.txt`` (the summary printed here: the gateway's CPU time per request
measured from /proc over a separate wrk run *without* py-spy attached, the samples grouped by
component and converted to µs per request, then functions by inclusive and self samples,
from ``benchmarks/profile_summary.py``); ``--save FILE`` keeps a copy (e.g. in
``benchmarks/results/``). Samples are taken only while a thread holds the GIL (``--gil``):
Python CPU time; the µs figures assume that the GIL-holding samples are spread over the CPU
time like the CPU time itself (time in the kernel with the GIL released is not sampled).
"""

from __future__ import annotations

import argparse
import datetime as dt
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import loadgen  # noqa: E402
import procs  # noqa: E402
import profile_summary  # noqa: E402
import run  # noqa: E402

BENCH = run.BENCH


def ensure_py_spy() -> Path:
    venv = BENCH / "tools-venv"
    exe = venv / "bin" / "py-spy"
    if not exe.exists():
        run.log("installing py-spy into .bench/tools-venv (first run only)")
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
        subprocess.run(
            [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "py-spy"],
            check=True,
            timeout=900,
        )
    return exe


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=15)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--stream", action="store_true")
    parser.add_argument("--model", default="auto")
    parser.add_argument("--rate", type=int, default=400, help="py-spy samples per second")
    parser.add_argument("--save", type=Path, help="also write the summary to this file")
    parser.add_argument("--title", default="", help="a first line for the summary")
    args = parser.parse_args(argv)
    load_before = Path("/proc/loadavg").read_text().split()[:3]
    BENCH.mkdir(exist_ok=True)
    py_spy = ensure_py_spy()
    wrk = loadgen.ensure_wrk()
    with tempfile.TemporaryDirectory(prefix="profile-", dir=BENCH) as tmp:
        workdir = Path(tmp)
        stack = run.Stack(workdir)
        try:
            upstream = run.start_fake(stack)
            server, port, _ = run.start_tierwise(stack, upstream)
            lua = loadgen.write_lua(workdir / "p.lua", run.body(args.model, args.stream))
            url = f"http://127.0.0.1:{port}/v1/messages"
            loadgen.run_wrk(wrk, url, lua, connections=args.connections, seconds=2)
            # CPU per request without the profiler attached (py-spy pauses the process to sample)
            cpu0 = procs.cpu_seconds(server.pid)
            plain = loadgen.run_wrk(wrk, url, lua, connections=args.connections, seconds=10)
            cpu = procs.cpu_seconds(server.pid) - cpu0
            ok = plain.requests - plain.non_2xx
            cpu_ms = 1000 * cpu / ok if ok else None
            load = subprocess.Popen(
                [
                    wrk,
                    "-t1",
                    f"-c{args.connections}",
                    f"-d{args.seconds + 4}s",
                    "-s",
                    str(lua),
                    url,
                ],
                stdout=subprocess.PIPE,
                text=True,
            )
            time.sleep(1)
            raw = BENCH / "profile.raw"
            for fmt, path in (("raw", raw),):
                subprocess.run(
                    [
                        str(py_spy),
                        "record",
                        "--pid",
                        str(server.pid),
                        "--duration",
                        str(args.seconds),
                        "--rate",
                        str(args.rate),
                        "--gil",
                        "--format",
                        fmt,
                        "--output",
                        str(path),
                    ],
                    check=True,
                    timeout=args.seconds + 60,
                    capture_output=True,
                )
            out, _ = load.communicate(timeout=args.seconds + 30)
            print(out)
        finally:
            stack.close()
    total, inclusive, own = profile_summary.summarise(raw.read_text())
    _, groups = profile_summary.components(raw.read_text())
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=run.ROOT
    ).stdout.strip()
    lines = [
        f"# {args.title or 'py-spy profile of tierwise serve'}",
        f"# commit {commit}, {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M UTC}, model={args.model}, "
        f"stream={args.stream}, c={args.connections}, load average before "
        f"{' '.join(load_before)}",
        f"# without the profiler (wrk 10 s): {plain.rps:,.0f} req/s, gateway CPU "
        + (f"{cpu_ms:.3f} ms per request" if cpu_ms else "unknown")
        + f" ({plain.non_2xx} non-2xx)",
        f"{total} samples (GIL held)",
        "",
        "== by component (innermost matching frame; libraries charged to their caller)",
    ]
    for name, count in sorted(groups.items(), key=lambda kv: -kv[1]):
        share = count / max(total, 1)
        us = f"~{1000 * share * cpu_ms:6.1f} µs/request" if cpu_ms else ""
        lines.append(f"{100 * share:6.1f}%  {us}  {name}")
    for title, table in (("inclusive", inclusive), ("self", own)):
        lines.append(f"\n== {title}")
        for name, count in sorted(table.items(), key=lambda kv: -kv[1])[:60]:
            lines.append(f"{100 * count / max(total, 1):6.1f}%  {name}")
    text = "\n".join(lines)
    (BENCH / "profile.txt").write_text(text + "\n")
    if args.save:
        args.save.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()

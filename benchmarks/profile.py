"""Profile the gateway's hot path: py-spy samples ``tierwise serve`` while wrk drives it.

    make profile                       # model="auto", non-streaming, c=32, 15 s
    .venv/bin/python benchmarks/profile.py --seconds 20 --stream

py-spy is installed on first use into ``.bench/tools-venv`` (git-ignored). Output:
``.bench/profile.raw`` (collapsed stacks: feed to flamegraph.pl or speedscope),
``.bench/profile.svg`` (flame graph) and ``.bench/profile.txt`` (the summary printed here:
functions by inclusive and self samples, from ``benchmarks/profile_summary.py``).
Samples are taken only while a thread holds the GIL (``--gil``): Python CPU time.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import loadgen  # noqa: E402
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
    args = parser.parse_args(argv)
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
    lines = [f"{total} samples (GIL held)"]
    for title, table in (("inclusive", inclusive), ("self", own)):
        lines.append(f"\n== {title}")
        for name, count in sorted(table.items(), key=lambda kv: -kv[1])[:60]:
            lines.append(f"{100 * count / max(total, 1):6.1f}%  {name}")
    text = "\n".join(lines)
    (BENCH / "profile.txt").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()

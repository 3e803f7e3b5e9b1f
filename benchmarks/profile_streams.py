"""Profile the gateway while it relays long streams: py-spy samples ``tierwise serve`` during
the steady state of a long-stream phase (``benchmarks/longstream.py``: C streams of N events
over T seconds from the slow-streaming fake upstream).

    .venv/bin/python benchmarks/profile_streams.py                  # C=2000, N=200 over 20 s
    .venv/bin/python benchmarks/profile_streams.py --streams 500 --save benchmarks/results/x.txt

Output: ``.bench/profile-streams.raw`` (collapsed stacks) and ``.bench/profile-streams.txt``
(the summary printed here: the gateway's CPU per event over the whole phase, samples grouped
by component, functions by inclusive and self samples). py-spy pauses the process to take a
sample, so the delays of a profiled run are not measurements: use ``longstream.py`` for those.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import longstream  # noqa: E402
import procs  # noqa: E402
import profile  # noqa: E402
import profile_summary  # noqa: E402
import run  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--streams", type=int, default=2000)
    parser.add_argument("--events", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--ramp", type=float, default=5.0)
    parser.add_argument("--sample-seconds", type=int, default=10)
    parser.add_argument("--rate", type=int, default=200, help="py-spy samples per second")
    parser.add_argument("--save", type=Path, help="also write the summary to this file")
    parser.add_argument("--title", default="")
    args = parser.parse_args(argv)
    plan = longstream.Plan((args.streams,), args.events, args.seconds, args.ramp, 30.0, 1)
    longstream.raise_nofile()
    run.BENCH.mkdir(parents=True, exist_ok=True)
    py_spy = profile.ensure_py_spy()
    load_before = Path("/proc/loadavg").read_text().split()[:3]
    raw = run.BENCH / "profile-streams.raw"
    with tempfile.TemporaryDirectory(prefix="profile-streams-", dir=run.BENCH) as tmp:
        workdir = Path(tmp)
        stack = run.Stack(workdir)
        try:
            upstream, up_port = longstream.start_upstream(stack, plan)
            server, port, _ = run.start_tierwise(stack, up_port)
            longstream.warm_up(port)
            cpu0 = procs.cpu_seconds(server.pid)
            out = workdir / "client.json"
            client = stack.start(
                "client",
                [
                    str(run.PY),
                    str(Path(longstream.__file__).resolve()),
                    "client",
                    "--port",
                    str(port),
                    "--streams",
                    str(plan.streams[0]),
                    "--events",
                    str(plan.events),
                    "--seconds",
                    str(plan.seconds),
                    "--ramp",
                    str(plan.ramp_s),
                    "--grace",
                    str(plan.grace_s),
                    "--model",
                    "auto",
                    "--out",
                    str(out),
                ],
                run.clean_env(),
            )
            time.sleep(plan.ramp_s + 1.0)  # all streams open: the steady state
            subprocess.run(
                [
                    str(py_spy),
                    "record",
                    "--pid",
                    str(server.pid),
                    "--duration",
                    str(args.sample_seconds),
                    "--rate",
                    str(args.rate),
                    "--gil",
                    "--format",
                    "raw",
                    "--output",
                    str(raw),
                ],
                check=True,
                timeout=args.sample_seconds + 60,
                capture_output=True,
            )
            client.proc.wait(plan.ramp_s + plan.seconds + plan.grace_s + 60)
            cpu = procs.cpu_seconds(server.pid) - cpu0
            result = json.loads(out.read_text()) if out.exists() else {}
        finally:
            stack.close()
    text = raw.read_text()
    total, inclusive, own = profile_summary.summarise(text)
    _, groups = profile_summary.components(text)
    events = result.get("events_received") or 0
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=run.ROOT
    ).stdout.strip()
    us_event = 1e6 * cpu / events if events else None
    lines = [
        f"# {args.title or 'py-spy profile of tierwise serve relaying long streams'}",
        f"# commit {commit}, {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M UTC}, C={args.streams}, "
        f"N={args.events} events over T={args.seconds:g} s (ramp {args.ramp:g} s), "
        f"load average before {' '.join(load_before)}",
        f"# streams completed {result.get('completed')}/{args.streams} "
        f"({result.get('outcomes')}), events relayed {events:,}, gateway CPU {cpu:.1f} s = "
        + (f"{us_event:.1f} µs per event" if us_event else "?")
        + f" over the phase; py-spy sampled {args.sample_seconds} s of the steady state",
        f"{total} samples (GIL held)",
        "",
        "== by component (innermost matching frame; libraries charged to their caller)",
    ]
    for name, count in sorted(groups.items(), key=lambda kv: -kv[1]):
        share = count / max(total, 1)
        us = f"~{share * us_event:5.1f} µs/event" if us_event else ""
        lines.append(f"{100 * share:6.1f}%  {us}  {name}")
    for title, table in (("inclusive", inclusive), ("self", own)):
        lines.append(f"\n== {title}")
        for name, count in sorted(table.items(), key=lambda kv: -kv[1])[:60]:
            lines.append(f"{100 * count / max(total, 1):6.1f}%  {name}")
    summary = "\n".join(lines) + "\n"
    (run.BENCH / "profile-streams.txt").write_text(summary)
    if args.save:
        args.save.write_text(summary)
    print(summary)


if __name__ == "__main__":
    main()

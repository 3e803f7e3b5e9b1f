"""A/B the gateway's CPU cost: a reference commit against the working tree, alternated in one
session, so that the machine's drift (shared, 2 cores) hits both sides alike.

    .venv/bin/python benchmarks/ab.py --ref 518d2fa                 # short requests, 3 rounds
    .venv/bin/python benchmarks/ab.py --ref 518d2fa --streams 1000  # + long streams at C=1000

Short requests: ``tierwise serve`` (one worker, ledger on) behind the fast fake upstream,
``wrk -t1 -c32`` for ``--seconds`` with ``model="auto"``, CPU per request from /proc (the
figure of BENCHMARKS.md's "CPU time per request, c=32"). Long streams (``--streams C``): C
streams of 200 events over 10 s from the slow-streaming fake upstream
(``longstream.py``), CPU per relayed event and the transit p99. Each round runs both sides,
in alternating order; the medians and the ratio (working tree ÷ reference) are printed and
written to ``.bench/ab-<ref>.json``.

The reference's ``src/`` is exported with ``git archive`` into ``.bench/ab-<ref>/`` (no
worktree is registered) and put first on ``PYTHONPATH``; the working tree runs from the
editable install. Both use this virtualenv, so a dependency change between them is not
measured. Every server is stopped at the end, also on error; only 127.0.0.1 is used.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import loadgen  # noqa: E402
import longstream  # noqa: E402
import procs  # noqa: E402
import run  # noqa: E402


def export(ref: str) -> Path:
    sha = subprocess.run(
        ["git", "rev-parse", "--short", ref],
        capture_output=True,
        text=True,
        cwd=run.ROOT,
        check=True,
    ).stdout.strip()
    dest = run.BENCH / f"ab-{sha}"
    if not (dest / "src" / "tierwise").is_dir():
        dest.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(
            ["git", "archive", sha, "src"], capture_output=True, cwd=run.ROOT, check=True
        ).stdout
        subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    return dest / "src"


def with_src(src: Path | None) -> None:
    """Point the servers started from here at ``src`` (None: the working tree)."""
    if src is None:
        os.environ.pop("PYTHONPATH", None)
    else:
        os.environ["PYTHONPATH"] = str(src)


def short(wrk: str, seconds: float, workdir: Path) -> dict[str, Any]:
    stack = run.Stack(workdir)
    try:
        upstream = run.start_fake(stack)
        server, port, _ = run.start_tierwise(stack, upstream)
        lua = loadgen.write_lua(workdir / "ab.lua", run.body("auto", False))
        url = f"http://127.0.0.1:{port}/v1/messages"
        loadgen.run_wrk(wrk, url, lua, connections=32, seconds=2)  # warm-up
        cpu0 = procs.cpu_seconds(server.pid)
        res = loadgen.run_wrk(wrk, url, lua, connections=32, seconds=seconds)
        cpu = procs.cpu_seconds(server.pid) - cpu0
    finally:
        stack.close()
    ok = res.requests - res.non_2xx
    return {
        "rps": res.rps,
        "non_2xx": res.non_2xx,
        "cpu_ms_per_req": 1000 * cpu / ok if ok else None,
    }


def streams(c: int, workdir: Path) -> dict[str, Any]:
    plan = longstream.Plan((c,), 200, 10.0, 3.0, 20.0, 1)
    stack = run.Stack(workdir)
    try:
        upstream, up_port = longstream.start_upstream(stack, plan)
        phase = longstream.one_phase("tierwise", c, plan, stack, upstream, up_port, None, workdir)
    finally:
        stack.close()
    cl = phase.get("client") or {}
    return {
        "completed": cl.get("completed"),
        "cpu_us_per_event": phase.get("cpu_us_per_event"),
        "transit_p99_ms": (cl.get("transit_ms") or {}).get("p99"),
        "rss_peak_mb": phase.get("rss_peak_mb"),
    }


def med(values: list[Any]) -> float | None:
    vals = [v for v in values if isinstance(v, int | float)]
    return statistics.median(vals) if vals else None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--ref", required=True, help="the reference commit (e.g. main)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=10.0, help="wrk time per side")
    parser.add_argument("--streams", type=int, default=0, help="also long streams at this C")
    parser.add_argument("--no-short", action="store_true", help="only the long streams")
    args = parser.parse_args(argv)
    longstream.raise_nofile()
    run.BENCH.mkdir(parents=True, exist_ok=True)
    wrk = loadgen.ensure_wrk()
    ref_src = export(args.ref)
    sides: dict[str, Path | None] = {"ref": ref_src, "tree": None}
    results: dict[str, list[dict[str, Any]]] = {"ref": [], "tree": []}
    saved = os.environ.get("PYTHONPATH")
    try:
        with tempfile.TemporaryDirectory(prefix="ab-", dir=run.BENCH) as tmp:
            for i in range(args.rounds):
                order = ["ref", "tree"] if i % 2 == 0 else ["tree", "ref"]
                for side in order:
                    with_src(sides[side])
                    row: dict[str, Any] = {
                        "round": i + 1,
                        "load": Path("/proc/loadavg").read_text().split()[0],
                    }
                    if not args.no_short:
                        row["short"] = short(wrk, args.seconds, Path(tmp))
                    if args.streams:
                        row["streams"] = streams(args.streams, Path(tmp))
                    results[side].append(row)
                    run.log(f"round {i + 1} {side}: {json.dumps(row)}")
    finally:
        if saved is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = saved
    summary: dict[str, Any] = {"ref": args.ref, "rounds": args.rounds, "results": results}
    keys: list[tuple[str, str]] = (
        [] if args.no_short else [("short", "cpu_ms_per_req"), ("short", "rps")]
    )
    if args.streams:
        keys += [("streams", "cpu_us_per_event"), ("streams", "transit_p99_ms")]
    print(f"\nA/B, {args.rounds} alternated rounds: reference {args.ref} vs the working tree")
    for group, key in keys:
        ref_vals = [r[group][key] for r in results["ref"]]
        tree_vals = [r[group][key] for r in results["tree"]]
        ratios = [
            t / r
            for r, t in zip(ref_vals, tree_vals, strict=True)
            if isinstance(r, int | float) and isinstance(t, int | float) and r
        ]
        summary[f"{group}.{key}"] = {
            "ref": med(ref_vals),
            "tree": med(tree_vals),
            "tree_over_ref": med(ratios),
        }
        print(
            f"  {group} {key}: ref {med(ref_vals)!s:.8} | tree {med(tree_vals)!s:.8} | "
            f"tree ÷ ref {med(ratios)!s:.5} (per round: {[round(x, 3) for x in ratios]})"
        )
    out = run.BENCH / f"ab-{ref_src.parent.name.removeprefix('ab-')}.json"
    out.write_text(json.dumps(summary, indent=1))
    print(f"→ {out}")


if __name__ == "__main__":
    main()

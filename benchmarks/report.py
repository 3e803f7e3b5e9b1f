"""BENCHMARKS.md and the charts, from the JSON results of ``benchmarks/run.py``.

    python benchmarks/report.py          # re-render from benchmarks/results/*.json

Every figure is a median over the runs in the results file; ratios are computed within each
run (same machine state) and then the median is taken.
"""

from __future__ import annotations

import json
import statistics
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
NOTES = ROOT / "benchmarks" / "NOTES.md"
NOTES_STREAMS = ROOT / "benchmarks" / "NOTES-streams.md"
SCENARIOS = ("auto", "pinned", "auto_stream", "pinned_stream")
LABELS = {
    "auto": 'model="auto", non-streaming',
    "pinned": "pinned model, non-streaming",
    "auto_stream": 'model="auto", streaming (TTFB)',
    "pinned_stream": "pinned model, streaming (TTFB)",
}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def med(values: list[Any]) -> float | None:
    vals = [float(v) for v in values if isinstance(v, int | float)]
    return statistics.median(vals) if vals else None


def get(d: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(d, dict) or key not in d:
            return None
        d = d[key]
    return d


def per_run(runs: list[dict[str, Any]], fn: Callable[[dict[str, Any]], Any]) -> list[Any]:
    out = []
    for r in runs:
        try:
            out.append(fn(r))
        except (TypeError, KeyError, ZeroDivisionError):
            out.append(None)
    return out


def fmt(v: float | None, digits: int = 2, unit: str = "") -> str:
    if v is None:
        return "–"
    if abs(v) >= 1000:
        return f"{v:,.0f}{unit}"
    return f"{v:.{digits}f}{unit}"


def spread(values: list[Any], digits: int = 2) -> str:
    return " / ".join(fmt(v, digits) if isinstance(v, int | float) else "–" for v in values)


def summarise(res: dict[str, Any]) -> dict[str, Any]:
    runs = res["runs"]
    s: dict[str, Any] = {"runs": len(runs)}
    for target in ("direct", "tierwise", "litellm"):
        t: dict[str, Any] = {}
        for sc in SCENARIOS:
            for q in ("p50_ms", "p99_ms"):
                vals = per_run(runs, lambda r, sc=sc, q=q: r[target]["latency"][sc][q])
                t[f"{sc}_{q}"] = med(vals)
                t[f"{sc}_{q}_runs"] = vals
                if target != "direct":
                    added = per_run(
                        runs,
                        lambda r, sc=sc, q=q: (
                            r[target]["latency"][sc][q] - r["direct"]["latency"][sc][q]
                        ),
                    )
                    t[f"{sc}_added_{q}"] = med(added)
                    t[f"{sc}_added_{q}_runs"] = added
        for c in ("c32", "c64"):
            for k in ("rps", "cpu_ms_per_req", "p50_ms", "p99_ms", "non_2xx", "socket_errors"):
                vals = per_run(runs, lambda r, c=c, k=k: r[target]["throughput"][c][k])
                t[f"{c}_{k}"] = med(vals)
                t[f"{c}_{k}_runs"] = vals
        for k in ("startup_s", "rss_mb", "rss_start_mb", "rss_after_requests"):
            vals = per_run(runs, lambda r, k=k: r[target][k])
            t[k] = med(vals)
            t[f"{k}_runs"] = vals
        s[target] = t
    for c in ("c32", "c64"):
        s[f"{c}_vs_direct"] = med(
            per_run(
                runs,
                lambda r, c=c: (
                    r["tierwise"]["throughput"][c]["rps"] / r["direct"]["throughput"][c]["rps"]
                ),
            )
        )
        s[f"{c}_vs_direct_runs"] = per_run(
            runs,
            lambda r, c=c: (
                r["tierwise"]["throughput"][c]["rps"] / r["direct"]["throughput"][c]["rps"]
            ),
        )
        s[f"{c}_vs_litellm"] = med(
            per_run(
                runs,
                lambda r, c=c: (
                    r["tierwise"]["throughput"][c]["rps"] / r["litellm"]["throughput"][c]["rps"]
                ),
            )
        )
        s[f"{c}_vs_litellm_runs"] = per_run(
            runs,
            lambda r, c=c: (
                r["tierwise"]["throughput"][c]["rps"] / r["litellm"]["throughput"][c]["rps"]
            ),
        )
        s[f"{c}_litellm_vs_direct"] = med(
            per_run(
                runs,
                lambda r, c=c: (
                    r["litellm"]["throughput"][c]["rps"] / r["direct"]["throughput"][c]["rps"]
                ),
            )
        )
        s[f"w2_{c}_rps"] = med(
            per_run(runs, lambda r, c=c: r["tierwise_w2"]["throughput"][c]["rps"])
        )
        s[f"w2_{c}_rps_runs"] = per_run(
            runs, lambda r, c=c: r["tierwise_w2"]["throughput"][c]["rps"]
        )
        s[f"w2_{c}_cpu"] = med(
            per_run(runs, lambda r, c=c: r["tierwise_w2"]["throughput"][c]["cpu_ms_per_req"])
        )
        s[f"w2_{c}_vs_w1"] = med(
            per_run(
                runs,
                lambda r, c=c: (
                    r["tierwise_w2"]["throughput"][c]["rps"] / r["tierwise"]["throughput"][c]["rps"]
                ),
            )
        )
        s[f"w2_{c}_vs_direct"] = med(
            per_run(
                runs,
                lambda r, c=c: (
                    r["tierwise_w2"]["throughput"][c]["rps"] / r["direct"]["throughput"][c]["rps"]
                ),
            )
        )
    for c in ("c32", "c64"):
        s[f"floor_{c}_rps"] = med(per_run(runs, lambda r, c=c: r["floor"]["throughput"][c]["rps"]))
        s[f"floor_{c}_cpu"] = med(
            per_run(runs, lambda r, c=c: r["floor"]["throughput"][c]["cpu_ms_per_req"])
        )
        s[f"floor_{c}_vs_direct"] = med(
            per_run(
                runs,
                lambda r, c=c: (
                    r["floor"]["throughput"][c]["rps"] / r["direct"]["throughput"][c]["rps"]
                ),
            )
        )
        s[f"{c}_vs_floor"] = med(
            per_run(
                runs,
                lambda r, c=c: (
                    r["tierwise"]["throughput"][c]["rps"] / r["floor"]["throughput"][c]["rps"]
                ),
            )
        )
    s["w2_startup_s"] = med(per_run(runs, lambda r: r["tierwise_w2"]["startup_s"]))
    s["w2_rss_mb"] = med(per_run(runs, lambda r: r["tierwise_w2"]["rss_mb"]))
    m = res["micro"]
    s["import_s"] = med([get(x, "import_s") for x in m["import"]])
    s["import_runs"] = [get(x, "import_s") for x in m["import"]]
    for k in ("classify_p50_ms", "classify_p99_ms", "decide_p50_ms", "decide_p99_ms"):
        s[k] = med([get(x, k) for x in m["classifier"]])
        s[f"{k}_runs"] = [get(x, k) for x in m["classifier"]]
    s["classifier"] = next(
        (get(x, "classifier") for x in m["classifier"] if get(x, "classifier")), "?"
    )
    s["prompts"] = next((get(x, "prompts") for x in m["classifier"] if get(x, "prompts")), 0)
    for db in ("sqlite", "postgres"):
        rows = m[f"ledger_{db}"]
        s[f"ledger_{db}"] = med([get(x, "rows_per_s") for x in rows])
        s[f"ledger_{db}_runs"] = [get(x, "rows_per_s") for x in rows]
        s[f"ledger_{db}_error"] = next((get(x, "error") for x in rows if get(x, "error")), None)
        s[f"ledger_{db}_rows"] = next((get(x, "rows") for x in rows if get(x, "rows")), None)
    for k in ("direct_us_cpu", "full_stack_us_cpu"):
        s[f"asgi_{k}"] = med([get(x, k) for x in m.get("asgi", [])])
    s["asgi_saved_runs"] = [
        None
        if get(x, "full_stack_us_cpu") is None
        else get(x, "full_stack_us_cpu") - get(x, "direct_us_cpu")
        for x in m.get("asgi", [])
    ]
    s["asgi_saved"] = med(s["asgi_saved_runs"])
    for client in ("http1", "aiohttp", "http1_again"):
        s[f"client_{client}"] = med(
            [get(x, client, "cpu_us_per_call") for x in m.get("upstream_client", [])]
        )
        s[f"client_{client}_runs"] = [
            get(x, client, "cpu_us_per_call") for x in m.get("upstream_client", [])
        ]
    gc_runs = m.get("gc") or [{}]
    s["gc"] = gc_runs[0]
    return s


def soak_summary(soak: dict[str, Any]) -> dict[str, Any]:
    samples = soak["samples"]
    total = soak["requests"]
    warm = [x for x in samples if x[0] >= total * 0.2] or samples
    after = warm[0][2]
    final = samples[-1][2]
    peak = max(x[2] for x in warm)
    return {
        "requests": total,
        "errors": soak["errors"],
        "seconds": samples[-1][1],
        "rss_start": samples[0][2],
        "rss_warm": after,
        "rss_warm_at": warm[0][0],
        "rss_final": final,
        "rss_peak": peak,
        "growth": (final - after) / after if after else None,
        "peak_growth": (peak - after) / after if after else None,
    }


def verdict(ok: bool | None) -> str:
    return "–" if ok is None else ("**met**" if ok else "**missed**")


Row = tuple[str, str, str, str]


def target(
    label: str,
    goal: str,
    shown: str,
    value: float | None,
    met: Callable[[float], bool],
    short: Callable[[float], str] | None = None,
) -> Row:
    """One row of a targets table: the verdict on ``value`` (– when it was not measured), and
    by how much it fell short (``short``) when it did."""
    if value is None:
        return (label, goal, shown, verdict(None))
    ok = met(value)
    return (label, goal, shown, verdict(ok) + ("" if ok or short is None else short(value)))


def targets16(s: dict[str, Any]) -> list[Row]:
    """Issue 16's short-request targets (the long-stream ones are in the long-stream section)."""
    tw = s["tierwise"]
    cpu, r, added, p99 = (
        tw.get("c32_cpu_ms_per_req"),
        s["c32_vs_litellm"],
        tw["auto_added_p50_ms"],
        s["decide_p99_ms"],
    )
    return [
        target(
            "CPU per request, c=32 (server process, ledger writer included)",
            "≤ 0.20 ms",
            fmt(cpu, 3, " ms"),
            cpu,
            lambda v: v <= 0.20,
            lambda v: f" by {v - 0.2:.3f} ms ({v / 0.2:.2f}×)",
        ),
        target(
            "Throughput c=32 vs LiteLLM",
            "≥ 40×",
            fmt(r, 1, "×"),
            r,
            lambda v: v >= 40,
            lambda v: f" ({v / 40:.0%} of the target)",
        ),
        target(
            'Added latency, median, c=1, `model="auto"`',
            "≤ 0.4 ms",
            fmt(added, 3, " ms"),
            added,
            lambda v: v <= 0.4,
            lambda v: f" by {v - 0.4:.3f} ms",
        ),
        target(
            f"Decision latency p99 ({s['classifier']} classifier)",
            "≤ 1 ms",
            fmt(p99, 3, " ms"),
            p99,
            lambda v: v <= 1,
        ),
    ]


def targets(s: dict[str, Any], soak: dict[str, Any] | None) -> list[Row]:
    tw = s["tierwise"]
    added, direct, litellm = tw["auto_added_p50_ms"], s["c32_vs_direct"], s["c32_vs_litellm"]
    rss, st, p99, led = tw["rss_mb"], tw["startup_s"], s["decide_p99_ms"], s["ledger_sqlite"]
    rows = [
        target(
            'Added latency, median, c=1, `model="auto"`',
            "≤ 1 ms",
            fmt(added, 3, " ms"),
            added,
            lambda v: v <= 1.0,
            lambda v: f" by {v - 1:.3f} ms",
        ),
        target(
            "Throughput c=32 vs direct",
            "≥ 30 %",
            fmt(None if direct is None else 100 * direct, 1, " %"),
            direct,
            lambda v: v >= 0.30,
            lambda v: f" by {100 * (0.30 - v):.1f} points",
        ),
        target(
            "Throughput c=32 vs LiteLLM",
            "≥ 30×",
            fmt(litellm, 1, "×"),
            litellm,
            lambda v: v >= 30,
            lambda v: f" ({v / 30:.0%} of the target)",
        ),
        target(
            f"Resident memory after {fmt(tw['rss_after_requests'], 0)} requests",
            "≤ 150 MB",
            fmt(rss, 1, " MiB"),
            rss,
            lambda v: v <= 150,
        ),
        target("Start-up to the first 200", "≤ 2 s", fmt(st, 2, " s"), st, lambda v: v <= 2),
        target(
            f"Decision latency p99 ({s['classifier']} classifier)",
            "≤ 1 ms",
            fmt(p99, 3, " ms"),
            p99,
            lambda v: v <= 1,
            lambda v: f" by {v - 1:.2f} ms ({v:.1f}×)",
        ),
        target(
            "SQLite ledger",
            "≥ 20,000 rows/s",
            fmt(led, 0, " rows/s"),
            led,
            lambda v: v >= 20_000,
        ),
    ]
    if soak:
        g = soak["growth"]
        rows.append(
            target(
                f"Soak: RSS growth after warm-up ({soak['requests']:,} requests)",
                "≤ 10 %",
                fmt(None if g is None else 100 * g, 1, " %"),
                g,
                lambda v: v <= 0.10,
            )
        )
    return rows


def render(
    res: dict[str, Any] | None,
    soak_res: dict[str, Any] | None,
    *,
    notes: bool = True,
    streams: list[str] | None = None,
) -> str:
    out: list[str] = ["# tierwise benchmarks", ""]
    commit = res["machine"]["commit"] if res else "COMMIT"
    out.append(
        "Generated by `make bench` (`benchmarks/run.py`) from the results in "
        "`benchmarks/results/`; do not edit by hand (the analysis below the tables comes from "
        "`benchmarks/NOTES.md` and, for the long streams, `benchmarks/NOTES-streams.md`). Every figure is the **median of the runs** listed; ratios are "
        "computed within a run and then their median taken. Per-run values are shown as "
        "`a / b / c`."
    )
    out.append("")
    soak = soak_summary(soak_res["soak"]) if soak_res else None
    if res is not None:
        m = res["machine"]
        s = summarise(res)
        out += [
            "## Machine and software",
            "",
            f"- Date: {m['date']}; profile: {m.get('profile', 'full')}, {s['runs']} runs, "
            f"wall time {res.get('elapsed_s', 0) / 60:.1f} min",
            f"- Machine: `nproc` = {m['nproc']}, CPU: {m['cpu']}, RAM: {m['ram_gib']} GiB, "
            f"Linux {m['kernel']} (shared and noisy: compare ratios from the same run)",
            f"- Python {m['python']}; tierwise at commit `{m['commit']}`; LiteLLM {m.get('litellm')}; "
            f"{m['wrk']}",
            "- Upstream: `benchmarks/fake_upstream.py` (asyncio + uvloop + httptools, fixed replies; "
            "the same instance serves all three targets in a run)",
            "- tierwise: `tierwise serve` (1 worker unless stated), ledger on (SQLite WAL in a temporary "
            f"`TIERWISE_HOME`), no gateway keys, default config ({s['classifier']} classifier).",
            "- LiteLLM: `litellm --config … --num_workers 1`, `anthropic/claude-haiku-4-5` for both "
            "`auto` and the pinned name, `api_base` = the fake upstream, no database, same "
            "`/v1/messages` requests.",
            "- Load: concurrency 1 = a keep-alive raw-socket client (`benchmarks/loadgen.py`); "
            "concurrency 32/64 = `wrk -t1 --latency` with a Lua POST body. Each target runs alone "
            "(with the upstream); client, upstream and server share the 2 cores.",
            "",
            "## Gateway: tierwise vs LiteLLM vs direct",
            "",
            "| Measure | direct | tierwise | LiteLLM | tierwise ÷ direct | tierwise vs LiteLLM |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        d, tw, ll = s["direct"], s["tierwise"], s["litellm"]
        for sc in SCENARIOS:
            for q, qn in (("p50_ms", "p50"), ("p99_ms", "p99")):
                a, b, c = d[f"{sc}_{q}"], tw[f"{sc}_{q}"], ll[f"{sc}_{q}"]
                out.append(
                    f"| c=1 {LABELS[sc]}, {qn} (ms) | {fmt(a, 3)} | {fmt(b, 3)} | {fmt(c, 2)} | "
                    f"{fmt(b / a if a and b else None, 2)}× | {fmt(c / b if b and c else None, 1)}× faster |"
                )
            for q, qn in (("p50_ms", "p50"), ("p99_ms", "p99")):
                b, c = tw[f"{sc}_added_{q}"], ll[f"{sc}_added_{q}"]
                out.append(
                    f"| **added** over direct, {LABELS[sc]}, {qn} (ms) | – | **{fmt(b, 3)}** | "
                    f"{fmt(c, 2)} | – | {fmt(c / b if b and c and b > 0 else None, 0)}× less |"
                )
        for c in ("c32", "c64"):
            n = c[1:]
            a, b, x = d[f"{c}_rps"], tw[f"{c}_rps"], ll[f"{c}_rps"]
            out.append(
                f"| **throughput, c={n} (req/s)** | {fmt(a, 0)} | **{fmt(b, 0)}** | {fmt(x, 1)} | "
                f"**{fmt(None if s[f'{c}_vs_direct'] is None else 100 * s[f'{c}_vs_direct'], 1)} %** | "
                f"**{fmt(s[f'{c}_vs_litellm'], 1)}×** |"
            )
            a, b, x = d[f"{c}_cpu_ms_per_req"], tw[f"{c}_cpu_ms_per_req"], ll[f"{c}_cpu_ms_per_req"]
            out.append(
                f"| CPU time per request, c={n} (ms, server process) | {fmt(a, 3)} | {fmt(b, 3)} | "
                f"{fmt(x, 2)} | {fmt(b / a if a and b else None, 1)}× | {fmt(x / b if b and x else None, 0)}× less |"
            )
            a, b, x = d[f"{c}_p50_ms"], tw[f"{c}_p50_ms"], ll[f"{c}_p50_ms"]
            out.append(
                f"| latency under load c={n}, p50 (ms, wrk) | {fmt(a, 2)} | {fmt(b, 2)} | {fmt(x, 1)} | – | – |"
            )
            a, b, x = d[f"{c}_p99_ms"], tw[f"{c}_p99_ms"], ll[f"{c}_p99_ms"]
            out.append(
                f"| latency under load c={n}, p99 (ms, wrk) | {fmt(a, 2)} | {fmt(b, 2)} | {fmt(x, 1)} | – | – |"
            )
        out.append(
            f"| resident memory at start (MiB) | – | {fmt(tw['rss_start_mb'], 1)} | {fmt(ll['rss_start_mb'], 1)} | – | "
            f"{fmt(ll['rss_start_mb'] / tw['rss_start_mb'] if tw['rss_start_mb'] and ll['rss_start_mb'] else None, 1)}× less |"
        )
        out.append(
            f"| resident memory after N requests (MiB) | – | {fmt(tw['rss_mb'], 1)} (N = {fmt(tw['rss_after_requests'], 0)}) | "
            f"{fmt(ll['rss_mb'], 1)} (N = {fmt(ll['rss_after_requests'], 0)}) | – | "
            f"{fmt(ll['rss_mb'] / tw['rss_mb'] if tw['rss_mb'] and ll['rss_mb'] else None, 1)}× less |"
        )
        out.append(
            f"| start-up to the first 200 (s) | – | {fmt(tw['startup_s'], 2)} | {fmt(ll['startup_s'], 1)} | – | "
            f"{fmt(ll['startup_s'] / tw['startup_s'] if tw['startup_s'] and ll['startup_s'] else None, 0)}× faster |"
        )
        pct = lambda v: None if v is None else 100 * v  # noqa: E731
        floor_lines = [
            "",
            "**The floor.** A bare ASGI app under the same uvicorn (uvloop + httptools) that reads "
            "the body and answers the fixed JSON, with no upstream call and no work at all "
            "(`benchmarks/floor_app.py`), answers "
            f"{fmt(s['floor_c32_rps'], 0)} req/s at c=32 ({fmt(pct(s['floor_c32_vs_direct']), 1)} % of "
            f"direct; CPU {fmt(s['floor_c32_cpu'], 3)} ms/request) and {fmt(s['floor_c64_rps'], 0)} "
            f"req/s at c=64. tierwise reaches {fmt(pct(s['c32_vs_floor']), 1)} % of that floor at "
            f"c=32 and {fmt(pct(s['c64_vs_floor']), 1)} % at c=64. No Python gateway on uvicorn can "
            "exceed the floor, "
            + _floor_verdict(s.get("floor_c32_vs_direct"))
            + " (see the notes).",
        ]
        errs = [d["c32_non_2xx"], tw["c32_non_2xx"], ll["c32_non_2xx"], tw["c32_socket_errors"]]
        out += floor_lines
        out += [
            "",
            f"Errors under load (median non-2xx at c=32: direct {fmt(errs[0], 0)}, tierwise "
            f"{fmt(errs[1], 0)}, LiteLLM {fmt(errs[2], 0)}; tierwise socket errors {fmt(errs[3], 0)}).",
            "",
            "Per run (a / b / c):",
            "",
            f"- added latency p50, auto (ms): tierwise {spread(tw['auto_added_p50_ms_runs'], 3)}; "
            f"LiteLLM {spread(ll['auto_added_p50_ms_runs'], 2)}",
            f"- throughput c=32 (req/s): direct {spread(d['c32_rps_runs'], 0)}; tierwise "
            f"{spread(tw['c32_rps_runs'], 0)}; LiteLLM {spread(ll['c32_rps_runs'], 1)}",
            f"- tierwise ÷ direct at c=32: {spread(s['c32_vs_direct_runs'], 3)}; tierwise ÷ LiteLLM: "
            f"{spread(s['c32_vs_litellm_runs'], 1)}",
            f"- RSS (MiB): tierwise {spread(tw['rss_mb_runs'], 1)} after {spread(tw['rss_after_requests_runs'], 0)} "
            f"requests; LiteLLM {spread(ll['rss_mb_runs'], 1)} after {spread(ll['rss_after_requests_runs'], 0)}",
            f"- start-up (s): tierwise {spread(tw['startup_s_runs'], 2)}; LiteLLM {spread(ll['startup_s_runs'], 1)}",
            "",
            "## `tierwise serve --workers 2`",
            "",
            "| Measure | 1 worker | 2 workers | 2 ÷ 1 | 2 workers ÷ direct |",
            "|---|---:|---:|---:|---:|",
        ]
        for c in ("c32", "c64"):
            out.append(
                f"| throughput c={c[1:]} (req/s) | {fmt(tw[f'{c}_rps'], 0)} | {fmt(s[f'w2_{c}_rps'], 0)} | "
                f"{fmt(s[f'w2_{c}_vs_w1'], 2)}× | {fmt(None if s[f'w2_{c}_vs_direct'] is None else 100 * s[f'w2_{c}_vs_direct'], 1)} % |"
            )
            out.append(
                f"| CPU per request c={c[1:]} (ms, all processes) | {fmt(tw[f'{c}_cpu_ms_per_req'], 3)} | "
                f"{fmt(s[f'w2_{c}_cpu'], 3)} | – | – |"
            )
        out.append(
            f"| resident memory, all processes (MiB) | {fmt(tw['rss_mb'], 1)} | {fmt(s['w2_rss_mb'], 1)} | – | – |"
        )
        out.append(
            f"| start-up to the first 200 (s) | {fmt(tw['startup_s'], 2)} | {fmt(s['w2_startup_s'], 2)} | – | – |"
        )
        out += [
            "",
            f"Per run, 2 workers at c=32 (req/s): {spread(s['w2_c32_rps_runs'], 0)}.",
            "",
            "## Library, classifier and ledger",
            "",
            "| Measure | tierwise | per run |",
            "|---|---:|---|",
            f"| `import tierwise` (fresh interpreter, ms) | {fmt(None if s['import_s'] is None else s['import_s'] * 1000, 1)} | "
            f"{spread([None if v is None else v * 1000 for v in s['import_runs']], 1)} |",
            f"| decision latency p50, `Router.decide`, {s['prompts']:,} real prompts (ms) | {fmt(s['decide_p50_ms'], 3)} | "
            f"{spread(s['decide_p50_ms_runs'], 3)} |",
            f"| decision latency p99 (ms) | {fmt(s['decide_p99_ms'], 3)} | {spread(s['decide_p99_ms_runs'], 3)} |",
            f"| classifier alone p50 / p99 (ms) | {fmt(s['classify_p50_ms'], 3)} / {fmt(s['classify_p99_ms'], 3)} | – |",
            f"| ledger write throughput, SQLite WAL ({fmt(s['ledger_sqlite_rows'], 0)} rows, rows/s) | "
            f"{fmt(s['ledger_sqlite'], 0)} | {spread(s['ledger_sqlite_runs'], 0)} |",
            f"| ledger write throughput, PostgreSQL ({fmt(s['ledger_postgres_rows'], 0)} rows, rows/s) | "
            f"{fmt(s['ledger_postgres'], 0) if not s['ledger_postgres_error'] else s['ledger_postgres_error']} | "
            f"{spread(s['ledger_postgres_runs'], 0)} |",
            "",
            f"The classifier is the configured default at the time of the run (`{s['classifier']}`), "
            "built by `tierwise.router.make_classifier`; the prompts are "
            "`shared/data/prompts/sharegpt_first_turns.jsonl`. Ledger throughput is measured through "
            "`tierwise.ledger.open_ledger`: `record()` of every row, then `flush()` until all are "
            "committed (batches of the configured size).",
            "",
            "## Hot path: what the optimisations bought (measured in this run)",
            "",
            "| Measure | value | per run |",
            "|---|---:|---|",
            f"| upstream call, CPU per call at 32 in flight — tierwise's client (`gateway/http1.py`) (µs) | "
            f"{fmt(s['client_http1'], 1)} | {spread(s['client_http1_runs'], 1)} |",
            f"| the same with aiohttp as the gateway used it before (µs) | {fmt(s['client_aiohttp'], 1)} | "
            f"{spread(s['client_aiohttp_runs'], 1)} |",
            f'| gateway in-process, no sockets, `model="auto"`: CPU per request with the direct route '
            f"(`gateway/asgi.py`) (µs) | {fmt(s['asgi_direct_us_cpu'], 1)} | – |",
            f"| the same through Starlette's full middleware stack and router (µs) | "
            f"{fmt(s['asgi_full_stack_us_cpu'], 1)} | saved per run: {spread(s['asgi_saved_runs'], 1)} |",
            f"| objects tracked by the GC after start-up; a full collection before / after `gc.freeze()` (ms) | "
            f"{fmt(get(s['gc'], 'tracked_objects'), 0)} | {fmt(get(s['gc'], 'full_gc_ms'), 2)} / "
            f"{fmt(get(s['gc'], 'frozen_gc_ms'), 3)} |",
            "",
            "(`benchmarks/micro.py upstream-client`, `asgi`, `gc`; the in-process figure includes the "
            "classifier, the engine, the response and the ledger record, and excludes uvicorn's HTTP "
            "parsing and the upstream connection.)",
            "",
            "## Targets (issue 7)",
            "",
            "| Target | Goal | Measured | Verdict |",
            "|---|---|---:|---|",
        ]
        for row in targets(s, soak):
            out.append("| " + " | ".join(row) + " |")
        out += [
            "",
            "## Targets (issue 16, short requests)",
            "",
            "| Target | Goal | Measured | Verdict |",
            "|---|---|---:|---|",
        ]
        for row in targets16(s):
            out.append("| " + " | ".join(row) + " |")
        out.append("")
        out.append("![benchmarks](benchmarks/benchmarks.png)")
        out.append("")
    if soak is not None and soak_res is not None:
        out += [
            "## Soak (issue 6, item 5)",
            "",
            f'{soak["requests"]:,} `model="auto"` requests through one `tierwise serve` (ledger on) at '
            f"concurrency 32 in {soak['seconds']:.0f} s, {soak['errors']} errors; resident memory sampled "
            f"every 2 s ({soak_res['machine']['date']}).",
            "",
            "| Measure | MiB |",
            "|---|---:|",
            f"| at start | {soak['rss_start']:.1f} |",
            f"| after warm-up ({soak['rss_warm_at']:,} requests, 20 %) | {soak['rss_warm']:.1f} |",
            f"| peak after warm-up | {soak['rss_peak']:.1f} |",
            f"| at the end | {soak['rss_final']:.1f} |",
            f"| growth after warm-up (end / peak) | {100 * (soak['growth'] or 0):.1f} % / "
            f"{100 * (soak['peak_growth'] or 0):.1f} % |",
            "",
            "![soak](benchmarks/soak.png)",
            "",
        ]
    out += streams or []
    out += [
        "## Commands",
        "",
        "```sh",
        "make bench            # the full suite (3 runs + soak + long streams, ~40 min here): rewrites this file",
        "make bench QUICK=1    # one short run (a few minutes) → .bench/quick/BENCHMARKS.md",
        "make soak             # only the soak (100,000 requests) → the soak section here",
        "make bench-streams    # only the long streams (3 runs, ~25 min) → the long-stream section here",
        "make bench-streams QUICK=1   # C=200, 50 events over 5 s, one run (~1 min) → .bench/quick/",
        "make bench-ab REF=main [STREAMS=1000]   # CPU per request (per event) vs REF, alternated",
        ".venv/bin/python benchmarks/longstream.py --targets direct,tierwise --ref REF \\",
        "    --runs 1 --out benchmarks/results/longstream-before.json   # a commit's gateway, this harness",
        "make profile          # py-spy profile of the gateway under wrk load → .bench/profile.*",
        ".venv/bin/python benchmarks/report.py   # re-render this file from benchmarks/results/",
        "```",
        "",
        "The results above were produced by `benchmarks/run.py` (what `make bench` runs) in a "
        "clean checkout of the commit named at the top (a `git worktree` with `PYTHONPATH` "
        "pointing at its `src/`, so that work in progress in the main checkout was not measured):",
        "",
        "```sh",
        f"git worktree add --detach /tmp/twbench-{commit} {commit} && cd /tmp/twbench-{commit}",
        "PYTHONPATH=$PWD/src TIERWISE_BENCH_DIR=/work/main/.bench \\",
        "  TIERWISE_BENCH_PROMPTS=/work/shared/data/prompts/sharegpt_first_turns.jsonl \\",
        "  /work/main/.venv/bin/python benchmarks/run.py",
        "```",
        "",
        "`make bench` installs what it needs on first use: wrk (`apt-get install wrk`) and "
        "LiteLLM (`pip install 'litellm[proxy]==1.108.7'` into `.bench/litellm-venv`, git-ignored).",
        "",
    ]
    if notes and NOTES.exists():
        out.append(NOTES.read_text().rstrip() + "\n")
    return "\n".join(out)


def chart(res: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = summarise(res)
    d, tw, ll = s["direct"], s["tierwise"], s["litellm"]
    fig, axes = plt.subplots(2, 2, figsize=(12, 8.5))
    names = ["direct", "tierwise", "tierwise ×2", "LiteLLM"]
    colors = ["#888888", "#2b6cb0", "#63b3ed", "#c05621"]
    ax = axes[0][0]
    width = 0.16
    bars = [
        ("direct", [d["c32_rps"], d["c64_rps"]], colors[0]),
        ("floor: bare uvicorn app", [s["floor_c32_rps"], s["floor_c64_rps"]], "#b7b7b7"),
        ("tierwise", [tw["c32_rps"], tw["c64_rps"]], colors[1]),
        ("tierwise ×2 workers", [s["w2_c32_rps"], s["w2_c64_rps"]], colors[2]),
        ("LiteLLM", [ll["c32_rps"], ll["c64_rps"]], colors[3]),
    ]
    for i, (name, vals, color) in enumerate(bars):
        xs = [j + (i - 2) * width for j in range(2)]
        ax.bar(xs, [v or 0 for v in vals], width, label=name, color=color)
        for x, v in zip(xs, vals, strict=True):
            if v:
                ax.text(x, v, f"{v:,.0f}", ha="center", va="bottom", fontsize=6)
    ax.set_xticks([0, 1], ["c=32", "c=64"])
    ax.set_yscale("log")
    ax.set_ylabel("requests / s (log)")
    ax.set_title("Throughput")
    ax.legend(fontsize=7, loc="upper right", framealpha=0.9)
    ax.set_ylim(top=ax.get_ylim()[1] * 8)

    ax = axes[0][1]
    xs = list(range(len(SCENARIOS)))
    tv = [max(tw[f"{sc}_added_p50_ms"] or 0, 0.001) for sc in SCENARIOS]
    lv = [max(ll[f"{sc}_added_p50_ms"] or 0, 0.001) for sc in SCENARIOS]
    ax.bar([x - 0.2 for x in xs], tv, 0.4, label="tierwise", color=colors[1])
    ax.bar([x + 0.2 for x in xs], lv, 0.4, label="LiteLLM", color=colors[3])
    for x, v in zip(xs, tv, strict=True):
        ax.text(x - 0.2, v, f"{v:.2f}", ha="center", va="bottom", fontsize=7)
    for x, v in zip(xs, lv, strict=True):
        ax.text(x + 0.2, v, f"{v:.1f}", ha="center", va="bottom", fontsize=7)
    ax.axhline(1.0, color="green", linestyle="--", linewidth=1, label="target 1 ms")
    ax.set_xticks(xs, ["auto", "pinned", "auto\nstream TTFB", "pinned\nstream TTFB"], fontsize=8)
    ax.set_yscale("log")
    ax.set_ylabel("ms over direct, p50, c=1 (log)")
    ax.set_title("Added latency")
    ax.legend(fontsize=8)

    ax = axes[1][0]
    vals = [
        d["c32_cpu_ms_per_req"],
        tw["c32_cpu_ms_per_req"],
        s["w2_c32_cpu"],
        ll["c32_cpu_ms_per_req"],
    ]
    ax.bar(names, [v or 0 for v in vals], color=colors)
    for i, v in enumerate(vals):
        if v:
            ax.text(i, v, f"{v:.3f}", ha="center", va="bottom", fontsize=8)
    ax.set_yscale("log")
    ax.set_ylabel("CPU ms / request at c=32 (log)")
    ax.set_title("CPU time per request (server processes)")

    ax = axes[1][1]
    vals = [tw["rss_mb"], ll["rss_mb"]]
    ax.bar(["tierwise", "LiteLLM"], [v or 0 for v in vals], color=[colors[1], colors[3]])
    for i, v in enumerate(vals):
        if v:
            ax.text(i, v, f"{v:.0f} MiB", ha="center", va="bottom", fontsize=8)
    ax.axhline(150, color="green", linestyle="--", linewidth=1, label="target 150 MB")
    ax.set_ylabel("resident memory (MiB)")
    ax.set_title(
        f"RSS after {tw['rss_after_requests'] or 0:,.0f} (tierwise) / {ll['rss_after_requests'] or 0:,.0f} (LiteLLM) requests",
        fontsize=9,
    )
    ax.legend(fontsize=8)
    fig.suptitle(
        f"tierwise vs LiteLLM vs direct — {res['machine']['date']}, median of {s['runs']} runs"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def soak_chart(soak_res: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    samples = soak_res["soak"]["samples"]
    fig, ax = plt.subplots(figsize=(8, 4))
    ax.plot([x[0] for x in samples], [x[2] for x in samples], marker=".", color="#2b6cb0")
    ax.set_xlabel("requests served")
    ax.set_ylabel("resident memory (MiB)")
    ax.set_ylim(bottom=0)
    ax.set_title("tierwise serve: RSS during the soak (c=32)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _floor_verdict(floor_vs_direct: float | None) -> str:
    """What the floor says about the ≥ 30 %-of-direct target, from this run's numbers."""
    if floor_vs_direct is None:
        return "so the floor bounds what any gateway can reach"
    if floor_vs_direct < 0.30:
        return (
            "so against this upstream the ≥ 30 %-of-direct target is out of reach by construction"
        )
    share = 0.30 / floor_vs_direct
    return (
        f"so against this upstream the ≥ 30 %-of-direct target needs a gateway running at "
        f"{100 * share:.0f} % of the speed of a server that does no work at all"
    )


def write(results_dir: Path, md: Path, chart_dir: Path, *, notes: bool = True) -> None:
    bench = results_dir / "bench.json"
    soak = results_dir / "soak.json"
    res = json.loads(bench.read_text()) if bench.exists() else None
    soak_res = json.loads(soak.read_text()) if soak.exists() else None
    try:
        if res is not None:
            chart(res, chart_dir / "benchmarks.png")
        if soak_res is not None:
            soak_chart(soak_res, chart_dir / "soak.png")
    except ImportError as exc:  # matplotlib comes with the dev/train extras
        print(f"charts skipped: {exc}", file=sys.stderr)
    import report_streams

    stream_notes = NOTES_STREAMS.read_text() if notes and NOTES_STREAMS.exists() else ""
    streams = report_streams.section(results_dir, stream_notes)
    md.write_text(render(res, soak_res, notes=notes, streams=streams))


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT / "benchmarks"))
    write(ROOT / "benchmarks" / "results", ROOT / "BENCHMARKS.md", ROOT / "benchmarks")

"""The "Long streams" section of BENCHMARKS.md, from ``benchmarks/longstream.py``'s results.

    python benchmarks/report_streams.py benchmarks/results/longstream.json   # print the section

Every figure is the median over the runs; an *added* figure and a ratio are computed within
one run (same machine state, same C) and then their median is taken.
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path
from typing import Any

TARGETS = ("direct", "tierwise", "litellm", "floor")
NAMES = {
    "direct": "direct",
    "tierwise": "tierwise",
    "litellm": "LiteLLM",
    "floor": "floor (bare relay)",
}


def med(values: list[Any]) -> float | None:
    vals = [float(v) for v in values if isinstance(v, int | float)]
    return statistics.median(vals) if vals else None


def fmt(v: float | None, digits: int = 1) -> str:
    if v is None:
        return "–"
    if abs(v) >= 10_000:
        return f"{v:,.0f}"
    return f"{v:,.{digits}f}"


def spread(values: list[Any], digits: int = 1) -> str:
    return " / ".join(fmt(v, digits) if isinstance(v, int | float) else "–" for v in values)


def phase(run: dict[str, Any], target: str, c: int) -> dict[str, Any] | None:
    """The phase of ``target`` at ``c``; for "direct", made twice (before and after the
    gateways), a merged phase whose percentiles are the lower of the two (the instrument's
    delay least disturbed by other work on the machine)."""
    found = [
        p
        for p in run["phases"]
        if p.get("target") == target and p.get("streams") == c and p.get("client")
    ]
    if not found:
        return next(
            (p for p in run["phases"] if p.get("target") == target and p.get("streams") == c),
            None,
        )
    if len(found) == 1:
        return found[0]
    merged = {**found[0], "client": dict(found[0]["client"])}
    for key in ("transit_ms", "ttfb_ms"):
        merged["client"][key] = {
            q: min(
                (f["client"][key][q] for f in found if f["client"][key].get(q) is not None),
                default=None,
            )
            for q in found[0]["client"][key]
        }
    merged["client"]["completed"] = min(f["client"]["completed"] for f in found)
    merged["repeats"] = found
    return merged


def client(p: dict[str, Any] | None, *path: str) -> Any:
    d: Any = (p or {}).get("client")
    for key in path:
        if not isinstance(d, dict):
            return None
        d = d.get(key)
    return d


def cell(res: dict[str, Any], target: str, c: int) -> dict[str, Any]:
    """Medians over the runs of one (target, C), with the per-run values kept."""
    runs = res["runs"]
    out: dict[str, Any] = {"runs": []}
    per: dict[str, list[Any]] = {}

    def add(key: str, value: Any) -> None:
        per.setdefault(key, []).append(value)

    for r in runs:
        p = phase(r, target, c)
        d = phase(r, "direct", c)
        out["runs"].append(p)
        add("completed", client(p, "completed"))
        for q in ("p50", "p99", "max"):
            add(f"transit_{q}", client(p, "transit_ms", q))
            add(f"ttfb_{q}", client(p, "ttfb_ms", q))
            t, base = client(p, "transit_ms", q), client(d, "transit_ms", q)
            add(f"added_{q}", t - base if t is not None and base is not None else None)
            t, base = client(p, "ttfb_ms", q), client(d, "ttfb_ms", q)
            add(f"ttfb_added_{q}", t - base if t is not None and base is not None else None)
        for key in (
            "rss_idle_mb",
            "rss_peak_mb",
            "rss_per_stream_kb",
            "cpu_ms_per_stream",
            "cpu_us_per_event",
            "fds_peak",
            "upstream_us_per_event",
        ):
            add(key, (p or {}).get(key))
        add("client_us_per_event", client(p, "client_us_per_event"))
        for q in ("p50", "p99"):
            add(f"connect_{q}", client(p, "connect_ms", q))
            add(f"first_byte_{q}", client(p, "request_to_first_byte_ms", q))
        peaks = (p or {}).get("accept_queue_peak") or {}
        add("acceptq_target", peaks.get("target"))
        add("acceptq_upstream", peaks.get("upstream"))
        add("listen_overflows", ((p or {}).get("tcp") or {}).get("ListenOverflows"))
        cpu, wall = client(p, "client_cpu_s"), client(p, "wall_s")
        add("client_cores", cpu / wall if cpu is not None and wall else None)
        gw_cpu = (p or {}).get("cpu_s")
        add("cores", gw_cpu / wall if gw_cpu is not None and wall else None)
        add("events", client(p, "events_received"))
    for key, values in per.items():
        out[key] = med(values)
        out[f"{key}_runs"] = values
    outcomes: dict[str, list[int]] = {}
    for i, p in enumerate(out["runs"]):
        for name, n in (client(p, "outcomes") or {}).items():
            outcomes.setdefault(name, [0] * len(runs))[i] = n
        if p is None or p.get("error") or p.get("client_error"):
            why = (p or {}).get("error") or (p or {}).get("client_error") or "not run"
            outcomes.setdefault(f"phase failed: {str(why)[:80]}", [0] * len(runs))[i] = c
    out["outcomes"] = outcomes
    return out


def ratio(res: dict[str, Any], c: int, key: str, path: tuple[str, ...]) -> float | None:
    """Median over runs of LiteLLM's ÷ tierwise's value (both read in the same run)."""
    vals = []
    for r in res["runs"]:
        tw, ll, d = phase(r, "tierwise", c), phase(r, "litellm", c), phase(r, "direct", c)
        if key == "added_p99":
            a, b, base = (
                client(tw, *path),
                client(ll, *path),
                client(d, *path),
            )
            if None in (a, b, base):
                continue
            a, b = a - base, b - base
        else:
            a, b = (tw or {}).get(key), (ll or {}).get(key)
        if isinstance(a, int | float) and isinstance(b, int | float) and a > 0:
            vals.append(b / a)
    return med(vals)


def outcome_text(cl: dict[str, Any], c: int) -> str:
    done = cl.get("completed")
    text = f"{fmt(done, 0)} / {c:,}"
    fails = {k: v for k, v in cl["outcomes"].items() if k != "completed" and med(v)}
    if fails:
        text += " (" + ", ".join(f"{k} {fmt(med(v), 0)}" for k, v in sorted(fails.items())) + ")"
    return text


def render(res: dict[str, Any], *, heading: str = "## Long streams", notes: str = "") -> str:
    m, plan = res["machine"], res["plan"]
    targets = [t for t in TARGETS if t in res.get("targets", TARGETS)]
    cs = list(plan["streams"])
    runs = len(res["runs"])
    label = res.get("label") or ""
    loads = [
        x
        for r in res["runs"]
        for p in r["phases"]
        for x in (p.get("load_before", [None])[0], p.get("load_after", [None])[0])
        if x is not None
    ]
    out = [heading, ""]
    code = m.get("src_commit") or m["commit"]
    dirty = " plus uncommitted changes" if m.get("src_dirty") else ""
    out += [
        (f"**{label}** — " if label else "")
        + f"{m['date']}; the gateway's code as of commit `{code}`{dirty} (the last commit "
        f"that touched `src/` or `pyproject.toml`), benchmark harness at `{m['commit']}`.",
        "",
    ]
    out += [
        f"C concurrent streams, each {plan['events']} events over {plan['seconds']:g} s "
        f"(Messages grammar: `message_start` with usage, `content_block_start`, `ping`, "
        f"{plan['events'] - 6} text deltas of ~150–190 bytes, `content_block_stop`, "
        f"`message_delta` with usage, `message_stop`), started evenly over {plan['ramp_s']:g} s, "
        f"through one `tierwise serve` worker, LiteLLM {m.get('litellm')}'s proxy "
        f"(`--num_workers 1`)"
        + (
            ", a bare relay that only copies bytes between the sockets (`floor_relay.py`: "
            "the floor of any Python relay on uvloop here)"
            if "floor" in targets
            else ""
        )
        + " and directly against the fake upstream (order at each C: "
        f"{', '.join(NAMES[t] for t in targets)}"
        f"{', direct again' if 'direct' in targets and len(targets) > 1 else ''}; a fresh gateway "
        f"process for each phase, one "
        f"upstream for the whole run), {runs} run{'s' if runs > 1 else ''} "
        f"(`benchmarks/longstream.py`, profile {m.get('profile')}), wall time "
        f"{res.get('elapsed_s', 0) / 60:.1f} min. How a stream that did not complete ended: "
        f"`timeout_no_response` / `timeout_no_event` / `timeout_mid_stream` (still open "
        f"{plan['grace_s']:g} s after the last stream should have ended, with no response yet / "
        "headers but no event / some events), `closed_early` (the connection closed before "
        "`message_stop`) or `closed_no_response`, `<exception>_<where>` (the connection "
        "failed, e.g. `ConnectionResetError_no_response`), `http_<status>`, `error_event` (an "
        "SSE `error` event), `connect_<error>`.",
        "",
        f"Machine: `nproc` = {m['nproc']}, {m['cpu']}, Linux {m['kernel']}, Python {m['python']}; "
        f"RLIMIT_NOFILE {m['nofile'][0]:,} (soft = hard; every benchmark process raises its "
        f"soft limit to the hard one); somaxconn {m.get('net.core.somaxconn', '?')}, "
        f"tcp_tw_reuse {m.get('net.ipv4.tcp_tw_reuse', '?')}. The machine is shared with other "
        f"agents: 1-minute load average {min(loads, default=0):.2f} to {max(loads, default=0):.2f} "
        "during the phases (2 cores), so absolute delays are noisy; the *added* figures and the "
        "ratios compare phases a few seconds apart.",
        "",
        "| C | target | streams completed | TTFB p50 / p99 (ms) | added TTFB p99 (ms) | "
        "transit p50 / p99 / max (ms) | **added** p50 / p99 / max (ms) | RSS idle → peak (MiB) | "
        "RSS per open stream (KiB) | CPU per stream (ms) | CPU per event (µs) | fds peak |",
        "|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    cells = {(t, c): cell(res, t, c) for c in cs for t in targets}
    for c in cs:
        for t in targets:
            x = cells[(t, c)]
            gw = t != "direct"
            out.append(
                f"| {c:,} | {NAMES[t]} | {outcome_text(x, c)} | "
                f"{fmt(x['ttfb_p50'], 2)} / {fmt(x['ttfb_p99'], 1)} | "
                f"{fmt(x['ttfb_added_p99'], 1) if gw else '–'} | "
                f"{fmt(x['transit_p50'], 2)} / {fmt(x['transit_p99'], 1)} / {fmt(x['transit_max'], 0)} | "
                + (
                    f"**{fmt(x['added_p50'], 2)} / {fmt(x['added_p99'], 1)} / {fmt(x['added_max'], 0)}** | "
                    if gw
                    else "– | "
                )
                + (
                    f"{fmt(x['rss_idle_mb'], 0)} → {fmt(x['rss_peak_mb'], 0)} | "
                    f"{fmt(x['rss_per_stream_kb'], 1)} | "
                    if gw
                    else "– | – | "
                )
                + (
                    f"{fmt(x['cpu_ms_per_stream'], 2)} | {fmt(x['cpu_us_per_event'], 1)} | "
                    f"{fmt(x['fds_peak'], 0)} |"
                    if gw
                    else f"({fmt(x['cpu_ms_per_stream'], 2)}) | ({fmt(x['upstream_us_per_event'], 1)}) | "
                    f"({fmt(x['fds_peak'], 0)}) |"
                )
            )
    out += [
        "",
        "Direct rows: no gateway; measured twice at each C (before and after the gateways), the "
        "lower of the two per percentile; the CPU and descriptor columns in parentheses are the "
        "fake upstream's own. *Transit* = receive time at the client − send time at the upstream, per "
        "text delta; *added* = the gateway's transit percentile − the direct run's same "
        "percentile at the same C in the same run (max − max for the last column). TTFB = from "
        "the start of the TCP connect to the first byte of the response. RSS per open stream = "
        "(peak − idle after warm-up) ÷ the most streams open at once; CPU = user + system time "
        "of the gateway's process(es) during the phase ÷ streams (or ÷ events relayed).",
        "",
    ]
    # Diagnostics: where the time to first byte goes, and the listening sockets.
    out += [
        "Where the time to first byte goes, and the listening sockets (medians over the runs; "
        "accept queue = connections the kernel has completed but the server has not yet "
        "accepted, `ss` Recv-Q sampled every second; overflows = the kernel's ListenOverflows "
        "counter during the phase, machine-wide):",
        "",
        "| C | target | connect p50 / p99 (ms) | request → first byte p50 / p99 (ms) | "
        "accept queue peak: server / upstream | listen overflows | CPU used (cores, mean over "
        "the phase) |",
        "|---:|---|---:|---:|---:|---:|---:|",
    ]
    for c in cs:
        for t in targets:
            x = cells[(t, c)]
            out.append(
                f"| {c:,} | {NAMES[t]} | {fmt(x.get('connect_p50'), 2)} / "
                f"{fmt(x.get('connect_p99'), 1)} | {fmt(x.get('first_byte_p50'), 2)} / "
                f"{fmt(x.get('first_byte_p99'), 1)} | {fmt(x.get('acceptq_target'), 0)} / "
                f"{fmt(x.get('acceptq_upstream'), 0) if t != 'direct' else '–'} | "
                f"{fmt(x.get('listen_overflows'), 0)} | {fmt(x.get('cores'), 2)}"
                f"{' (upstream)' if t == 'direct' else ''} |"
            )
    out.append("")
    # The instrument.
    inst = []
    for c in cs:
        x = cells[("direct", c)]
        inst.append(
            f"C={c:,}: client {fmt(x['client_us_per_event'], 1)} µs CPU per event "
            f"({fmt(None if x['client_cores'] is None else 100 * x['client_cores'], 0)} % of a core), "
            f"upstream {fmt(x['upstream_us_per_event'], 1)} µs per event, direct transit p99 "
            f"{fmt(x['transit_p99'], 1)} ms"
        )
    out += [
        "**The instrument** (direct runs, the same client and upstream as every other row): "
        + "; ".join(inst)
        + ". Its own delay is what the direct transit shows; it is subtracted from every *added* "
        "figure.",
        "",
    ]
    # Ratios and targets.
    if "tierwise" in targets and "litellm" in targets:
        out += [
            "| C | LiteLLM ÷ tierwise: RSS peak | LiteLLM ÷ tierwise: added delay p99 | "
            "LiteLLM ÷ tierwise: CPU per stream |",
            "|---:|---:|---:|---:|",
        ]
        for c in cs:
            out.append(
                f"| {c:,} | {fmt(ratio(res, c, 'rss_peak_mb', ()), 2)}× | "
                f"{fmt(ratio(res, c, 'added_p99', ('transit_ms', 'p99')), 2)}× | "
                f"{fmt(ratio(res, c, 'cpu_ms_per_stream', ()), 2)}× |"
            )
        out.append("")
    out += targets_table(res, cells, cs, targets)
    out += [
        "Per run (a / b / c):",
        "",
    ]
    for c in cs:
        for t in targets:
            if t == "direct":
                continue
            x = cells[(t, c)]
            out.append(
                f"- C={c:,}, {NAMES[t]}: completed {spread(x['completed_runs'], 0)}; added p99 (ms) "
                f"{spread(x['added_p99_runs'], 1)}; RSS peak (MiB) {spread(x['rss_peak_mb_runs'], 0)}; "
                f"CPU per stream (ms) {spread(x['cpu_ms_per_stream_runs'], 2)}"
            )
        both = []
        for r in res["runs"]:
            reps = [
                client(p, "transit_ms", "p99")
                for p in r["phases"]
                if p.get("target") == "direct" and p.get("streams") == c
            ]
            both.append(" & ".join(fmt(v, 1) for v in reps if v is not None) or "–")
        out.append(
            f"- C={c:,}, direct (before & after the gateways): transit p99 (ms) {' / '.join(both)}"
        )
    out.append("")
    if notes:
        out += [notes.rstrip(), ""]
    return "\n".join(out)


def targets_table(
    res: dict[str, Any],
    cells: dict[tuple[str, int], dict[str, Any]],
    cs: list[int],
    targets: list[str],
) -> list[str]:
    if "tierwise" not in targets:
        return []
    big = max(cs)
    tw = cells[("tierwise", big)]
    rows = []

    def verdict(ok: bool | None, miss: str = "") -> str:
        if ok is None:
            return "–"
        return "**met**" if ok else "**missed**" + (f" {miss}" if miss else "")

    if big < 5000:
        lines_note = [
            f"(The largest C of this run is {big:,}: the issue's targets are stated for "
            "C=5,000; this table applies the same thresholds at C="
            f"{big:,}.)",
            "",
        ]
    else:
        lines_note = []
    done = tw["completed"]
    rows.append(
        (
            f"{big:,} concurrent streams on one worker complete",
            "100 %",
            f"{fmt(None if done is None else 100 * done / big, 1)} %",
            verdict(None if done is None else done >= big, ""),
        )
    )
    a = tw["added_p99"]
    rows.append(
        (
            f"added inter-event delay p99 at C={big:,}",
            "≤ 5 ms",
            f"{fmt(a, 1)} ms",
            verdict(None if a is None else a <= 5, f"({fmt(a / 5 if a else None, 1)}× the target)"),
        )
    )
    r = tw["rss_peak_mb"]
    rows.append(
        (
            f"RSS at C={big:,}",
            "≤ 400 MB",
            f"{fmt(r, 0)} MiB",
            verdict(None if r is None else r <= 400),
        )
    )
    if "litellm" in targets:
        ok_cs = [
            c
            for c in cs
            if cells[("litellm", c)]["completed"] is not None
            and cells[("litellm", c)]["completed"] >= c
        ]
        if ok_cs:
            c = max(ok_cs)
            rr = ratio(res, c, "rss_peak_mb", ())
            rows.append(
                (
                    f"RSS vs LiteLLM at C={c:,} (largest C LiteLLM completes)",
                    "≤ 1/3 (LiteLLM ÷ tierwise ≥ 3×)",
                    f"LiteLLM ÷ tierwise = {fmt(rr, 2)}×",
                    verdict(None if rr is None else rr >= 3),
                )
            )
            ra = ratio(res, c, "added_p99", ("transit_ms", "p99"))
            rows.append(
                (
                    f"added delay p99 vs LiteLLM at C={c:,}",
                    "≤ 1/5 (LiteLLM ÷ tierwise ≥ 5×)",
                    f"LiteLLM ÷ tierwise = {fmt(ra, 2)}×",
                    verdict(None if ra is None else ra >= 5),
                )
            )
        else:
            rows.append(("vs LiteLLM", "–", "LiteLLM completed no C fully", "–"))
    lines = [
        *lines_note,
        "| Target (issue 16) | Goal | Measured | Verdict |",
        "|---|---|---:|---|",
    ]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    lines.append("")
    return lines


def section(results_dir: Path, notes: str = "") -> list[str]:
    """The whole "Long streams" section from the results in ``results_dir``: the latest run
    (``longstream.json``), the code before issue 16 measured with the same harness
    (``longstream-before.json``), the frozen baseline (``longstream-baseline.json``) when it
    is a different run, the small-C sweep (``longstream-small-c-baseline.json``) and the
    QUICK-size validation run (``longstream-quick-baseline.json``)."""

    def load(name: str) -> dict[str, Any] | None:
        path = results_dir / name
        return json.loads(path.read_text()) if path.exists() else None

    latest, base, quick, small, before = (
        load("longstream.json"),
        load("longstream-baseline.json"),
        load("longstream-quick-baseline.json"),
        load("longstream-small-c-baseline.json"),
        load("longstream-before.json"),
    )
    if latest is None and base is None and quick is None and small is None:
        return []
    out = ["## Long streams (issue 16)", ""]
    same = (
        latest is not None
        and base is not None
        and latest["machine"]["date"] == base["machine"]["date"]
        and latest["machine"]["commit"] == base["machine"]["commit"]
    )
    if latest is not None:
        out.append(render(latest, heading="### Full size" if quick else "### Results"))
    if before is not None:
        out.append(
            render(
                before,
                heading="### Before the issue-16 work, measured with the same instrument "
                "(`longstream.py --ref`)",
            )
        )
    if base is not None and not same:
        out.append(render(base, heading="### Baseline before the issue-16 work"))
    if small is not None:
        out.append(
            render(
                small,
                heading="### Small C at full length: the largest C that LiteLLM completes "
                "(`longstream.py --streams 50,100,200 --runs 1`)",
            )
        )
    if quick is not None:
        out.append(render(quick, heading="### QUICK size (`make bench-streams QUICK=1`)"))
    if notes:
        out += [notes.rstrip(), ""]
    return out


if __name__ == "__main__":
    print(render(json.loads(Path(sys.argv[1]).read_text())))

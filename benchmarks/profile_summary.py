"""Summarise py-spy's collapsed stacks (``py-spy record -f raw``): the functions with the most
samples, inclusive (anywhere on the stack) and self (at the top of the stack).

    python benchmarks/profile_summary.py .bench/profile.raw [--top 40] [--match tierwise]
"""

from __future__ import annotations

import argparse
import collections
import re
from pathlib import Path

_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>.*?)(?::(?P<line>\d+))?\)$")


def _name(frame: str, keep_line: bool) -> str:
    m = _FRAME.match(frame.strip())
    if not m:
        return frame.strip()
    path = m.group("file")
    for marker in ("site-packages/", "src/", "lib/python3"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    line = f":{m.group('line')}" if keep_line and m.group("line") else ""
    return f"{m.group('func')} ({path}{line})"


def summarise(text: str, keep_line: bool = False) -> tuple[int, dict[str, int], dict[str, int]]:
    total = 0
    inclusive: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    for raw in text.splitlines():
        stack, _, count_s = raw.rpartition(" ")
        if not stack or not count_s.isdigit():
            continue
        count = int(count_s)
        frames = [_name(f, keep_line) for f in stack.split(";") if f]
        if not frames:
            continue
        total += count
        for name in set(frames):
            inclusive[name] += count
        own[frames[-1]] += count
    return total, dict(inclusive), dict(own)


# Where a sample's CPU goes: the innermost frame on its stack that belongs to one of these
# components (checked from the leaf upwards), so a library called by a component (numpy from
# the classifier, sqlite3 from the ledger) is charged to that component.
COMPONENTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        "classifier (tierwise/classifiers, textfeatures)",
        ("tierwise/classifiers/", "tierwise/textfeatures"),
    ),
    ("ledger (tierwise/ledger: record() on the loop + the writer thread)", ("tierwise/ledger/",)),
    ("pricing (tierwise/pricing.py)", ("tierwise/pricing",)),
    (
        "telemetry (gateway/telemetry.py, metrics)",
        ("tierwise/gateway/telemetry", "tierwise/metrics"),
    ),
    (
        "upstream client (gateway/http1.py, upstream.py)",
        ("tierwise/gateway/http1", "tierwise/gateway/upstream"),
    ),
    (
        "disconnect watch and SSE relay (gateway/relay.py, sse.py)",
        ("tierwise/gateway/relay", "tierwise/gateway/sse"),
    ),
    (
        "session routing (tierwise/sessions, gateway/shape.py: analyse, identify, route, observe)",
        ("tierwise/sessions/", "tierwise/gateway/shape"),
    ),
    (
        "request life and accounting (tierwise/lifecycle.py, accounting.py, adapt.py, worstcase.py)",
        ("tierwise/lifecycle", "tierwise/accounting", "tierwise/adapt", "tierwise/worstcase"),
    ),
    (
        "client connection (gateway/connections.py: the writes to the client, the limits)",
        ("tierwise/gateway/connections",),
    ),
    (
        "engine, router, policy, budgets (the rest of the decision and the record)",
        (
            "tierwise/gateway/engine",
            "tierwise/router",
            "tierwise/policy",
            "tierwise/budgets",
            "tierwise/keys",
            "tierwise/config",
            "tierwise/types",
            "tierwise/features",
        ),
    ),
    (
        "gateway endpoints (gateway/app.py, anthropic_api.py, access.py, validate.py, asgi.py, …)",
        ("tierwise/gateway/",),
    ),
    ("starlette (Request, Response)", ("starlette/",)),
    ("uvicorn (HTTP protocol)", ("uvicorn/",)),
    ("asyncio / uvloop event loop", ("asyncio/", "uvloop/", "<built-in>")),
    ("threading (idle or switching)", ("threading",)),
)


def component_of(frames: list[str]) -> str:
    for frame in reversed(frames):
        for name, markers in COMPONENTS:
            if any(m in frame for m in markers):
                return name
    return "other"


def components(text: str) -> tuple[int, dict[str, int]]:
    """Samples per component (see ``COMPONENTS``)."""
    total = 0
    out: collections.Counter[str] = collections.Counter()
    for raw in text.splitlines():
        stack, _, count_s = raw.rpartition(" ")
        if not stack or not count_s.isdigit():
            continue
        count = int(count_s)
        total += count
        out[component_of([f for f in stack.split(";") if f])] += count
    return total, dict(out)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("raw", type=Path)
    parser.add_argument("--top", type=int, default=40)
    parser.add_argument("--match", default="", help="only functions whose name contains this")
    parser.add_argument("--lines", action="store_true", help="keep line numbers")
    args = parser.parse_args(argv)
    total, inclusive, own = summarise(args.raw.read_text(), args.lines)
    print(f"{total} samples")
    for title, table in (("inclusive", inclusive), ("self", own)):
        print(f"\n== {title}")
        rows = sorted(table.items(), key=lambda kv: -kv[1])
        shown = 0
        for name, count in rows:
            if args.match and args.match not in name:
                continue
            print(f"{100 * count / max(total, 1):6.1f}%  {name}")
            shown += 1
            if shown >= args.top:
                break


if __name__ == "__main__":
    main()

"""SSE framing and tracking cost, in process: events per second through the parser alone and
through parser + tracker, for a realistic Messages stream; and the time to frame one long line.

    python benchmarks/sse_micro.py                      # the current code
    python benchmarks/sse_micro.py --baseline 518d2fa   # the same workloads, also at that commit

Times are CPU seconds of this process (``time.process_time``), steadier than wall time when
other work shares the machine. ``--baseline REV`` loads ``src/tierwise/gateway/sse.py`` as it was at ``REV`` (``git show``)
and runs it side by side (alternated rounds, best of ``--rounds``); the current code is framed
with ``EventSplitter`` when it exists, else ``SSEParser``. One JSON object on stdout.

The stream: ``message_start``, a text block of ``--events`` deltas of 20-60 characters (the
sizes the API sends), a ping every 100 events, the stop events. Chunking: one event per feed
(what the relay usually gets from the socket), and 16 KiB feeds (a burst). Line endings LF and
CRLF. The long line: one ``content_block_delta`` of ``--line-mb`` MB fed in 64 KiB pieces,
with the event limit raised above it so the parser frames all of it.
"""

from __future__ import annotations

import argparse
import functools
import gc
import importlib.util
import json
import random
import subprocess
import sys
import time
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def load_sse(rev: str | None) -> types.ModuleType:
    if rev is None:
        from tierwise.gateway import sse

        return sse
    source = subprocess.run(  # noqa: S603 - git with fixed arguments and a revision
        ["git", "show", f"{rev}:src/tierwise/gateway/sse.py"],  # noqa: S607
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    spec = importlib.util.spec_from_loader(f"sse_at_{rev}", loader=None)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    exec(compile(source, f"sse.py@{rev}", "exec"), module.__dict__)  # noqa: S102
    return module


def stream(events: int, seed: int = 1) -> list[bytes]:
    """The events of one realistic stream, each as its own bytes."""
    rng = random.Random(seed)
    words = ["the", "of", "and", "to", "in", "is", "that", "it", "for", "on", "with", "as"]

    def ev(name: str, payload: dict[str, Any]) -> bytes:
        data = json.dumps({"type": name, **payload}, separators=(",", ":"))
        return f"event: {name}\ndata: {data}\n\n".encode()

    message = {
        "id": "msg_01XFDUDYJgAACzvnptvVoYEL",
        "type": "message",
        "role": "assistant",
        "content": [],
        "model": "claude-sonnet-4-6",
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {
            "input_tokens": 2500,
            "output_tokens": 1,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
        },
    }
    out = [
        ev("message_start", {"message": message}),
        ev("content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}}),
    ]
    for i in range(events):
        text = ""
        target = rng.randint(20, 60)
        while len(text) < target:
            text += rng.choice(words) + " "
        delta = {"index": 0, "delta": {"type": "text_delta", "text": text}}
        out.append(ev("content_block_delta", delta))
        if i % 100 == 99:
            out.append(ev("ping", {}))
    out += [
        ev("content_block_stop", {"index": 0}),
        ev(
            "message_delta",
            {
                "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                "usage": {"output_tokens": events * 3},
            },
        ),
        ev("message_stop", {}),
    ]
    return out


def chunked(events: list[bytes], size: int | None) -> list[bytes]:
    if size is None:
        return events
    data = b"".join(events)
    return [data[i : i + size] for i in range(0, len(data), size)]


def framer(sse: types.ModuleType, limit: int | None = None) -> Callable[[bytes], list[Any]]:
    """``feed`` of the module's framing: EventSplitter (new) or SSEParser (old)."""
    if hasattr(sse, "EventSplitter"):
        splitter = sse.EventSplitter() if limit is None else sse.EventSplitter(limit)
        return splitter.feed  # type: ignore[no-any-return]
    return sse.SSEParser().feed  # type: ignore[no-any-return]


def run_parse(sse: types.ModuleType, chunks: list[bytes], track: bool) -> int:
    feed = framer(sse)
    tracker = sse.StreamTracker() if track else None
    count = 0
    for chunk in chunks:
        for event in feed(chunk):
            count += 1
            if tracker is not None:
                tracker.observe(event[0], event[1])
    if tracker is not None:
        assert tracker.complete
    return count


def timed(fn: Callable[[], int]) -> tuple[float, int]:
    """CPU seconds (this process only: steadier than wall time on a shared machine)."""
    gc.collect()
    started = time.process_time()
    count = fn()
    return time.process_time() - started, count


def long_line(sse: types.ModuleType, megabytes: int) -> float:
    size = megabytes * 1000 * 1000
    feed = framer(sse, limit=size * 2)
    piece = b"a" * 65536
    started = time.process_time()
    feed(b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,"delta":{')
    feed(b'"type":"text_delta","text":"')
    for _ in range(size // len(piece)):
        feed(piece)
    events = feed(b'"}}\n\n')
    assert len(events) == 1
    return time.process_time() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--line-mb", type=int, default=50)
    parser.add_argument("--baseline", help="a git revision to compare with")
    parser.add_argument("--baseline-line-mb", type=int, default=8, help="(quadratic before)")
    args = parser.parse_args()

    versions = {"current": load_sse(None)}
    if args.baseline:
        versions[f"at {args.baseline}"] = load_sse(args.baseline)
    events = stream(args.events)
    workloads = {
        "lf, one event per feed": chunked(events, None),
        "lf, 16 KiB feeds": chunked(events, 16384),
        "crlf, one event per feed": [e.replace(b"\n", b"\r\n") for e in events],
    }
    results: dict[str, Any] = {"events_per_stream": len(events), "rounds": args.rounds}
    for name, chunks in workloads.items():
        for track in (False, True):
            label = f"{'parser+tracker' if track else 'parser'}, {name}"
            best: dict[str, float] = {}
            for _ in range(args.rounds):  # alternate versions within each round
                for version, sse in versions.items():
                    seconds, count = timed(functools.partial(run_parse, sse, chunks, track))
                    assert count == len(events), (version, label, count)
                    best[version] = min(best.get(version, float("inf")), seconds)
            results[label] = {v: round(len(events) / s) for v, s in best.items()}
    line: dict[str, Any] = {
        f"current, {args.line_mb} MB": round(long_line(versions["current"], args.line_mb), 3)
    }
    if args.baseline:
        for mb in (args.baseline_line_mb // 2, args.baseline_line_mb):
            line[f"at {args.baseline}, {mb} MB"] = round(
                long_line(versions[f"at {args.baseline}"], mb), 3
            )
            line[f"current, {mb} MB"] = round(long_line(versions["current"], mb), 3)
    results["long line, seconds"] = line
    results["unit"] = "events per CPU second (best of rounds); long line in CPU seconds"
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()

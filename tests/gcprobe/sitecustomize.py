"""Probes for the gateway process, loaded only when tests/hostile_chaos.py runs with
``--gc-probe`` (it puts this directory on the gateway's PYTHONPATH and names a file in
``TIERWISE_GC_PROBE``).

- Garbage collections: every collection of the oldest generation, and any other one over
  10 ms, is appended to ``$TIERWISE_GC_PROBE.<pid>`` as ``<wall clock at its end> <generation>
  <milliseconds>``: the suite lines those up with slow /health answers.
- Event-loop stalls: a thread posts a callback to the gateway's loop every 5 ms and times it.
  While one is late by more than 30 ms, it reads the main thread's Python stack every 10 ms,
  and whether that thread was on the CPU or waiting for it (``/proc/self/task/<tid>/schedstat``).
  Each stall over 50 ms is appended to ``$TIERWISE_GC_PROBE-loop.<pid>`` as one JSON line:
  ``{"t": <wall clock at its end>, "ms", "on_cpu_ms", "runqueue_ms", "stacks": [[frames]]}``.
  A stack holding only the loop's own frames means the loop was in C (libuv, uvloop) or the
  kernel: ``perf record -p <pid>`` then names the code (RELIABILITY.md, "Under faults")."""

from __future__ import annotations

import gc
import json
import os
import sys
import threading
import time
import traceback
from typing import Any

_PATH = os.environ.get("TIERWISE_GC_PROBE")

if _PATH:
    import asyncio

    _out = open(f"{_PATH}.{os.getpid()}", "a", buffering=1, encoding="ascii")  # noqa: SIM115
    _started = [0.0]

    def _probe(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            _started[0] = time.perf_counter()
            return
        ms = (time.perf_counter() - _started[0]) * 1000
        if info["generation"] == 2 or ms > 10:
            _out.write(f"{time.time():.3f} {info['generation']} {ms:.1f}\n")

    gc.callbacks.append(_probe)

    # The loop is found when it starts running (uvloop takes asyncio._set_running_loop at
    # import, which comes after this module).
    _loops: list[tuple[asyncio.AbstractEventLoop, int]] = []
    _set_running_loop = asyncio._set_running_loop

    def _capture(loop: asyncio.AbstractEventLoop | None) -> None:
        if loop is not None and not _loops:
            _loops.append((loop, threading.get_ident()))
        _set_running_loop(loop)

    asyncio._set_running_loop = _capture
    asyncio.events._set_running_loop = _capture

    def _schedstat() -> tuple[int, int]:
        """Nanoseconds the main thread ran, and waited to run (0, 0 where unreadable)."""
        try:
            with open(f"/proc/self/task/{os.getpid()}/schedstat", encoding="ascii") as f:
                ran, waited = f.read().split()[:2]
            return int(ran), int(waited)
        except (OSError, ValueError):
            return 0, 0

    def _watch() -> None:
        while not _loops:
            time.sleep(0.05)
        loop, ident = _loops[0]
        stalls = open(f"{_PATH}-loop.{os.getpid()}", "a", buffering=1, encoding="utf-8")  # noqa: SIM115
        while not loop.is_closed():
            ran = threading.Event()
            posted = time.perf_counter()
            before = _schedstat()
            try:
                loop.call_soon_threadsafe(ran.set)
            except RuntimeError:  # the loop closed
                return
            stacks: list[list[str]] = []
            while not ran.wait(0.01):
                if time.perf_counter() - posted > 0.03:
                    frame = sys._current_frames().get(ident)
                    if frame is not None:
                        stack = [
                            f"{'/'.join(f.filename.rsplit('/', 2)[-2:])}:{f.lineno} {f.name}"
                            for f in traceback.extract_stack(frame)[-12:]
                        ]
                        if stack not in stacks:
                            stacks.append(stack)
            ms = (time.perf_counter() - posted) * 1000
            if ms > 50:
                after = _schedstat()
                record = {
                    "t": round(time.time(), 3),
                    "ms": round(ms, 1),
                    "on_cpu_ms": round((after[0] - before[0]) / 1e6, 1),
                    "runqueue_ms": round((after[1] - before[1]) / 1e6, 1),
                    "stacks": stacks,
                }
                stalls.write(json.dumps(record) + "\n")
            time.sleep(0.005)

    threading.Thread(target=_watch, name="tierwise-loop-probe", daemon=True).start()

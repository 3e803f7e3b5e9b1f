"""A garbage-collection probe for the gateway process, loaded only when tests/hostile_chaos.py
runs with ``--gc-probe`` (it puts this directory on the gateway's PYTHONPATH and names a file
in ``TIERWISE_GC_PROBE``). Every collection of the oldest generation, and any other one over
10 ms, is appended to ``$TIERWISE_GC_PROBE.<pid>`` as ``<wall clock at its end> <generation>
<milliseconds>``: the suite lines those up with slow /health answers."""

from __future__ import annotations

import gc
import os
import time
from typing import Any

_PATH = os.environ.get("TIERWISE_GC_PROBE")

if _PATH:
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

"""A process that owns a ledger, driven one command per line on stdin (storage fault tests).

    python -m tests.ledger_child HOME [wal|truncate]

Commands (each answered with one JSON line on stdout):
``record N`` (N valid entries), ``load SECONDS`` (record continuously for that long, so the
writer is inside a transaction most of the time), ``flush [TIMEOUT_S]``, ``health``, ``stats``,
``fsize BYTES`` (limit the size of any file this process writes: a full disk without root),
``unlimit``, ``exit`` (close the ledger; answers its final stats).

Faults are done *to* this process from outside (chattr, truncate, rm), as an operator or an
attacker would; if one kills it, the test sees the exit status and stderr.
"""

from __future__ import annotations

import json
import logging
import resource
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from tests.dbs import entry, settings_for
from tierwise.ledger import enable_crash_tracebacks, open_ledger


def main() -> None:
    home = Path(sys.argv[1])
    enable_crash_tracebacks()
    logging.basicConfig(
        level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(message)s"
    )
    journal = sys.argv[2] if len(sys.argv) > 2 else "wal"
    ledger = open_ledger(settings_for(home, flush_interval_s=0.005, sqlite_journal=journal))
    recorded = 0
    for line in sys.stdin:
        command, *args = line.split()
        out: dict[str, Any]
        if command == "record":
            for _ in range(int(args[0])):
                ledger.record(entry(recorded))
                recorded += 1
            out = {"recorded": recorded}
        elif command == "load":
            until = time.monotonic() + float(args[0])
            while time.monotonic() < until:  # about 2,000 a second: the writer keeps up
                for _ in range(10):
                    ledger.record(entry(recorded))
                    recorded += 1
                time.sleep(0.005)
            out = {"recorded": recorded}
        elif command == "flush":
            out = {"flushed": ledger.flush(timeout_s=float(args[0]) if args else 30.0)}
        elif command == "health":
            out = ledger.health().as_dict()
        elif command == "stats":
            out = asdict(ledger.stats())
        elif command == "fsize":
            hard = resource.getrlimit(resource.RLIMIT_FSIZE)[1]
            resource.setrlimit(resource.RLIMIT_FSIZE, (int(args[0]), hard))
            out = {"fsize": int(args[0])}
        elif command == "unlimit":
            hard = resource.getrlimit(resource.RLIMIT_FSIZE)[1]
            resource.setrlimit(resource.RLIMIT_FSIZE, (hard, hard))
            out = {"fsize": hard}
        elif command == "exit":
            ledger.close()
            out = asdict(ledger.stats())
        else:
            out = {"error": f"unknown command {command!r}"}
        print(json.dumps(out), flush=True)
        if command == "exit":
            return


if __name__ == "__main__":
    main()

"""``import tierwise`` stays light: no SDK, no pydantic, no sockets."""

from __future__ import annotations

import subprocess
import sys

PROBE = r"""
import socket, sys
def refuse(*a, **k):
    raise AssertionError("network used at import time")
socket.socket.connect = refuse
socket.create_connection = refuse
import tierwise
heavy = sorted(m for m in ("anthropic", "pydantic", "httpx", "httpx2", "typer", "rich", "numpy")
               if m in sys.modules)
print(",".join(heavy))
"""


def test_import_is_light_and_offline() -> None:
    proc = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=30, check=True
    )
    assert proc.stdout.strip() == ""


def test_public_names_load_on_demand() -> None:
    probe = "import tierwise, sys; tierwise.ModelRouter; print('anthropic' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    # Building no router yet: the SDK is only imported when a real provider is made.
    assert proc.stdout.strip() == "False"

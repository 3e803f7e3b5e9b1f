"""Fixtures for the real clients in tests/clients/ (the Python SDK clients use tests/conftest.py's
``make_gateway``; the Claude Code CLI gets a real ``tierwise serve``, see claude_rig.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.clients.claude_rig import ClaudeCodeRig, claude_or_skip, open_rig


@pytest.fixture
def claude_code(tmp_path: Path) -> Iterator[ClaudeCodeRig]:
    """The Claude Code CLI -> recorder -> `tierwise serve` -> scripted fake upstream."""
    claude = claude_or_skip()
    with open_rig(claude, tmp_path) as rig:
        yield rig

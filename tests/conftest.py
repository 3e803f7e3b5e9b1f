"""Shared pytest fixtures."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.fakes.anthropic_server import FakeAnthropic


@pytest.fixture(scope="session")
def fake_anthropic_server() -> Iterator[FakeAnthropic]:
    """One fake Anthropic API for the whole session (prefer `fake_anthropic` in tests)."""
    with FakeAnthropic() as fake:
        yield fake


@pytest.fixture
def fake_anthropic(fake_anthropic_server: FakeAnthropic) -> Iterator[FakeAnthropic]:
    """The session's fake Anthropic API, with no scripts and no recorded requests."""
    fake_anthropic_server.reset()
    yield fake_anthropic_server
    fake_anthropic_server.reset()


@pytest.fixture(autouse=True)
def _private_home(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Routers record to a ledger under ``~/.tierwise`` by default: never the real one."""
    monkeypatch.setenv("HOME", str(tmp_path_factory.mktemp("home")))
    for var in ("TIERWISE_HOME", "TIERWISE_DB", "TIERWISE_REDIS_URL", "TIERWISE_CONFIG"):
        monkeypatch.delenv(var, raising=False)

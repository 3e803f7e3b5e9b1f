"""Shared pytest fixtures."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from anthropic import Anthropic, APIStatusError, AsyncAnthropic
from openai import OpenAI

from tests.fakes.anthropic_server import FakeAnthropic
from tests.servers import ServerThread
from tierwise.config import Settings, load, revalidate
from tierwise.gateway import build_app
from tierwise.types import LedgerEntry


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "lenient_upstream: the fake upstream checks only the request's shape, not the strict "
        "per-model contract (for tests that send deliberately invalid traffic)",
    )
    config.addinivalue_line(
        "markers", "hostile: checks the request path against a hostile upstream"
    )


def pytest_report_header(config: pytest.Config) -> list[str]:
    """Which PostgreSQL and Redis the tests use, and whether they answered (tests/dbs.py)."""
    from tests.dbs import postgres, redis_service

    return ["services: " + postgres().describe(), "services: " + redis_service().describe()]


@pytest.fixture(scope="session")
def fake_anthropic_server() -> Iterator[FakeAnthropic]:
    """One fake Anthropic API for the whole session (prefer `fake_anthropic` in tests)."""
    with FakeAnthropic() as fake:
        yield fake


@pytest.fixture
def fake_anthropic(
    fake_anthropic_server: FakeAnthropic, request: pytest.FixtureRequest
) -> Iterator[FakeAnthropic]:
    """The session's fake Anthropic API, with no scripts, no recorded requests and an empty
    prompt cache. It enforces the real API's per-model contract (tests/fakes/strict_rules.py)
    unless the test is marked ``lenient_upstream``."""
    fake_anthropic_server.reset()
    if request.node.get_closest_marker("lenient_upstream") is not None:
        fake_anthropic_server.strict = False
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


class ListSink:
    """Collects ledger entries in memory (thread-safe enough for tests: list.append is atomic)."""

    def __init__(self) -> None:
        self.entries: list[LedgerEntry] = []

    def record(self, entry: LedgerEntry) -> None:
        self.entries.append(entry)


@dataclass
class RunningGateway:
    base_url: str
    sink: ListSink
    settings: Settings
    fake: FakeAnthropic

    def anthropic(self, **kwargs: Any) -> Anthropic:
        return Anthropic(base_url=self.base_url, api_key="client-key", **kwargs)

    def async_anthropic(self, **kwargs: Any) -> AsyncAnthropic:
        return AsyncAnthropic(base_url=self.base_url, api_key="client-key", **kwargs)

    def openai(self, **kwargs: Any) -> OpenAI:
        return OpenAI(base_url=self.base_url + "/v1", api_key="client-key", **kwargs)

    def wait_for_entries(self, count: int, timeout_s: float = 5.0) -> list[LedgerEntry]:
        """Streams are recorded when they end, just after the client read the last byte."""
        deadline = time.monotonic() + timeout_s
        while len(self.sink.entries) < count and time.monotonic() < deadline:
            time.sleep(0.01)
        return self.sink.entries

    def stream_error(self, **create: Any) -> APIStatusError:
        """Stream ``messages.stream(**create)`` to its end, which must be an error (the SDK
        raises on an ``error`` event or a stream without ``message_stop``); the error."""
        with (
            pytest.raises(APIStatusError) as info,
            self.anthropic(max_retries=0).messages.stream(**create) as stream,
        ):
            for _ in stream:
                pass
        return info.value


GatewayFactory = Callable[..., RunningGateway]


@pytest.fixture
def make_gateway(fake_anthropic: FakeAnthropic, tmp_path: Path) -> Iterator[GatewayFactory]:
    """Start a gateway in front of the fake upstream; keyword args override gateway settings."""
    started: list[ServerThread] = []

    def start(**gateway_overrides: Any) -> RunningGateway:
        settings = load(
            environ={
                "TIERWISE_HOME": str(tmp_path),
                "ANTHROPIC_API_KEY": fake_anthropic.api_key,
                "ANTHROPIC_BASE_URL": fake_anthropic.base_url,
            }
        )
        defaults = {"retry_after_cap_s": 0.2}
        gateway = settings.gateway.model_copy(update={**defaults, **gateway_overrides})
        settings = revalidate(settings, gateway=gateway)
        sink = ListSink()
        server = ServerThread(build_app(settings, sink=sink)).start()
        started.append(server)
        return RunningGateway(server.base_url, sink, settings, fake_anthropic)

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def gateway(make_gateway: GatewayFactory) -> RunningGateway:
    return make_gateway()

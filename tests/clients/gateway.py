"""A gateway in front of the strict fake upstream whose ``auto`` always lands on one tier.

The learned classifier sends short prompts to haiku; the adaptation bugs show when ``auto`` picks
sonnet or opus, so these tests configure the default tiers but keep only the ones wanted: with a
single tier, ``auto`` routes every request there (and the tier's thinking/effort defaults apply).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.conftest import ListSink, RunningGateway
from tests.fakes.anthropic_server import FakeAnthropic
from tests.servers import ServerThread
from tierwise.config import Settings, load, revalidate
from tierwise.gateway import build_app


def settings_for(fake: FakeAnthropic, home: Path, *, only_tier: str | None = None) -> Settings:
    settings = load(
        environ={
            "TIERWISE_HOME": str(home),
            "ANTHROPIC_API_KEY": fake.api_key,
            "ANTHROPIC_BASE_URL": fake.base_url,
        }
    )
    overrides: dict[str, Any] = {}
    if only_tier is not None:
        tier = settings.tier(only_tier)
        overrides = {"tiers": [tier], "default_tier": tier.name}
    gateway = settings.gateway.model_copy(update={"retry_after_cap_s": 0.2})
    return revalidate(settings, gateway=gateway, **overrides)


@contextmanager
def running_gateway(
    fake: FakeAnthropic, home: Path, *, only_tier: str | None = None
) -> Iterator[RunningGateway]:
    settings = settings_for(fake, home, only_tier=only_tier)
    sink = ListSink()
    server = ServerThread(build_app(settings, sink=sink)).start()
    try:
        yield RunningGateway(server.base_url, sink, settings, fake)
    finally:
        server.stop()

"""How tests find PostgreSQL and Redis (tests/dbs.py): the variables when set, else the
services' default loopback addresses; pytest's header says which, and whether they answered."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from tests import dbs

ROOT = Path(__file__).resolve().parent.parent


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # closed again when this returns: nothing listens


@pytest.mark.parametrize(
    ("probe", "variable", "default", "scheme"),
    [
        (dbs.postgres, "TIERWISE_TEST_POSTGRES_URL", dbs.DEFAULT_POSTGRES_URL, "postgresql"),
        (dbs.redis_service, "TIERWISE_TEST_REDIS_URL", dbs.DEFAULT_REDIS_URL, "redis"),
    ],
)
def test_unset_variable_means_the_default_loopback_address(
    monkeypatch: pytest.MonkeyPatch, probe: object, variable: str, default: str, scheme: str
) -> None:
    monkeypatch.delenv(variable, raising=False)
    service = probe.__wrapped__()  # type: ignore[attr-defined]  # not the session's cached one
    assert service.url == default
    assert default.startswith(f"{scheme}://") and "127.0.0.1" in default
    assert not service.from_environment
    assert f"(default, ${variable})" in service.describe()


@pytest.mark.parametrize(
    ("probe", "variable", "url"),
    [
        (dbs.postgres, "TIERWISE_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:{port}/t"),
        (dbs.redis_service, "TIERWISE_TEST_REDIS_URL", "redis://127.0.0.1:{port}/0"),
    ],
)
def test_a_service_that_is_down_skips_with_the_reason(
    monkeypatch: pytest.MonkeyPatch, probe: object, variable: str, url: str
) -> None:
    monkeypatch.setenv(variable, url.format(port=closed_port()))
    service = probe.__wrapped__()  # type: ignore[attr-defined]
    assert service.from_environment
    assert service.problem is not None and "Connection refused" in service.problem
    assert "NOT reachable" in service.describe()
    with pytest.raises(pytest.skip.Exception) as skipped:
        service.url_or_skip()
    reason = str(skipped.value)
    assert "is not reachable" in reason and variable in reason


def test_pytest_header_names_the_services(
    monkeypatch: pytest.MonkeyPatch, pytestconfig: pytest.Config
) -> None:
    from tests.conftest import pytest_report_header

    for variable in ("TIERWISE_TEST_POSTGRES_URL", "TIERWISE_TEST_REDIS_URL"):
        monkeypatch.delenv(variable, raising=False)
    dbs.postgres.cache_clear()
    dbs.redis_service.cache_clear()
    try:
        header = pytest_report_header(pytestconfig)
    finally:  # the rest of the session probes again, with its own environment
        dbs.postgres.cache_clear()
        dbs.redis_service.cache_clear()
    assert len(header) == 2
    assert header[0].startswith(f"services: PostgreSQL {dbs.DEFAULT_POSTGRES_URL} (default")
    assert header[1].startswith(f"services: Redis {dbs.DEFAULT_REDIS_URL} (default")
    assert all(line.endswith(": found") or "NOT reachable" in line for line in header)
    # `make test` must show pytest's header: -q would hide it
    lines = (ROOT / "Makefile").read_text().splitlines()
    test_target = lines[next(i for i, x in enumerate(lines) if x.startswith("test:")) + 1]
    assert "pytest" in test_target and " -q" not in test_target


def test_local_services_are_used_when_they_run() -> None:
    """With the services up (as on this machine and in CI), nothing is skipped for them."""
    for service in (dbs.postgres(), dbs.redis_service()):
        if service.problem is not None:
            pytest.skip(f"{service.name} is down here: {service.problem}")
        assert service.url_or_skip() == service.url

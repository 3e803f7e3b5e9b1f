"""Property-based fuzzing of both APIs from the gateway's own OpenAPI document (schemathesis):
no 5xx, and every error in its dialect's shape. `make fuzz` runs it with many more examples
(TIERWISE_FUZZ_EXAMPLES)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from tests.servers import ServerThread
from tierwise.config import load
from tierwise.gateway import build_app

EXAMPLES = int(os.environ.get("TIERWISE_FUZZ_EXAMPLES", "30"))


@pytest.fixture(scope="module")
def simulated_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    home: Path = tmp_path_factory.mktemp("fuzz")
    config = load(environ={"TIERWISE_HOME": str(home)})  # no key: the simulated upstream
    with ServerThread(build_app(config)) as server:
        yield server.base_url


OPERATIONS = [
    "POST /v1/messages",
    "POST /v1/messages/count_tokens",
    "POST /v1/chat/completions",
    "GET /v1/models",
    "GET /health",
]


@pytest.mark.parametrize("operation", OPERATIONS)
def test_no_server_errors_and_errors_in_dialect_shape(
    simulated_gateway: str, operation: str
) -> None:
    # The schemathesis pytest plugin does not run under this pytest; drive hypothesis directly.
    api = schemathesis.openapi.from_url(simulated_gateway + "/openapi.json")
    method, path = operation.split(" ", 1)
    op = api[path][method]
    checks = [not_a_server_error, response_schema_conformance]

    @given(case=op.as_strategy())
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def run(case: Any) -> None:
        case.call_and_validate(checks=checks)

    run()

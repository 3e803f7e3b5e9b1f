"""Session routing through the gateway (``tierwise serve``), with Claude Code's envelopes.

The gateway's request path asks :class:`tierwise.sessions.SessionRouter` for the tier
(decide → adapt → reserve → call → settle → record).
"""

from __future__ import annotations

import copy
import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

from tests.conftest import RunningGateway
from tests.sessions_corpus import claude_code_body, title_body

SID = "5f0c3a52-0000-4000-8000-000000000001"


@dataclass
class Reply:
    status_code: int
    headers: dict[str, str]
    text: str


def post(gateway: RunningGateway, body: dict[str, Any]) -> Reply:
    request = urllib.request.Request(
        f"{gateway.base_url}/v1/messages",
        data=json.dumps({**body, "stream": False}).encode(),
        headers={
            "content-type": "application/json",
            "x-api-key": "client-key",
            "anthropic-version": "2023-06-01",
        },
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            headers = {k.lower(): v for k, v in response.headers.items()}
            return Reply(response.status, headers, response.read().decode())
    except urllib.error.HTTPError as exc:
        return Reply(exc.code, {k.lower(): v for k, v in exc.headers.items()}, exc.read().decode())


def loop_step(body: dict[str, Any], n: int) -> dict[str, Any]:
    out = copy.deepcopy(body)
    out["messages"].append(
        {
            "role": "assistant",
            "content": [{"type": "tool_use", "id": f"toolu_{n}", "name": "Read", "input": {}}],
        }
    )
    out["messages"].append(
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": f"toolu_{n}", "content": "contents " * 200}
            ],
        }
    )
    return out


def test_a_claude_code_session_through_the_gateway(gateway: RunningGateway) -> None:
    body = claude_code_body("What is the capital of France?")
    first = post(gateway, body)
    assert first.status_code == 200, first.text
    assert first.headers["x-tierwise-session"] == SID
    assert first.headers["x-tierwise-session-rule"] == "new-session"
    assert first.headers["x-tierwise-tier"] == "haiku"  # as the same words bare
    for n in range(3):
        body = loop_step(body, n)
        reply = post(gateway, body)
        assert reply.status_code == 200, reply.text
        assert reply.headers["x-tierwise-session-rule"] == "continuation"
        assert reply.headers["x-tierwise-tier"] == "haiku"
        assert "continuation" in reply.headers["x-tierwise-reason"]
    entries = gateway.wait_for_entries(4)
    assert [e.session_id for e in entries] == [SID] * 4
    assert [e.session_rule for e in entries] == ["new-session"] + ["continuation"] * 3
    shapes = json.dumps([e.session_shape for e in entries])
    assert "capital" not in shapes  # the shape never holds text


def test_claude_codes_title_request_goes_to_the_cheapest_tier_without_thinking(
    gateway: RunningGateway,
) -> None:
    reply = post(gateway, title_body("Design the plugin architecture for exporters"))
    assert reply.status_code == 200, reply.text
    assert reply.headers["x-tierwise-session-rule"] == "utility"
    assert reply.headers["x-tierwise-tier"] == "haiku"
    sent = gateway.fake.requests_to("/v1/messages")[-1].json_body
    assert isinstance(sent, dict)
    assert "thinking" not in sent or sent["thinking"] == {"type": "disabled"}
    assert "effort" not in (sent.get("output_config") or {})
    assert sent["output_config"]["format"]["type"] == "json_schema"  # the schema is kept


def test_claude_codes_compaction_stays_on_the_sessions_tier_through_the_gateway(
    gateway: RunningGateway,
) -> None:
    """Compaction (the summary request) and the conversation resumed from the summary keep
    the session's tier, as the strict upstream serves them; the ledger names both rules."""
    from tests.test_sessions import COMPACT, RESUME, compacted, turn

    body = claude_code_body("What is the capital of France?")
    assert post(gateway, body).headers["x-tierwise-tier"] == "haiku"
    body = loop_step(body, 0)
    assert post(gateway, body).headers["x-tierwise-session-rule"] == "continuation"
    summary = post(gateway, turn(body, COMPACT))
    assert summary.status_code == 200, summary.text
    assert (summary.headers["x-tierwise-session-rule"], summary.headers["x-tierwise-tier"]) == (
        "continuation",
        "haiku",
    )
    resumed = post(gateway, compacted(body, RESUME * 10))
    assert resumed.status_code == 200, resumed.text
    assert (resumed.headers["x-tierwise-session-rule"], resumed.headers["x-tierwise-tier"]) == (
        "resume",
        "haiku",
    )
    assert "compacted" in resumed.headers["x-tierwise-reason"]
    entries = gateway.wait_for_entries(4)
    rules = ["new-session", "continuation", "continuation", "resume"]
    assert [e.session_rule for e in entries] == rules
    # `tierwise replay --from-ledger` re-applies the rules from the recorded shapes alone
    import asyncio

    from tierwise.ledger import open_store
    from tierwise.router import Router
    from tierwise.sessions.replay import Replayer, requests_from_ledger

    store = open_store(gateway.settings)
    try:
        store.insert(entries)
        recorded = requests_from_ledger(store)
    finally:
        store.close()
    replayed = asyncio.run(
        Replayer(gateway.settings, decide=Router(gateway.settings).decide).run(recorded)
    )
    assert replayed.policies["session"].rules == {"new-session": 1, "continuation": 2, "resume": 1}
    assert [(e.session_shape or {}).get("client_turn") for e in entries] == [
        None,
        None,
        "compact",
        "resume",
    ]


def test_one_sessions_decisions_in_the_report(gateway: RunningGateway) -> None:
    """`tierwise report --session ID`: the session's requests in order, each with the rule
    that chose its tier and why; `--by rule` sums them per rule."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    body = claude_code_body("What is the capital of France?")
    post(gateway, body)
    post(gateway, loop_step(body, 0))
    rows = gateway.wait_for_entries(2)
    # the fixture's gateway records into a list: store its rows where the CLI reads them
    from tierwise.ledger import open_store

    store = open_store(gateway.settings)
    try:
        store.insert(rows)
    finally:
        store.close()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TIERWISE_", "ANTHROPIC_"))}
    env |= {"TIERWISE_HOME": str(gateway.settings.home), "COLUMNS": "150"}
    tw = str(Path(sys.executable).parent / "tierwise")

    def report(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [tw, "report", "--since", "all", *args],
            env=env,
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )

    proc = report("--session", SID, "--json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert [r["rule"] for r in data["requests"]] == ["new-session", "continuation"]
    assert [r["request_id"] for r in data["requests"]] == [r.request_id for r in rows]
    assert "continuation" in data["requests"][1]["reason"]
    assert data["requests"][0]["thread"] == data["requests"][1]["thread"]
    table = report("--session", SID)
    assert (
        table.returncode == 0 and "new-session" in table.stdout and "continuation" in table.stdout
    )
    by_rule = json.loads(report("--by", "rule", "--json").stdout)
    assert {k: v["requests"] for k, v in by_rule["groups"].items()} == {
        "new-session": 1,
        "continuation": 1,
    }
    missing = report("--session", "no-such-session")
    assert missing.returncode == 2 and "no requests recorded for session" in missing.stderr

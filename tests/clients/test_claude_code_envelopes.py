"""Real Claude Code requests (tests/data/claude_code/, recorded by
``python -m tests.clients.record_claude_code``) replayed through the gateway byte for byte, with
``model: auto``. Needs no CLI, so these run everywhere; they also cover envelopes that the pinned
CLI does not send in the offline configuration of test_claude_code.py (2.1.197's session-title
request, sent when non-essential traffic is on, as it is for every user by default)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest

from tests.conftest import RunningGateway
from tests.fakes.strict_rules import sign_thinking
from tierwise.pricing import PriceCatalogue

DATA = Path(__file__).resolve().parents[1] / "data" / "claude_code"
ENVELOPES = sorted(DATA.glob("*/*.json"))
DROPPED = {"host", "content-length", "connection", "accept-encoding", "x-api-key", "authorization"}
ADAPTABLE = {"thinking", "output_config", "temperature", "top_p", "top_k", "max_tokens"}


def load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def _post(gateway: RunningGateway, envelope: dict[str, Any], body: Any) -> httpx.Response:
    request = envelope["request"]
    headers = {k: v for k, v in request["headers"] if k not in DROPPED}
    headers["x-api-key"] = "client-key"
    return httpx.post(
        gateway.base_url + request["target"],
        content=json.dumps(body).encode(),
        headers=headers,
        timeout=30,
    )


def _thinking_turn(messages: list[Any]) -> int | None:
    """The index of the first assistant message that carries thinking blocks."""
    for i, message in enumerate(messages):
        content = message.get("content") if isinstance(message, dict) else None
        thought = isinstance(content, list) and any(
            isinstance(b, dict) and b.get("type") == "thinking" for b in content
        )
        if message.get("role") == "assistant" and thought:
            return i
    return None


def replay(gateway: RunningGateway, envelope: dict[str, Any]) -> tuple[httpx.Response, Any]:
    """Send the recorded request. A tool-loop request carries thinking blocks that a model
    wrote in an earlier turn, signed for that model: the earlier turn goes through the gateway
    first (same session), and the recorded blocks are signed as written by the model that
    answered it, as they would have been in the session the envelope was recorded from."""
    body = envelope["request"]["body"]
    turn = _thinking_turn(body.get("messages") or [])
    if turn is None:
        return _post(gateway, envelope, body), body
    first = _post(gateway, envelope, {**body, "messages": body["messages"][:turn]})
    assert first.status_code == 200, first.text[:500]
    model = first.headers["x-tierwise-model"]
    body = copy.deepcopy(body)
    for message in body["messages"]:
        for block in message.get("content") if isinstance(message.get("content"), list) else []:
            if isinstance(block, dict) and block.get("type") == "thinking":
                block["signature"] = sign_thinking(block.get("thinking", ""), model)
    return _post(gateway, envelope, body), body


def test_the_envelopes_are_there() -> None:
    names = {f"{p.parent.name}/{load(p)['kind']}" for p in ENVELOPES}
    assert {"2.1.332/main", "2.1.332/tool_result", "2.1.197/structured"} <= names


@pytest.mark.parametrize("path", ENVELOPES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_envelope_is_routed_and_forwarded(gateway: RunningGateway, path: Path) -> None:
    envelope = load(path)
    response, sent = replay(gateway, envelope)
    assert response.status_code == 200, response.text[:500]
    events = [json.loads(x[6:]) for x in response.text.splitlines() if x.startswith("data: ")]
    assert events[0]["type"] == "message_start" and events[-1]["type"] == "message_stop"
    upstream = gateway.fake.requests_to("/v1/messages")[-1]  # (after any earlier turn)
    got = upstream.json_body
    assert got is not None and got["model"] == response.headers["x-tierwise-model"]
    changed = {k for k in sent.keys() | got.keys() if sent.get(k) != got.get(k)}
    adapted = response.headers.get("x-tierwise-adapted")
    assert changed - {"model"} <= (ADAPTABLE if adapted else set()), (changed, adapted)
    assert upstream.header("anthropic-beta") == dict(envelope["request"]["headers"]).get(
        "anthropic-beta"
    )
    entry = gateway.wait_for_entries(len(gateway.fake.requests_to("/v1/messages")))[-1]
    assert (entry.status, entry.api, entry.streaming) == ("ok", "messages", True)
    assert entry.tier == response.headers["x-tierwise-tier"]


@pytest.mark.parametrize("path", ENVELOPES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_forwarded_body_is_valid_for_the_routed_model(gateway: RunningGateway, path: Path) -> None:
    """Whatever tier ``auto`` picks, the thinking type and effort that reach the upstream are
    ones that model accepts (by tierwise's own catalogue)."""
    response, _ = replay(gateway, load(path))
    assert response.status_code == 200, response.text[:500]
    upstream = gateway.fake.requests_to("/v1/messages")[-1]
    got = upstream.json_body
    assert got is not None
    info = PriceCatalogue.default().info(got["model"])
    assert info is not None, got["model"]
    thinking = got.get("thinking")
    if isinstance(thinking, dict):
        assert thinking.get("type") in info.thinking_types, (got["model"], thinking)
    config = got.get("output_config")
    effort = config.get("effort") if isinstance(config, dict) else None
    if effort is not None:
        assert effort in info.efforts, (got["model"], effort, info.efforts)


ISSUE_PROMPTS = (
    "Convert to JSON: name=Ann",
    "What is the capital of France?",
    "Rename variable x to count in foo.py",
)


@pytest.mark.parametrize("version", sorted({p.parent.name for p in ENVELOPES}))
@pytest.mark.parametrize("prompt", ISSUE_PROMPTS)
def test_simple_prompts_get_the_same_tier_bare_and_in_a_recorded_envelope(
    gateway: RunningGateway, version: str, prompt: str
) -> None:
    """Issue 13's check, on the envelopes the CLI really sent: the user's words swapped for
    the issue's three prompts, routed through the gateway, against the same words bare."""
    (path,) = sorted((DATA / version).glob("*-plain-main.json"))[:1]
    envelope = load(path)
    body = copy.deepcopy(envelope["request"]["body"])
    first = body["messages"][0]
    swapped = [
        b
        for b in first["content"]
        if isinstance(b, dict) and b.get("type") == "text" and not b["text"].startswith("<")
    ]
    assert len(swapped) == 1, "the recorded first turn should hold one text of the user's"
    swapped[0]["text"] = prompt
    body["metadata"] = {"user_id": json.dumps({"session_id": f"{version}-{prompt}"})}
    wrapped = _post(gateway, envelope, body)
    assert wrapped.status_code == 200, wrapped.text[:500]
    bare = httpx.post(
        gateway.base_url + "/v1/messages",
        json={
            "model": "auto",
            "max_tokens": 512,
            "messages": [{"role": "user", "content": prompt}],
        },
        headers={"x-api-key": "client-key", "anthropic-version": "2023-06-01"},
        timeout=30,
    )
    assert bare.status_code == 200, bare.text[:500]
    assert wrapped.headers["x-tierwise-tier"] == bare.headers["x-tierwise-tier"], (
        wrapped.headers["x-tierwise-reason"],
        bare.headers["x-tierwise-reason"],
    )

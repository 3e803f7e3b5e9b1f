"""The request path's shortcuts taken for CPU (issue 16) give the same answers as the long
way: the response head and body in one write (and a head alone still leaves), the disconnect
watch, the listen backlog, ledger rows written with orjson, headers read once, the session's
ledger fields recorded once, usage measured once."""

from __future__ import annotations

import asyncio
import json
import math
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from starlette.datastructures import Headers

from tests.transports import FakeTransport
from tierwise.gateway.engine import header_map
from tierwise.gateway.server import listen_backlog
from tierwise.ledger import store as store_mod

# -- the response head and its body ----------------------------------------------------------


def _served(path: str) -> list[bytes]:
    """The writes ``tierwise serve``'s protocol makes for one request to a small app:
    ``/short`` sends head and body back to back, ``/late`` the body in a later iteration."""
    import uvicorn
    from uvicorn.server import ServerState

    from tierwise.gateway.connections import ClientLimits, GuardedHttpToolsProtocol

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": [(b"x-a", b"1")]})
        if scope["path"] == "/late":
            await asyncio.sleep(0.05)
        await send({"type": "http.response.body", "body": b"hello"})

    async def run() -> list[bytes]:
        config = uvicorn.Config(app, lifespan="off", log_level="warning")
        config.load()
        protocol_class = GuardedHttpToolsProtocol.with_limits(ClientLimits.defaults())
        protocol = protocol_class(config, ServerState(), {}, asyncio.get_running_loop())
        transport = FakeTransport()
        protocol.connection_made(transport)
        protocol.data_received(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        for _ in range(100):
            await asyncio.sleep(0.01)
            if any(b"hello" in w for w in transport.writes):
                break
        if path == "/late":
            assert transport.writes, "nothing written"
        protocol.connection_lost(None)
        return transport.writes

    return asyncio.run(run())


def test_a_short_reply_leaves_in_one_write_and_a_lone_head_is_not_held() -> None:
    writes = _served("/short")
    assert len(writes) == 1  # head and body together: one send, one segment
    assert writes[0].startswith(b"HTTP/1.1 200 OK\r\n") and b"\r\nhello\r\n" in writes[0]
    late = _served("/late")
    assert len(late) == 2  # the head left before the body existed
    assert late[0].endswith(b"\r\n\r\n") and b"hello" not in late[0]


# -- the listen backlog -----------------------------------------------------------------------


def test_the_listen_backlog_follows_somaxconn_within_bounds(tmp_path: Path) -> None:
    proc = tmp_path / "somaxconn"
    proc.write_text("4096\n")
    assert listen_backlog(str(proc)) == 4096
    proc.write_text("128\n")
    assert listen_backlog(str(proc)) == 2048  # never below uvicorn's default
    proc.write_text("1000000\n")
    assert listen_backlog(str(proc)) == 65535
    proc.write_text("garbage")
    assert listen_backlog(str(proc)) == 4096
    assert listen_backlog(str(tmp_path / "missing")) == 4096


# -- ledger rows --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        {"v": 1, "kind": "turn", "agent": None, "cache": {"bp": [], "lb": [[1, 2, "ab"]]}},
        {"b": 1.5, "a": [0.1, 1e16, -2.5e-7], "c": {"z": True, "y": False}},
        {"text": "caf\u00e9 \u2192 \u6f22\u5b57"},  # non-ASCII: json escapes, so json it is
        {"x": float("nan"), "y": float("inf")},  # NaN/Infinity as json writes them
        [],
        {},
    ],
)
def test_compact_json_reads_back_as_json_wrote_it(value: Any) -> None:
    ours = store_mod._compact_json(value, sort_keys=True)
    theirs = json.dumps(value, separators=(",", ":"), sort_keys=True)
    got, want = json.loads(ours), json.loads(theirs)
    assert json.dumps(got, sort_keys=True) == json.dumps(want, sort_keys=True)
    assert ours.isascii()
    if "\\u" in theirs or "NaN" in theirs or "Infinity" in theirs:
        assert ours == theirs  # json's own text where orjson would write another


def test_json_text_keeps_the_spaced_format_and_empty_values() -> None:
    for value in ({}, [], ("a",), {"k": "v", "a": 1}, ["x", "y"]):
        as_list = list(value) if isinstance(value, tuple) else value
        assert store_mod._json_text(as_list, sort_keys=True) == json.dumps(
            as_list, ensure_ascii=False, sort_keys=True
        )


def test_features_read_back_as_round_to_4_decimals() -> None:
    values = (13.869877739867084, -1.5939968213903877, 0.125, 0.0, -0.00001, 2.0, 1e20, 0.00005)
    text = store_mod._features_param(values)
    assert text is not None
    assert json.loads(text) == [round(v, 4) for v in values]
    assert store_mod._features_param(()) == "[]"
    assert store_mod._features_param(None) is None
    odd = store_mod._features_param((1, Decimal("0.123456"), float("nan")))
    assert odd == json.dumps([1.0, 0.1235, math.nan], separators=(",", ":"))


# -- headers --------------------------------------------------------------------------------


def test_header_map_answers_as_starlette_headers_do() -> None:
    raw = [
        (b"user-agent", b"claude-cli/2.0"),
        (b"x-tierwise-session", b"first"),
        (b"x-tierwise-session", b"second"),
        (b"anthropic-beta", b"a,b"),
    ]
    headers = Headers(raw=raw)
    plain = header_map(headers)
    for name in ("user-agent", "x-tierwise-session", "anthropic-beta", "missing"):
        assert plain.get(name) == headers.get(name)
    mapping = {"user-agent": "x"}
    assert header_map(mapping) is mapping  # already plain


# -- sessions and usage ---------------------------------------------------------------------


def test_the_session_fields_after_an_observation_equal_a_full_recompute() -> None:
    from tierwise.config import load
    from tierwise.sessions import Outcome, SessionRouter
    from tierwise.types import ClassifyInput, Decision, Usage

    settings = load(environ={})
    sessions = SessionRouter(settings)
    body = {
        "model": "auto",
        "max_tokens": 100,
        "system": "You are a careful assistant.",
        "messages": [{"role": "user", "content": "Summarise the plan."}],
    }

    async def decide(task: ClassifyInput) -> Decision:
        return sessions.policy.decide(None, force_tier="sonnet")

    async def main() -> tuple[dict[str, Any], dict[str, Any]]:
        shape = sessions.analyse(body, {})
        key = sessions.identify(body, {}, shape=shape)
        verdict = await sessions.route(key, body, decide, shape=shape)
        base = verdict.ledger_fields()
        observation = await sessions.observe(
            verdict, Outcome(model=verdict.model, usage=Usage(50, 20), stop_reason="end_turn")
        )
        return verdict.ledger_fields(observation, base=base), verdict.ledger_fields(observation)

    reused, full = asyncio.run(main())
    assert reused == full

"""Session routing: identity, state, the rules, the break-even, honest baselines."""

from __future__ import annotations

import asyncio
import copy
import json
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any

import pytest

from tests.sessions_corpus import claude_code_body, title_body
from tierwise import config
from tierwise.errors import ConfigError, InputError
from tierwise.gateway.shape import RequestShape, analyse
from tierwise.policy import Policy
from tierwise.pricing import PriceCatalogue
from tierwise.router import Router
from tierwise.sessions import (
    RULES,
    MemoryStore,
    Outcome,
    SessionRouter,
    SessionVerdict,
    StoreError,
    ThreadState,
)
from tierwise.sessions.cachesim import CacheSim
from tierwise.sessions.identity import SessionKey, clean_id, identify
from tierwise.sessions.modelmap import resolve
from tierwise.types import ClassifyInput, Decision, Usage

SID = "5f0c3a52-0000-4000-8000-000000000001"


def settings(**sessions: Any) -> config.Settings:
    return config.load(environ={}, provider={"kind": "simulated"}, sessions=sessions)


class Classifier:
    """Answers with a scripted tier (or the real router), counting its calls."""

    def __init__(self, s: config.Settings, tier: str | None = None) -> None:
        self.tier = tier
        self.calls: list[ClassifyInput] = []
        self.policy = Policy(s, s.catalogue())
        self.router = Router(s)

    async def __call__(self, request: ClassifyInput) -> Decision:
        self.calls.append(request)
        if self.tier is None:
            return await self.router.decide(request)
        decision = self.policy.decide(None, force_tier=self.tier)
        return Decision(**{**_fields(decision), "classifier": "scripted", "reason": "scripted"})


def _fields(d: Decision) -> dict[str, Any]:
    return {n: getattr(d, n) for n in d.__dataclass_fields__}


def step(body: dict[str, Any], result: Any, *, is_error: bool = False) -> dict[str, Any]:
    out = copy.deepcopy(body)
    n = len(out["messages"])
    out["messages"].append(
        {
            "role": "assistant",
            "content": [{"type": "tool_use", "id": f"toolu_{n}", "name": "Read", "input": {}}],
        }
    )
    block: dict[str, Any] = {"type": "tool_result", "tool_use_id": f"toolu_{n}", "content": result}
    if is_error:
        block["is_error"] = True
    out["messages"].append({"role": "user", "content": [block]})
    _move_breakpoint(out)
    return out


def turn(body: dict[str, Any], words: str) -> dict[str, Any]:
    out = copy.deepcopy(body)
    out["messages"].append({"role": "assistant", "content": [{"type": "text", "text": "Done."}]})
    out["messages"].append({"role": "user", "content": [{"type": "text", "text": words}]})
    _move_breakpoint(out)
    return out


def _move_breakpoint(body: dict[str, Any]) -> None:
    """Like Claude Code: one breakpoint on the newest message's last block."""
    for message in body["messages"]:
        if isinstance(message["content"], list):
            for block in message["content"]:
                block.pop("cache_control", None)
    body["messages"][-1]["content"][-1]["cache_control"] = {"type": "ephemeral"}


class Upstream:
    """Bills like the real API: a per-model prompt cache over the requests it serves."""

    def __init__(self) -> None:
        self.sim = CacheSim()

    def usage(self, verdict: SessionVerdict, at: float, output: int = 400) -> Usage:
        use = self.sim.request(verdict.model, verdict.shape.cache, at)
        return use.usage(output)


Flow = Callable[..., Awaitable[SessionVerdict]]


def rig(s: config.Settings, tier: str) -> tuple[SessionRouter, Classifier, Flow]:
    """A session router with an in-memory store, a classifier answering ``tier``, and the
    flow that sends requests through both to a fake upstream."""
    router, classify = SessionRouter(s, store=MemoryStore()), Classifier(s, tier)
    return router, classify, flow(router, classify, Upstream())


def flow(router: SessionRouter, classify: Classifier, upstream: Upstream) -> Flow:
    async def send(
        body: dict[str, Any],
        at: float,
        *,
        headers: dict[str, str] | None = None,
        stop: str = "tool_use",
        output: int = 400,
        scope: str | None = None,
        requested_tier: str | None = None,
    ) -> SessionVerdict:
        shape = router.analyse(body, headers)
        key = router.identify(body, headers, shape=shape, scope=scope)
        verdict = await router.route(
            key, body, classify, shape=shape, requested_tier=requested_tier, at=at
        )
        usage = upstream.usage(verdict, at, output)
        await router.observe(verdict, Outcome(verdict.model, usage, stop))
        return verdict

    return send


def run(coro: Awaitable[Any]) -> Any:
    return asyncio.run(coro)  # type: ignore[arg-type]


# -- identity ---------------------------------------------------------------------------------
def test_session_id_sources_in_order() -> None:
    body = claude_code_body("hi", session_id="from-metadata")
    shape = analyse(body)
    explicit = identify(body, {"x-tierwise-session": "mine"}, shape)
    assert explicit is not None
    assert (explicit.session, explicit.source) == ("mine", "header")
    key = identify(body, {"x-claude-code-session-id": "from-header"}, shape)
    assert key is not None
    assert (key.session, key.source) == ("from-metadata", "metadata")
    del body["metadata"]
    key = identify(body, {"x-claude-code-session-id": "from-header"}, shape)
    assert key is not None
    assert (key.session, key.source) == ("from-header", "agent-header")
    key = identify(body, {}, shape)
    assert key is not None
    assert key.source == "fingerprint"
    assert key.session == "fp:" + shape.stable_fp
    lone = {"model": "auto", "messages": [{"role": "user", "content": "hi"}]}
    assert identify(lone, {}, analyse(lone)) is None


def test_claude_codes_earlier_user_id_form_names_the_session() -> None:
    """Claude Code 1.x and early 2.x: user_<sha256>_account_<uuid or empty>_session_<uuid>."""
    session = "4d0b1e3c-7a52-4c8e-9b1f-2f6a8e0d5c11"
    for account in ("6f1d2b9e-0c3a-4e57-8d21-9a7b3c4e5f60", ""):
        user_id = f"user_{'ab' * 32}_account_{account}_session_{session}"
        body = {"messages": [{"role": "user", "content": "a"}], "metadata": {"user_id": user_id}}
        key = identify(body, {}, analyse(body))
        assert key is not None
        assert (key.session, key.source) == (session, "metadata")


def test_metadata_user_id_that_is_not_claude_codes_json_is_not_a_session() -> None:
    for user_id in (
        "user-42",
        "user_42_session_",
        "{not json",
        json.dumps({"device_id": "x"}),
        "{" + "x" * 5000,
        "user_" + "a" * 5000 + "_session_4d0b1e3c-7a52-4c8e-9b1f-2f6a8e0d5c11",
    ):
        body = {"messages": [{"role": "user", "content": "a"}], "metadata": {"user_id": user_id}}
        key = identify(body, {}, analyse(body))
        assert key is None


def test_session_ids_are_bounded_and_scoped() -> None:
    assert clean_id("abc-123") == "abc-123"
    assert clean_id("x" * 500).startswith("h:")
    assert clean_id("naïve\nid").startswith("h:")
    a = SessionKey("s", "t", "header", "key-a")
    b = SessionKey("s", "t", "header", "key-b")
    assert a.storage_key != b.storage_key


def test_sub_agents_share_the_session_but_not_the_thread() -> None:
    main = claude_code_body("Fix the bug")
    sub = claude_code_body("Search the codebase for callers of parse_config")
    sub["system"][2]["text"] = "You are an agent for Claude Code. Search well."
    km, ks = identify(main, {}, analyse(main)), identify(sub, {}, analyse(sub))
    assert km is not None
    assert ks is not None
    assert km.session == ks.session == SID
    assert km.thread != ks.thread
    assert identify(step(main, "x"), {}, analyse(step(main, "x"))) == km


# -- the rules --------------------------------------------------------------------------------
def test_a_tool_loop_keeps_its_turns_tier_and_classifies_only_turns() -> None:
    s = settings()
    _router, classify, send = rig(s, "sonnet")
    body = claude_code_body("Fix the failing test in tests/test_api.py")
    first = run(send(body, 0.0))
    assert (first.rule, first.tier, first.classified) == ("new-session", "sonnet", True)
    classify.tier = "opus"  # whatever the classifier would say now, a continuation keeps sonnet
    for i in range(5):
        body = step(body, f"result {i}" * 200)
        v = run(send(body, 10.0 * (i + 1)))
        assert (v.rule, v.tier, v.classified) == ("continuation", "sonnet", False)
        assert "continuation" in v.headers()["x-tierwise-reason"]
    assert len(classify.calls) == 1
    nxt = run(send(turn(body, "Now refactor the whole module into services"), 100.0))
    assert (nxt.rule, nxt.tier) == ("turn-escalate", "opus")
    assert len(classify.calls) == 2


def test_a_cheaper_turn_switches_when_it_pays_and_holds_when_it_does_not() -> None:
    s = settings()
    # an agent session with a large warm prefix on opus; the next turn is classified haiku
    for agentic, expected in ((True, "turn-switch"), (False, "cache-hold")):
        router = SessionRouter(s, store=MemoryStore())
        classify, up = Classifier(s, "opus"), Upstream()
        send = flow(router, classify, up)
        body = claude_code_body("Design the plugin architecture")
        if not agentic:  # a plain chat: one request per turn, no agent envelope
            body = {
                "model": "auto",
                "max_tokens": 1000,
                "system": [
                    {"type": "text", "text": "You help.", "cache_control": {"type": "ephemeral"}}
                ],
                "messages": [{"role": "user", "content": [{"type": "text", "text": "Design it"}]}],
            }
        body = step(body, "context " * 40_000)  # ~80k tokens of context
        run(send(body, 0.0))
        run(send(step(body, "more"), 5.0))
        classify.tier = "haiku"
        v = run(send(turn(step(body, "more"), "What is the capital of France?"), 30.0))
        assert v.rule == expected, v.reason
        assert v.break_even is not None
        be = v.break_even
        assert be.warm_tokens > 70_000
        assert be.extra_now_usd > 0  # re-writing the prefix on haiku costs more now …
        assert be.per_request_saving_usd > 0  # … and every later request costs less
        if expected == "turn-switch":
            assert be.saving_usd > 0
            assert v.tier == "haiku"
        else:
            assert be.saving_usd <= 0
            assert v.tier == "opus"
        assert "break-even" in v.reason
        assert v.ledger_fields()["session_shape"]["break_even"]["from"] == "opus"


def test_a_cold_cache_is_no_reason_to_hold() -> None:
    s = settings()
    router, classify, up = SessionRouter(s, store=MemoryStore()), Classifier(s, "opus"), Upstream()
    send = flow(router, classify, up)
    chat = {
        "model": "auto",
        "max_tokens": 1000,
        "system": [{"type": "text", "text": "You help.", "cache_control": {"type": "ephemeral"}}],
        "messages": [{"role": "user", "content": [{"type": "text", "text": "Design it"}]}],
    }
    body = step(chat, "context " * 40_000)
    run(send(body, 0.0))
    classify.tier = "haiku"
    later = run(send(turn(body, "What is the capital of France?"), 3600.0))  # cache expired
    assert (later.rule, later.tier) == ("turn-switch", "haiku")


def test_context_window_escalation_on_a_continuation() -> None:
    s = settings()
    router, classify, up = SessionRouter(s, store=MemoryStore()), Classifier(s, "haiku"), Upstream()
    send = flow(router, classify, up)
    body = claude_code_body("Read the logs")
    assert run(send(body, 0.0)).tier == "haiku"
    big = step(body, "log line " * 100_000)  # ~225k tokens: beyond haiku's 200k window
    v = run(send(big, 10.0))
    assert (v.rule, v.tier, v.mid_loop_change) == ("context-window", "sonnet", True)
    assert "context window" in v.reason


def test_max_tokens_escalates_only_when_the_tier_cut_the_reply() -> None:
    s = settings()
    for asked, expected in ((100_000, "max-tokens"), (32_000, "continuation")):
        router = SessionRouter(s, store=MemoryStore())
        classify, up = Classifier(s, "sonnet"), Upstream()
        send = flow(router, classify, up)
        body = claude_code_body("Write the whole report")
        body["max_tokens"] = asked
        run(send(body, 0.0, stop="max_tokens"))  # sonnet-4-6 writes at most 64,000 tokens
        resume = copy.deepcopy(body)
        resume["messages"].append({"role": "assistant", "content": [{"type": "text", "text": "x"}]})
        resume["messages"].append(
            {
                "role": "user",
                "content": "<system-reminder>Output token limit hit.</system-reminder>",
            }
        )
        v = run(send(resume, 30.0))
        assert v.rule == expected, v.reason
        assert v.tier == ("opus" if expected == "max-tokens" else "sonnet")


def test_tool_errors_escalate_after_a_streak_of_the_models_own_mistakes() -> None:
    s = settings(tool_error_streak=3)
    router, classify, up = SessionRouter(s, store=MemoryStore()), Classifier(s, "haiku"), Upstream()
    send = flow(router, classify, up)
    body = claude_code_body("Rename x to count")
    run(send(body, 0.0))
    for i in range(4):  # failing commands: the environment, not the model
        body = step(body, "Exit code 1", is_error=True)
        assert run(send(body, 1.0 + i)).rule == "continuation"
    rules = []
    for i in range(3):
        body = step(body, "<tool_use_error>String not found</tool_use_error>", is_error=True)
        rules.append(run(send(body, 10.0 + i)))
    assert [v.rule for v in rules] == ["continuation", "continuation", "tool-errors"]
    assert rules[-1].tier == "sonnet"
    assert rules[-1].mid_loop_change
    # the streak that escalated does not escalate again; a further streak of 3 does
    body = step(body, "<tool_use_error>again</tool_use_error>", is_error=True)
    assert run(send(body, 20.0)).tier == "sonnet"
    for i in range(2):
        body = step(body, "<tool_use_error>again</tool_use_error>", is_error=True)
        last = run(send(body, 21.0 + i))
    assert (last.rule, last.tier) == ("tool-errors", "opus")


def test_context_floor_escalates_a_loop_that_crosses_the_large_context_line() -> None:
    """Inside a tool loop the task context crosses the classifier's 50,000-token line: the
    classifier (asked once, at the crossing) now wants opus. The loop moves to opus at that
    point when it costs no extra cache write: here sonnet's cache expired during a long tool
    run, so the prefix is written on either tier."""
    s = settings()
    router, classify, up = SessionRouter(s, store=MemoryStore()), Classifier(s), Upstream()
    send = flow(router, classify, up)
    body = claude_code_body("Fix the failing test in tests/test_api.py")
    assert run(send(body, 0.0)).tier == "sonnet"  # the real classifier, below the line
    body = step(body, "small result")
    assert run(send(body, 5.0)).rule == "continuation"
    assert len(classify.calls) == 1
    body = step(body, "context " * 30_000)  # ~60k tokens of task context, after 10 minutes
    v = run(send(body, 600.0))
    assert (v.rule, v.tier, v.mid_loop_change, v.classified) == (
        "context-floor",
        "opus",
        True,
        True,
    )
    assert v.classified_tier == "opus"
    assert "context-floor" in v.headers()["x-tierwise-reason"]
    assert "expired" in v.reason
    assert len(classify.calls) == 2
    body = step(body, "more")
    v = run(send(body, 605.0))
    assert (v.rule, v.tier, v.classified) == ("continuation", "opus", False)
    assert len(classify.calls) == 2  # one check per crossing


def test_context_floor_waits_for_the_turn_when_switching_would_rewrite_a_warm_cache() -> None:
    s = settings()
    router, classify, up = SessionRouter(s, store=MemoryStore()), Classifier(s), Upstream()
    send = flow(router, classify, up)
    body = claude_code_body("Fix the failing test in tests/test_api.py")
    run(send(body, 0.0))
    body = step(body, "context " * 30_000)  # crosses the line 10 s later: sonnet is warm
    v = run(send(body, 10.0))
    assert (v.rule, v.tier, v.classified_tier) == ("continuation", "sonnet", "opus")
    assert "next turn decides" in v.reason
    assert len(classify.calls) == 2
    body = step(body, "more")
    assert run(send(body, 15.0)).tier == "sonnet"
    assert len(classify.calls) == 2  # not asked again in this turn
    nxt = run(send(turn(body, "Now fix the other failing test"), 30.0))
    assert (nxt.rule, nxt.tier) == ("turn-escalate", "opus")
    # a turn that starts above the line was classified with it: no check on its loop
    body = turn(body, "And the third one")
    run(send(body, 40.0))
    assert run(send(step(body, "more"), 45.0)).rule == "continuation"
    assert len(classify.calls) == 4


def test_context_floor_returns_to_a_warm_tier_inside_the_loop() -> None:
    """A turn switched down from opus just below the line; the loop crosses it while opus's
    cache still holds the prefix: going back now writes almost nothing on opus."""
    s = settings(agent_requests_per_turn=1000)  # long loops expected: the switch pays
    router, classify, up = SessionRouter(s, store=MemoryStore()), Classifier(s, "opus"), Upstream()
    send = flow(router, classify, up)
    body = step(claude_code_body("Design the plugin architecture"), "context " * 24_000)
    run(send(body, 0.0))
    body = step(body, "more")
    assert run(send(body, 5.0)).tier == "opus"
    classify.tier = "sonnet"
    body = turn(step(body, "more"), "Now rename the helper")
    switched = run(send(body, 10.0))
    assert (switched.rule, switched.tier) == ("turn-switch", "sonnet")
    classify.tier = "opus"  # what the classifier says once the context is above the line
    body = step(body, "context " * 2_000)
    v = run(send(body, 15.0))
    assert (v.rule, v.tier, v.mid_loop_change) == ("context-floor", "opus", True)
    assert "opus's cache holds" in v.reason
    assert len(classify.calls) == 3  # two turns and the crossing


COMPACT = (
    "CRITICAL: Respond with TEXT ONLY. Do NOT call any tools.\n\n"
    "Your task is to create a detailed summary of the conversation so far, paying close "
    "attention to the user's explicit requests and your previous actions.\nThis summary should "
    "be thorough in capturing technical details, code patterns, and architectural decisions "
    "that would be essential for continuing development work without losing context."
)
RESUME = (
    "This session is being continued from a previous conversation that ran out of context. "
    "The conversation is summarized below:\nAnalysis: the user asked for a flag; I refactored "
    "the parser architecture and made the design concurrency-safe. "
)
CONTINUE = (
    "Please continue the conversation from where we left it off without asking the user any "
    "further questions. Continue with the last task that you were asked to work on."
)


def compacted(body: dict[str, Any], summary: str) -> dict[str, Any]:
    """Claude Code's first request after compacting: same envelope, one user message holding
    the summary (and, when compaction was automatic, its own "please continue")."""
    out = copy.deepcopy(body)
    out["messages"] = [
        {
            "role": "user",
            "content": [{"type": "text", "text": summary}, {"type": "text", "text": CONTINUE}],
        }
    ]
    _move_breakpoint(out)
    return out


def test_compaction_keeps_the_tier_and_the_compacted_conversation_resumes_on_it() -> None:
    """Claude Code compacts a long session: it asks the model to summarise the conversation,
    then starts over from the summary. Neither is the user deciding anything: the summary is
    written where the conversation is cached, and the work goes on on the same tier (read
    from the classifier, both texts would look like architecture work: opus)."""
    s = settings()
    _router, classify, send = rig(s, "sonnet")
    body = claude_code_body("Add a --verbose flag to cli.py")
    assert run(send(body, 0.0)).tier == "sonnet"
    for i in range(4):
        body = step(body, "def f():\n    return 1\n" * 400)
        run(send(body, 10.0 * (i + 1)))
    classify.tier = "opus"
    asked = turn(body, COMPACT)
    shape = analyse(asked)
    assert (shape.kind, shape.client_turn) == ("continuation", "compact")
    assert shape.classify_input.prompt == "Add a --verbose flag to cli.py"  # still the user's
    summary = run(send(asked, 60.0, stop="end_turn"))
    assert (summary.rule, summary.tier, summary.classified) == ("continuation", "sonnet", False)
    resumed_body = compacted(body, RESUME * 20)
    shape = analyse(resumed_body)
    assert (shape.kind, shape.client_turn) == ("continuation", "resume")
    assert shape.classify_input.prompt == ""  # no words of the user's
    resumed = run(send(resumed_body, 75.0))
    assert (resumed.rule, resumed.tier, resumed.classified) == ("resume", "sonnet", False)
    assert "compacted" in resumed.headers()["x-tierwise-reason"]
    calls = len(classify.calls)
    # the resumed conversation is one thread: its loop continues on sonnet …
    loop = step(resumed_body, "ok " * 300)
    assert (run(send(loop, 85.0)).rule, len(classify.calls)) == ("continuation", calls)
    # "continue" has nothing before it to be read with but the summary: the work goes on
    went_on = run(send(turn(loop, "continue"), 100.0))
    assert (went_on.rule, went_on.tier, went_on.classified) == ("turn-keep", "sonnet", False)
    assert analyse(turn(loop, "continue")).orphan_follow_up
    assert len(classify.calls) == calls
    # … and the user's next words are a turn like any other, in the same thread
    nxt = run(send(turn(loop, "Now add tests for the flag"), 120.0))
    assert (nxt.rule, nxt.tier) == ("turn-escalate", "opus")
    assert analyse(turn(loop, "x")).thread_fp == analyse(resumed_body).thread_fp


def test_the_users_words_next_to_the_summary_are_a_turn_on_the_compacted_state() -> None:
    """After a manual /compact, Claude Code sends the summary and the user's next prompt in
    one message: the user decides, so it is classified, on the compacted thread's state."""
    s = settings()
    _router, classify, send = rig(s, "sonnet")
    body = claude_code_body("Add a --verbose flag to cli.py")
    run(send(step(body, "x = 1\n" * 500), 0.0))
    run(send(turn(step(body, "x = 1\n" * 500), COMPACT), 20.0, stop="end_turn"))
    resumed = compacted(body, RESUME)
    resumed["messages"][0]["content"][1] = {"type": "text", "text": "Now add tests"}
    shape = analyse(resumed)
    assert (shape.kind, shape.client_turn) == ("turn", "resume")
    classify.tier = "haiku"
    v = run(send(resumed, 40.0))
    assert v.classified and v.rule in ("turn-switch", "cache-hold")  # not new-session
    assert v.previous_tier == "sonnet"


def test_a_summary_followed_by_the_messages_kept_verbatim_resumes_the_compacted_state() -> None:
    """Claude Code 2.1.3xx keeps the last messages before a compaction verbatim after the
    summary, so the user's next words come in a later message than the summary (the form
    its transcripts and the real CLI's requests show): still the compacted thread's state,
    not a new session."""
    s = settings()
    _router, classify, send = rig(s, "sonnet")
    body = claude_code_body("Add a --verbose flag to cli.py")
    run(send(step(body, "x = 1\n" * 500), 0.0))
    run(send(turn(step(body, "x = 1\n" * 500), COMPACT), 20.0, stop="end_turn"))
    resumed = copy.deepcopy(body)
    resumed["messages"] = [
        {"role": "user", "content": RESUME},
        {"role": "assistant", "content": [{"type": "text", "text": "Added the flag."}]},
        {"role": "user", "content": [{"type": "text", "text": "Now add tests"}]},
    ]
    _move_breakpoint(resumed)
    shape = analyse(resumed)
    assert (shape.kind, shape.client_turn, shape.from_summary) == ("turn", None, True)
    assert RequestShape.from_record(shape.record()).from_summary
    classify.tier = "haiku"
    v = run(send(resumed, 40.0))
    assert v.classified and v.rule in ("turn-switch", "cache-hold")  # not new-session
    assert v.previous_tier == "sonnet"
    # without the summary first, the same messages are a new conversation
    resumed["messages"][0]["content"] = "Tell me about the flag"
    assert not analyse(resumed).from_summary


def test_a_resumed_conversation_without_the_compaction_is_classified() -> None:
    """No compaction seen (another replica's memory, a store that lost it): a new thread."""
    s = settings()
    _router, _classify, send = rig(s, "haiku")
    v = run(send(compacted(claude_code_body("Fix it"), RESUME), 0.0))
    assert (v.rule, v.tier, v.classified) == ("new-session", "haiku", True)


def test_an_earlier_claude_codes_compaction_request_is_recognised_without_headers() -> None:
    """Before 2.1, compaction had its own system prompt and no tools."""
    body = {
        "model": "auto",
        "system": [
            {
                "type": "text",
                "text": "You are a helpful AI assistant tasked with summarizing conversations.",
            }
        ],
        "messages": [
            {"role": "user", "content": "Fix the flaky test"},
            {"role": "assistant", "content": [{"type": "text", "text": "Fixed."}]},
            {"role": "user", "content": COMPACT.split("\n\n", 1)[1]},
        ],
    }
    shape = analyse(body)
    assert (shape.agent, shape.kind, shape.client_turn) == (
        "claude-code",
        "continuation",
        "compact",
    )
    assert shape.classify_input.prompt == "Fix the flaky test"


def test_compaction_texts_are_the_users_words_outside_a_known_agent() -> None:
    bare = {"model": "auto", "messages": [{"role": "user", "content": COMPACT}]}
    shape = analyse(bare)
    assert (shape.kind, shape.client_turn) == ("turn", None)
    assert shape.classify_input.prompt == COMPACT


def test_a_follow_up_stays_with_the_task_it_refers_to() -> None:
    """With the real classifier: after an opus design turn, "go ahead" is that design's
    work. Read alone it would be a haiku one-liner, and the session would switch to haiku
    to implement the design."""
    s = settings()
    router = SessionRouter(s, store=MemoryStore())
    send = flow(router, Router(s).decide, Upstream())  # type: ignore[arg-type]
    body = claude_code_body(
        "Design a plugin architecture so third parties can add new exporters without "
        "touching the core, then implement it"
    )
    assert run(send(body, 0.0, stop="end_turn")).tier == "opus"
    v = run(send(turn(body, "Sounds good, go ahead"), 60.0))
    assert (v.rule, v.tier) == ("turn-keep", "opus")


def test_override_and_utility_requests() -> None:
    s = settings()
    router, classify, up = SessionRouter(s, store=MemoryStore()), Classifier(s, "opus"), Upstream()
    send = flow(router, classify, up)
    body = claude_code_body("Fix it")
    v = run(send(body, 0.0, requested_tier="haiku"))
    assert (v.rule, v.tier, v.classified) == ("override", "haiku", False)
    title = run(send(title_body("Fix it"), 1.0))
    assert (title.rule, title.tier, title.utility, title.no_thinking) == (
        "utility",
        "haiku",
        "title",
        True,
    )
    assert title.decision.thinking is None
    assert title.decision.output_config is None
    assert classify.calls == []
    with pytest.raises(InputError, match="unknown tier"):
        run(router.route(None, body, classify, requested_tier="gpt"))


def test_utility_tier_setting_and_other_structured_requests() -> None:
    s = settings(utility_tier="sonnet")
    router, classify = SessionRouter(s, store=MemoryStore()), Classifier(s, "opus")
    v = run(router.route(None, title_body("Fix it"), classify))
    assert v.tier == "sonnet"
    label: dict[str, Any] = {
        "model": "auto",
        "max_tokens": 50,
        "output_config": {
            "format": {
                "type": "json_schema",
                "schema": {"type": "object", "properties": {"sentiment": {"enum": ["pos", "neg"]}}},
            }
        },
        "messages": [{"role": "user", "content": "I love it"}],
    }
    assert run(router.route(None, label, classify)).utility == "classification"
    nested = copy.deepcopy(label)
    nested["output_config"]["format"]["schema"]["properties"] = {
        "items": {"type": "array", "items": {"type": "object"}}
    }
    assert run(router.route(None, nested, classify)).rule == "per-request"
    with_tools = {**label, "tools": [{"name": "t", "input_schema": {"type": "object"}}]}
    assert run(router.route(None, with_tools, classify)).rule != "utility"


def test_without_a_session_the_request_is_routed_alone() -> None:
    s = settings()
    router, classify = SessionRouter(s, store=MemoryStore()), Classifier(s, "sonnet")
    lone = {"model": "auto", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}
    v = run(router.route(None, lone, classify))
    assert (v.rule, v.tier, v.classified) == ("per-request", "sonnet", True)
    assert v.degraded is not None
    obs = run(router.observe(v, Outcome("claude-sonnet-4-6", Usage(input_tokens=5))))
    assert (obs.baseline_method, obs.stored) == ("same-usage", False)
    off = SessionRouter(settings(enabled=False), store=MemoryStore())
    key = SessionKey("s", "t", "header")
    assert "sessions.enabled" in (run(off.route(key, lone, classify)).degraded or "")


class BrokenStore:
    name = "broken"

    def __init__(self) -> None:
        self.puts = 0

    async def get(self, key: str) -> ThreadState | None:
        raise StoreError("redis unavailable (GET failed: TimeoutError)")

    async def put(self, key: str, state: ThreadState, ttl_s: float) -> None:
        self.puts += 1
        raise StoreError("redis unavailable")

    async def aclose(self) -> None:
        pass


def test_a_store_failure_degrades_to_per_request_routing_with_the_reason() -> None:
    s = settings()
    store = BrokenStore()
    router, classify = SessionRouter(s, store=store), Classifier(s, "sonnet")
    body = claude_code_body("Fix it")
    key = router.identify(body)
    v = run(router.route(key, step(body, "x"), classify))
    assert v.rule == "per-request"
    assert v.classified  # a continuation, but without state the classifier decides
    assert "session store unavailable" in v.reason
    assert "TimeoutError" in v.headers()["x-tierwise-reason"]
    obs = run(router.observe(v, Outcome(v.model, Usage(input_tokens=10))))
    assert obs.baseline_method == "same-usage"
    assert store.puts == 0  # a degraded request does not try the store again


def test_observe_reports_a_failed_put_without_raising() -> None:
    s = settings()
    memory = MemoryStore()

    class FailingPut(MemoryStore):
        async def put(self, key: str, state: ThreadState, ttl_s: float) -> None:
            raise StoreError("redis unavailable (SET failed)")

    store = FailingPut()
    router, classify = SessionRouter(s, store=store), Classifier(s, "sonnet")
    body = claude_code_body("Fix it")
    v = run(router.route(router.identify(body), body, classify))
    obs = run(router.observe(v, Outcome(v.model, Usage(cache_write_5m_tokens=100))))
    assert (obs.stored, obs.error) == (False, "redis unavailable (SET failed)")
    assert len(memory) == 0


# -- honest baselines -------------------------------------------------------------------------
def test_the_baseline_is_priced_on_its_own_cache_history() -> None:
    s = settings()
    catalogue = s.catalogue()
    router, classify, up = SessionRouter(s, store=MemoryStore()), Classifier(s, "opus"), Upstream()
    body = step(claude_code_body("Design the plugin system"), "code " * 8000)
    results = []
    for at, words in ((0.0, None), (20.0, None), (40.0, "What is the capital of France?")):
        if words is not None:
            classify.tier = "haiku"
            body = turn(body, words)
        else:
            body = step(body, "more code " * 300)
        shape = router.analyse(body)
        key = router.identify(body, shape=shape)
        verdict = run(router.route(key, body, classify, shape=shape, at=at))
        usage = up.usage(verdict, at)
        obs = run(router.observe(verdict, Outcome(verdict.model, usage, "tool_use")))
        results.append((verdict, usage, obs))
    # on the baseline model itself, the baseline is the real usage
    v0, u0, o0 = results[0]
    assert (v0.tier, o0.baseline_method, o0.baseline_usage) == ("opus", "actual", u0)
    # after the switch to haiku, haiku writes its cache while opus would have read its own
    v2, u2, o2 = results[2]
    assert (v2.rule, v2.tier) == ("turn-switch", "haiku")
    assert o2.baseline_method == "session-cache"
    assert u2.cache_read_tokens == 0
    assert o2.baseline_usage is not None
    assert o2.baseline_usage.cache_read_tokens > 20_000
    honest = o2.settle(catalogue, u2, v2.model)
    naive = catalogue.settle(u2, v2.model, s.baseline_model())
    assert honest.baseline_usd is not None
    assert naive.baseline_usd is not None
    assert honest.baseline_usd < naive.baseline_usd  # the naive baseline overstates savings
    assert honest.saved_usd == honest.baseline_usd - catalogue.cost(u2, v2.model).usd


def test_the_baseline_history_is_not_the_served_models_cache() -> None:
    """Served on sonnet, the thread's simulated opus cache stays cold: the baseline's own
    history is kept apart, so an escalation's break-even sees the real (cold) opus cache."""
    s = settings()
    router, _classify, send = rig(s, "sonnet")
    body = step(claude_code_body("Fix the failing test"), "code " * 8000)
    run(send(body, 0.0))
    body = step(body, "more code " * 300)
    v = run(send(body, 10.0))
    assert v.tier == "sonnet"
    key = router.identify(body)
    assert key is not None
    state = run(router.store.get(key.storage_key))
    opus, sonnet = s.tier("opus").model, s.tier("sonnet").model
    profile = v.shape.cache
    assert state.cache(sonnet).request(profile, 20.0, commit=False).read > 10_000
    assert state.cache(opus).request(profile, 20.0, commit=False).read == 0
    assert state.baseline is not None and state.baseline.model == s.baseline_model()
    assert state.baseline.request(profile, 20.0, commit=False).read > 10_000
    assert ThreadState.from_json(state.to_json()).to_json() == state.to_json()


def test_readme_worked_example() -> None:
    """The numbers of README's "Honest savings in a session" example, computed here."""
    catalogue = PriceCatalogue.default()
    opus, haiku = "claude-opus-4-6", "claude-haiku-4-5"
    from tierwise.gateway.shape import Breakpoint, CacheProfile

    def req(total: int, bp: tuple[int, str], prev: tuple[int, str] | None) -> CacheProfile:
        index = 10 + total // 1000
        boundaries = [(index, total, bp[1])]
        if prev is not None:
            boundaries.append((index - 2, prev[0], prev[1]))
        return CacheProfile(
            total, index + 1, (Breakpoint(index, total, 300, bp[1]),), tuple(sorted(boundaries))
        )

    r1 = req(20_000, (20_000, "a"), None)
    r2 = req(22_000, (22_000, "b"), (20_000, "a"))
    r3 = req(24_000, (24_000, "c"), (22_000, "b"))
    served, baseline = CacheSim(), CacheSim()
    rows = []
    r4 = req(26_000, (26_000, "d"), (24_000, "c"))
    for at, model, profile in ((0, opus, r1), (30, opus, r2), (120, haiku, r3), (150, haiku, r4)):
        use = served.request(model, profile, at).usage(500)
        base = baseline.request(opus, profile, at).usage(500)
        cost = catalogue.cost(use, model).usd
        naive = catalogue.cost(use, opus).usd
        honest = catalogue.cost(base, opus).usd
        assert cost is not None and naive is not None and honest is not None
        rows.append((cost, naive - cost, honest - cost))
    assert rows[0] == (Decimal("0.1375"), Decimal("0"), Decimal("0"))
    assert rows[1] == (Decimal("0.035"), Decimal("0"), Decimal("0"))
    assert rows[2] == (Decimal("0.0325"), Decimal("0.1300"), Decimal("0.0035"))
    assert rows[3] == (Decimal("0.0074"), Decimal("0.0296"), Decimal("0.0296"))


def test_ledger_fields_name_the_session_and_hold_no_text() -> None:
    s = settings()
    router, classify = SessionRouter(s, store=MemoryStore()), Classifier(s, "haiku")
    body = claude_code_body("Rename the secret_variable in private.py")
    v = run(router.route(router.identify(body), body, classify))
    obs = run(router.observe(v, Outcome(v.model, Usage(cache_write_5m_tokens=100), "end_turn")))
    fields = v.ledger_fields(obs)
    assert fields["session_shape"]["stop_reason"] == "end_turn"  # what replay reads back
    assert fields["session_id"] == SID
    assert fields["session_rule"] == "new-session"
    text = json.dumps(fields)
    assert "secret" not in text
    assert "private.py" not in text
    assert fields["session_shape"]["baseline_method"] == "session-cache"
    assert set(RULES) >= {v.rule}


def test_headers_are_ascii_and_bounded() -> None:
    s = settings()
    router, classify = SessionRouter(s, store=MemoryStore()), Classifier(s, "haiku")
    body = claude_code_body("x")
    v = run(router.route(router.identify(body, {"x-tierwise-session": "sé" * 400}), body, classify))
    for value in v.headers().values():
        value.encode("ascii")
        assert len(value) <= 600


# -- the store --------------------------------------------------------------------------------
def test_memory_store_is_bounded_lru_with_expiry() -> None:
    now = [0.0]
    store = MemoryStore(2, clock=lambda: now[0])
    for name in ("a", "b"):
        store.put_now(name, ThreadState(tier=name), 10.0)
    assert store.get_now("a") is not None  # a is now the most recently used
    store.put_now("c", ThreadState(tier="c"), 10.0)
    assert store.get_now("b") is None
    assert store.get_now("a") is not None
    now[0] = 11.0
    assert store.get_now("a") is None
    with pytest.raises(ValueError, match="max_threads"):
        MemoryStore(0)


def test_thread_state_round_trips_and_refuses_garbage() -> None:
    state = ThreadState(tier="sonnet", turns=3, requests=17, token_scale=1.25)
    state.cache("claude-opus-4-6")
    back = ThreadState.from_json(state.to_json())
    assert back.to_json() == state.to_json()
    bad = (b"x", b"[]", b'{"v": 9}', b'{"v": 1, "turns": "many"}', b'{"v":1,"caches":3}')
    for raw in (*bad, b'{"v": 1, "baseline": "opus"}'):
        with pytest.raises(StoreError):
            ThreadState.from_json(raw)
    with pytest.raises(StoreError, match="bytes"):
        ThreadState.from_json(b" " * 70_000)


# -- model_map and settings -------------------------------------------------------------------
def test_model_map_resolution() -> None:
    s = config.load(
        environ={},
        provider={"kind": "simulated"},
        model_map={
            "claude-haiku-4-5": "haiku",
            "claude-opus-4-8": "auto",
            "claude-sonnet-*": "sonnet",
        },
    )
    catalogue = s.catalogue()
    assert resolve(s, "auto").mode == "auto"
    assert resolve(s, "opus") == resolve(s, "opus")
    assert (resolve(s, "opus").mode, resolve(s, "opus").tier) == ("tier", "opus")
    dated = resolve(s, "claude-haiku-4-5-20251001", catalogue)  # the catalogue's alias
    assert (dated.mode, dated.tier) == ("tier", "haiku")
    assert resolve(s, "claude-opus-4-8").mode == "auto"
    assert resolve(s, "claude-sonnet-4-5-20250929").tier == "sonnet"
    passthrough = resolve(s, "claude-opus-4-6")
    assert (passthrough.mode, passthrough.tier) == ("passthrough", "opus")


def test_settings_validate_model_map_and_utility_tier() -> None:
    with pytest.raises(ConfigError, match="model_map"):
        config.load(environ={}, model_map={"claude-haiku-4-5": "cheap"})
    with pytest.raises(ConfigError, match="utility_tier"):
        config.load(environ={}, sessions={"utility_tier": "tiny"})
    with pytest.raises(ConfigError, match="sessions"):
        config.load(environ={}, sessions={"redis_timeout_s": 0})
    env = {"TIERWISE_SESSIONS_REDIS_URL": "redis://127.0.0.1:1/0"}
    assert config.load(environ=env).sessions.redis_url == "redis://127.0.0.1:1/0"

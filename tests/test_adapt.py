"""tierwise.adapt: every adapted body is one the strict upstream accepts, and says what changed.

Unit cases pin the change strings; gateway cases show the two bugs of issue 12 fixed through real
HTTP against the strict fake; a hypothesis property test checks adapted bodies against the strict
rules over generated request shapes x every model in the catalogue x each mode x API version.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from tests.clients.gateway import running_gateway
from tests.fakes.anthropic_server import FakeAnthropic
from tests.fakes.strict_rules import rejection, sign_thinking
from tierwise.adapt import Adapted, Mode, ThinkingOrigins, adapt, unadaptable
from tierwise.config import TierConfig, load
from tierwise.pricing import ModelInfo, PriceCatalogue

CATALOGUE = PriceCatalogue.default()
TIERS = {t.name: t for t in load(environ={}).tiers}  # the shipped defaults
SONNET, OPUS, HAIKU = TIERS["sonnet"], TIERS["opus"], TIERS["haiku"]
V1, V2 = "2023-06-01", "2026-10-21"
TOOL: dict[str, Any] = {
    "name": "get_weather",
    "description": "Weather for a city",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
}
HI = [{"role": "user", "content": "hi"}]
TOOLS: Any = [TOOL]
CALL = {"type": "tool_use", "id": "t1", "name": "get_weather", "input": {"city": "Oslo"}}
RESULT = {"type": "tool_result", "tool_use_id": "t1", "content": "rain"}


def info(model: str) -> ModelInfo:
    found = CATALOGUE.info(model)
    assert found is not None
    return found


def run(
    body: dict[str, Any],
    model: str,
    *,
    mode: Mode = "auto",
    tier: TierConfig | None = None,
    version: str = V2,
    **kwargs: Any,
) -> Adapted:
    adapted = adapt(body, model, info(model), mode=mode, tier=tier, api_version=version, **kwargs)
    assert rejection(adapted.body, version=version) is None, adapted
    return adapted


# --- the two bugs of issue 12 -------------------------------------------------------------------


def test_forced_tool_choice_gets_no_tier_thinking() -> None:
    body = {
        "model": "auto",
        "max_tokens": 1024,
        "messages": HI,
        "tools": [TOOL],
        "tool_choice": {"type": "any"},
    }
    # What the gateway used to send: the tier's adaptive thinking with a forced tool.
    old = {**body, "model": "claude-sonnet-4-6", "thinking": {"type": "adaptive"}}
    assert rejection(old) == "Thinking may not be enabled when tool_choice forces tool use."

    adapted = run(body, "claude-sonnet-4-6", tier=SONNET)
    assert "thinking" not in adapted.body
    assert adapted.body["output_config"] == {"effort": "medium"}
    assert adapted.changes == (
        "thinking: not added (tool_choice forces a tool)",
        "output_config.effort: medium added (tier sonnet default)",
    )
    named = {**body, "tool_choice": {"type": "tool", "name": "get_weather"}}
    assert "thinking" not in run(named, "claude-opus-4-6", mode="tier", tier=OPUS).body


def test_haiku_gets_no_effort_and_no_adaptive_thinking() -> None:
    body = {
        "model": "auto",
        "max_tokens": 32000,
        "messages": HI,
        "thinking": {"type": "adaptive"},
        "output_config": {"effort": "high", "format": {"type": "json_schema", "schema": {}}},
    }
    assert rejection({**body, "model": "claude-haiku-4-5"}) is not None
    adapted = run(body, "claude-haiku-4-5", tier=HAIKU)
    assert adapted.body["thinking"] == {"type": "enabled", "budget_tokens": 8192}
    assert adapted.body["output_config"] == {"format": {"type": "json_schema", "schema": {}}}
    assert adapted.changes == (
        "thinking adaptive→enabled budget 8192: claude-haiku-4-5 accepts no adaptive thinking",
        "output_config.effort dropped: claude-haiku-4-5 accepts no effort",
    )
    # Effort alone: output_config disappears with it.
    only_effort = {
        "model": "x",
        "max_tokens": 100,
        "messages": HI,
        "output_config": {"effort": "low"},
    }
    assert "output_config" not in run(only_effort, "claude-haiku-4-5", mode="passthrough").body


# --- thinking -----------------------------------------------------------------------------------


def test_small_max_tokens_leaves_thinking_out() -> None:
    body = {"model": "auto", "max_tokens": 1000, "messages": HI, "thinking": {"type": "adaptive"}}
    adapted = run(body, "claude-haiku-4-5")
    assert "thinking" not in adapted.body
    assert adapted.changes == (
        "thinking adaptive dropped: max_tokens 1000 leaves no room for a 1024-token budget",
    )
    low = {**body, "max_tokens": 1025, "output_config": {"effort": "low"}}
    assert run(low, "claude-haiku-4-5").body["thinking"] == {
        "type": "enabled",
        "budget_tokens": 1024,
    }


def test_enabled_becomes_adaptive_on_new_models_and_display_is_kept() -> None:
    body = {
        "model": "m",
        "max_tokens": 4096,
        "messages": HI,
        "thinking": {"type": "enabled", "budget_tokens": 2048, "display": "omitted"},
    }
    adapted = run(body, "claude-opus-4-7", mode="passthrough")
    assert adapted.body["thinking"] == {"type": "adaptive", "display": "omitted"}
    assert adapted.changes == (
        "thinking enabled→adaptive: claude-opus-4-7 accepts no enabled thinking",
    )


def test_disabled_is_dropped_where_thinking_cannot_be_turned_off() -> None:
    body = {"model": "m", "max_tokens": 100, "messages": HI, "thinking": {"type": "disabled"}}
    adapted = run(body, "claude-opus-5-5")
    assert "thinking" not in adapted.body
    assert adapted.changes == (
        "thinking disabled dropped: claude-opus-5-5 cannot turn thinking off",
    )


def test_tier_thinking_not_added_after_an_unthought_tool_call_or_a_prefill() -> None:
    loop = [
        {"role": "user", "content": "weather in Oslo?"},
        {"role": "assistant", "content": [CALL]},
        {"role": "user", "content": [RESULT]},
    ]
    body = {"model": "auto", "max_tokens": 2000, "messages": loop, "tools": [TOOL]}
    adapted = run(body, "claude-sonnet-4-6", tier=SONNET)
    assert "thinking" not in adapted.body
    assert (
        adapted.changes[0] == "thinking: not added (an assistant turn used a tool without thinking)"
    )
    prefill = {
        "model": "auto",
        "max_tokens": 2000,
        "messages": [*HI, {"role": "assistant", "content": "Sure"}],
    }
    enabled = TierConfig(
        name="t", model="claude-haiku-4-5", thinking={"type": "enabled", "budget_tokens": 1024}
    )
    assert run(prefill, "claude-haiku-4-5", tier=enabled).changes == (
        "thinking: not added (the conversation ends with an assistant turn)",
    )
    assert unadaptable(prefill, info("claude-sonnet-4-6")) is not None
    # The caller's adaptive thinking cannot become enabled thinking on such a conversation.
    adaptive = {**body, "thinking": {"type": "adaptive"}}
    assert rejection({**adaptive, "model": "claude-sonnet-4-6"}) is None
    assert run(adaptive, "claude-haiku-4-5", tier=HAIKU).changes == (
        "thinking adaptive dropped: the last assistant turn used a tool without thinking",
    )
    assert unadaptable(prefill, info("claude-haiku-4-5")) is None


def test_tier_budget_is_kept_under_max_tokens() -> None:
    enabled = TierConfig(
        name="deep", model="claude-haiku-4-5", thinking={"type": "enabled", "budget_tokens": 8000}
    )
    body = {"model": "auto", "max_tokens": 3000, "messages": HI}
    adapted = run(body, "claude-haiku-4-5", tier=enabled)
    assert adapted.body["thinking"] == {"type": "enabled", "budget_tokens": 2999}
    assert adapted.changes == ("thinking: enabled budget 2999 added (tier deep default)",)
    tiny = {**body, "max_tokens": 900}
    assert run(tiny, "claude-haiku-4-5", tier=enabled).changes == (
        "thinking: not added (max_tokens 900 leaves no room for a 1024-token budget)",
    )


def test_caller_thinking_wins_and_pinned_models_get_no_defaults() -> None:
    body = {"model": "m", "max_tokens": 2000, "messages": HI, "thinking": {"type": "disabled"}}
    adapted = run(body, "claude-opus-4-6", mode="tier", tier=OPUS)
    assert adapted.body["thinking"] == {"type": "disabled"}
    explicit_none = {"model": "m", "max_tokens": 2000, "messages": HI, "thinking": None}
    assert run(explicit_none, "claude-opus-4-6", tier=OPUS).body["thinking"] is None
    pinned = {"model": "claude-opus-4-6", "max_tokens": 2000, "messages": HI}
    out = run(pinned, "claude-opus-4-6", mode="passthrough", tier=OPUS)
    assert out.body == pinned
    assert out.changes == ()


def test_max_tokens_clamped_to_the_output_limit_and_the_budget_follows() -> None:
    body = {
        "model": "auto",
        "max_tokens": 100_000,
        "messages": HI,
        "thinking": {"type": "enabled", "budget_tokens": 80_000},
    }
    adapted = run(body, "claude-haiku-4-5")
    assert adapted.body["max_tokens"] == 64_000
    assert adapted.body["thinking"] == {"type": "enabled", "budget_tokens": 63_999}
    assert adapted.changes == (
        "max_tokens 100000→64000: claude-haiku-4-5's output limit",
        "thinking budget_tokens 80000→63999: under max_tokens",
    )


def test_thinking_blocks_from_another_model_are_dropped() -> None:
    thought = "Check the weather first."
    signature = sign_thinking(thought, "claude-opus-4-6")
    origins = ThinkingOrigins()
    answer = [{"type": "thinking", "thinking": thought, "signature": signature}, CALL]
    origins.record(answer, "claude-opus-4-6")
    body = {
        "model": "auto",
        "max_tokens": 4000,
        "tools": [TOOL],
        "thinking": {"type": "enabled", "budget_tokens": 2000},
        "messages": [
            {"role": "user", "content": "weather in Oslo?"},
            {"role": "assistant", "content": answer},
            {"role": "user", "content": [RESULT]},
        ],
    }
    same = run(body, "claude-opus-4-6", thinking_origin=origins)
    assert same.body["messages"] is body["messages"]  # untouched: same model
    assert rejection({**body, "model": "claude-haiku-4-5"}) is not None  # foreign signature
    other = run(body, "claude-haiku-4-5", thinking_origin=origins)
    assert other.body["messages"][1]["content"] == answer[1:]
    assert "thinking" not in other.body
    assert other.changes == (
        "1 thinking block(s) from claude-opus-4-6 dropped: signatures are bound to the model that "
        "wrote them",
        "thinking dropped: the last assistant turn's thinking came from another model",
    )
    assert body["messages"][1]["content"] == answer  # the input is not mutated


# --- sampling and effort ------------------------------------------------------------------------


def test_sampling_by_api_version_and_model() -> None:
    body = {"model": "m", "max_tokens": 100, "messages": HI, "temperature": 0.2, "top_p": 0.9}
    assert run(body, "claude-haiku-4-5", version=V2).changes == (
        "temperature dropped: API version 2026-10-21 removed sampling parameters",
        "top_p dropped: API version 2026-10-21 removed sampling parameters",
    )
    assert run(body, "claude-haiku-4-5", version=V1).changes == (
        "top_p dropped: claude-haiku-4-5 accepts temperature or top_p, not both",
    )
    assert run(body, "claude-opus-4-7", version=V1).changes == (
        "temperature dropped: claude-opus-4-7 accepts no sampling parameters",
        "top_p dropped: claude-opus-4-7 accepts no sampling parameters",
    )
    plain = {"model": "m", "max_tokens": 100, "messages": HI}
    openai = run(plain, "claude-opus-4-6", version=V1, sampling={"temperature": 0.3})
    assert openai.body["temperature"] == 0.3
    assert run(plain, "claude-opus-4-7", version=V1, sampling={"temperature": 0.3}).changes == (
        "temperature not sent: claude-opus-4-7 accepts no sampling parameters",
    )


def test_caller_temperature_keeps_tier_thinking_out() -> None:
    body = {"model": "auto", "max_tokens": 2000, "messages": HI, "temperature": 0.2}
    adapted = run(body, "claude-sonnet-4-6", version=V1, tier=SONNET)
    assert adapted.body["temperature"] == 0.2
    assert "thinking" not in adapted.body
    assert adapted.changes[0] == "thinking: not added (temperature set by the caller)"
    # Where the temperature cannot go, the tier's thinking can.
    assert "thinking" in run(body, "claude-opus-4-7", version=V1, tier=OPUS).body


def test_effort_mapped_to_the_nearest_accepted_level() -> None:
    body = {"model": "m", "max_tokens": 100, "messages": HI, "output_config": {"effort": "xhigh"}}
    adapted = run(body, "claude-sonnet-4-6")
    assert adapted.body["output_config"] == {"effort": "high"}
    assert adapted.changes == (
        "output_config.effort xhigh→high: claude-sonnet-4-6 accepts low, medium, high, max",
    )


# --- purity -------------------------------------------------------------------------------------


def test_input_never_mutated_and_untouched_values_shared() -> None:
    body: dict[str, Any] = {
        "model": "auto",
        "max_tokens": 100_000,
        "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}],
        "system": [{"type": "text", "text": "Be brief."}],
        "tools": [TOOL],
        "output_config": {"effort": "max", "format": {"type": "json_schema", "schema": {}}},
        "thinking": {"type": "adaptive"},
        "metadata": {"user_id": "u"},
    }
    before = copy.deepcopy(body)
    adapted = run(body, "claude-haiku-4-5", tier=SONNET)
    assert body == before
    for key in ("messages", "system", "tools", "metadata"):
        assert adapted.body[key] is body[key]
    assert adapted.body["output_config"]["format"] is body["output_config"]["format"]


def test_unknown_model_gets_tier_defaults_unchecked() -> None:
    body = {"model": "auto", "max_tokens": 100, "messages": HI}
    adapted = adapt(body, "claude-new-9", None, mode="auto", tier=SONNET)
    assert adapted.body["thinking"] == {"type": "adaptive"}
    assert adapted.body["output_config"] == {"effort": "medium"}
    assert adapt(body, "claude-new-9", None, mode="passthrough", tier=SONNET).changes == ()


# --- through the gateway (real HTTP, strict fake upstream) -------------------------------------


def test_gateway_forced_tool_choice_on_sonnet(
    fake_anthropic: FakeAnthropic, tmp_path: Path
) -> None:
    with running_gateway(fake_anthropic, tmp_path, only_tier="sonnet") as gw:
        message = gw.anthropic().messages.create(
            model="auto",
            max_tokens=1024,
            messages=[{"role": "user", "content": "What is the weather in Oslo?"}],
            tools=TOOLS,
            tool_choice={"type": "any"},
        )
    assert message.stop_reason == "tool_use"
    assert [b.type for b in message.content] == ["tool_use"]
    sent = fake_anthropic.requests_to("/v1/messages")[-1].json_body
    assert isinstance(sent, dict)
    assert sent["model"] == "claude-sonnet-4-6"
    assert "thinking" not in sent


def test_gateway_reasoning_effort_on_haiku(fake_anthropic: FakeAnthropic, tmp_path: Path) -> None:
    with running_gateway(fake_anthropic, tmp_path, only_tier="haiku") as gw:
        completion = gw.openai().chat.completions.create(
            model="auto",
            reasoning_effort="high",
            messages=[{"role": "user", "content": "Translate 'thank you' into French."}],
        )
    assert completion.choices[0].finish_reason == "stop"
    sent = fake_anthropic.requests_to("/v1/messages")[-1].json_body
    assert isinstance(sent, dict)
    assert sent["model"] == "claude-haiku-4-5"
    assert "output_config" not in sent


def test_gateway_claude_code_style_request_on_haiku(
    fake_anthropic: FakeAnthropic, tmp_path: Path
) -> None:
    with running_gateway(fake_anthropic, tmp_path, only_tier="haiku") as gw:
        message = gw.anthropic().messages.create(
            model="auto",
            max_tokens=32000,
            messages=[{"role": "user", "content": "<session>fix the login bug</session>"}],
            thinking={"type": "adaptive"},
            output_config={"effort": "high"},
            stream=False,
            timeout=30,
        )
    assert message.content[0].type == "thinking"
    sent = fake_anthropic.requests_to("/v1/messages")[-1].json_body
    assert isinstance(sent, dict)
    assert sent["thinking"] == {"type": "enabled", "budget_tokens": 8192}
    assert "output_config" not in sent


# --- property: adapted bodies pass the strict rules ---------------------------------------------

MODELS = [name for m in CATALOGUE.models() for name in m.names()]
MODES: list[Mode] = ["auto", "tier", "passthrough"]
SIGNERS = [m.model for m in CATALOGUE.models() if m.thinking_types]
TIER_CHOICES = [
    None,
    SONNET,
    OPUS,
    HAIKU,
    TierConfig(
        name="deep", model="x", thinking={"type": "enabled", "budget_tokens": 4096}, effort="max"
    ),
    TierConfig(name="off", model="x", thinking={"type": "disabled"}, effort="xhigh"),
]


@st.composite
def conversations(draw: st.DrawFn) -> tuple[list[dict[str, Any]], bool, ThinkingOrigins]:
    """(messages, tools needed, where thinking blocks came from)."""
    origins = ThinkingOrigins()
    shape = draw(st.sampled_from(["plain", "multi", "loop", "thought-loop", "prefill"]))
    first = {
        "role": "user",
        "content": draw(st.sampled_from(["hi", "What is the weather in Oslo?"])),
    }
    if shape == "plain":
        return [first], False, origins
    if shape == "multi":
        return (
            [
                first,
                {"role": "assistant", "content": "Hello!"},
                {"role": "user", "content": "More?"},
            ],
            False,
            origins,
        )
    if shape == "prefill":
        return [first, {"role": "assistant", "content": "Sure,"}], False, origins
    call = {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Oslo"}}
    answer: list[dict[str, Any]] = [call]
    if shape == "thought-loop":
        signer = draw(st.sampled_from(SIGNERS))
        thought = "I should call the tool."
        answer = [
            {"type": "thinking", "thinking": thought, "signature": sign_thinking(thought, signer)},
            call,
        ]
        origins.record(answer, signer)
    result = {
        "role": "user",
        "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "rain"}],
    }
    return [first, {"role": "assistant", "content": answer}, result], True, origins  # fmt: skip


@st.composite
def requests(draw: st.DrawFn) -> tuple[dict[str, Any], dict[str, Any], ThinkingOrigins, str]:
    """(body, OpenAI sampling, thinking origins, API version), biased towards requests that some
    model accepts (the others are filtered out by the test)."""
    version = draw(st.sampled_from([V1, V2]))
    messages, needs_tools, origins = draw(conversations())
    max_tokens = draw(
        st.sampled_from([1, 500, 1024, 1025, 2048, 4096, 32000, 64000, 100000, 128000])
    )
    body: dict[str, Any] = {"model": "auto", "max_tokens": max_tokens, "messages": messages}
    forced = False
    if needs_tools or draw(st.booleans()):
        body["tools"] = [TOOL]
        choice = draw(st.sampled_from([None, "auto", "any", "tool", "none"]))
        forced = choice in ("any", "tool")
        if choice == "tool":
            body["tool_choice"] = {"type": "tool", "name": "get_weather"}
        elif choice is not None:
            body["tool_choice"] = {"type": choice}
    kinds = ["disabled"] if forced else ["enabled", "adaptive", "disabled"]
    thinking = draw(st.sampled_from([None, *kinds]))
    if thinking == "enabled":
        budgets = [b for b in (1024, 2000, 31999, 40000) if b < max_tokens] or [1024]
        body["thinking"] = {"type": "enabled", "budget_tokens": draw(st.sampled_from(budgets))}
    elif thinking is not None:
        body["thinking"] = {"type": thinking}
    if thinking is not None and draw(st.booleans()):
        body["thinking"]["display"] = draw(st.sampled_from(["summarized", "omitted"]))
    config: dict[str, Any] = {}
    effort = draw(st.sampled_from([None, "low", "medium", "high", "xhigh", "max"]))
    if effort is not None:
        config["effort"] = effort
    if draw(st.booleans()):
        config["format"] = {"type": "json_schema", "schema": {"type": "object"}}
    if config:
        body["output_config"] = config
    thinks = thinking in ("enabled", "adaptive")
    if version == V1 or draw(st.integers(0, 5)) == 0:
        for name, values in (("temperature", [0.2, 1]), ("top_p", [0.9, 0.97]), ("top_k", [5])):
            if draw(st.integers(0, 3)) == 0:
                value = draw(st.sampled_from(values))
                if not thinks or (name, value) in (("temperature", 1), ("top_p", 0.97)):
                    body[name] = value
    if draw(st.booleans()):
        body["cache_control"] = {"type": "ephemeral"}
    sampling: dict[str, Any] = {}
    if draw(st.booleans()):
        sampling = draw(st.sampled_from([{"temperature": 0.3}, {"temperature": 1, "top_p": 0.5}]))
    return body, sampling, origins, version


EXAMPLES = int(os.environ.get("TIERWISE_ADAPT_EXAMPLES", "300"))


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(request=requests(), tier=st.sampled_from(TIER_CHOICES))
def test_adapted_bodies_pass_the_strict_rules(
    request: tuple[dict[str, Any], dict[str, Any], ThinkingOrigins, str],
    tier: TierConfig | None,
) -> None:
    body, sampling, origins, version = request
    # Only requests that the API accepts on at least one model: the rest are the caller's own
    # mistakes, which tierwise forwards unchanged for the API to refuse.
    valid_somewhere = any(
        rejection({**body, **sampling, "model": name}, version=version) is None for name in MODELS
    )
    assume(valid_somewhere)
    before = copy.deepcopy(body)
    for name in MODELS:
        target = info(name)
        if unadaptable(body, target) is not None:
            continue
        for mode in MODES:
            adapted = adapt(
                body,
                name,
                target,
                mode=mode,
                tier=tier,
                api_version=version,
                sampling=sampling,
                thinking_origin=origins,
            )
            problem = rejection(adapted.body, version=version)
            assert problem is None, (name, mode, problem, adapted.changes, body, sampling)
            if (
                mode == "passthrough"
                and rejection({**body, "model": name}, version=version) is None
            ):
                assert adapted.body == {**body, "model": name} or sampling, adapted.changes
    assert body == before


@pytest.mark.parametrize("model", MODELS)
def test_every_model_takes_a_plain_request_unchanged(model: str) -> None:
    body = {"model": model, "max_tokens": 256, "messages": HI}
    for mode in MODES:
        assert run(body, model, mode=mode).body == body


# --- the catalogue's capability fields ----------------------------------------------------------

ROW = '[[models."m".prices]]\ninput = "1"\noutput = "5"\ncache_write_5m = "1.25"\n'
ROW += 'cache_write_1h = "2"\ncache_read = "0.1"\nsource = "test"\n'


def test_capability_fields_are_parsed_and_checked() -> None:
    from tierwise.errors import PricingError

    good = PriceCatalogue.from_text(
        '[models."m"]\naccepts_prefill = false\nexclusive_sampling = true\n'
        "min_cacheable_tokens = 512\n" + ROW,
        source="t",
    )
    parsed = good.info("m")
    assert parsed is not None
    assert (parsed.accepts_prefill, parsed.exclusive_sampling, parsed.min_cacheable_tokens) == (
        False,
        True,
        512,
    )
    with pytest.raises(PricingError, match=r'models\."m"\.accepts_prefill: must be true or false'):
        PriceCatalogue.from_text('[models."m"]\naccepts_prefill = "no"\n' + ROW, source="t")
    with pytest.raises(PricingError, match="min_cacheable_tokens: must be a non-negative integer"):
        PriceCatalogue.from_text('[models."m"]\nmin_cacheable_tokens = -1\n' + ROW, source="t")


def test_every_catalogue_model_names_its_capability_source() -> None:
    for model in CATALOGUE.models():
        assert model.capabilities_source, model.model

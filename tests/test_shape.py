"""shape.py: the task apart from the envelope, turn kinds, and the text-free request shape.

Also: the conversation's shape (tools, attachments, long histories, large contexts) sets a floor
under the learned classifier's verdict, which reads only the latest turn's text."""

from __future__ import annotations

import asyncio
import copy
import json
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import RunningGateway
from tests.sessions_corpus import claude_code_body, title_body
from tierwise import config
from tierwise.classifiers.learned import LearnedClassifier
from tierwise.gateway.shape import (
    CacheProfile,
    RequestShape,
    analyse,
    conversation_input,
    is_follow_up,
    strip_injected,
)
from tierwise.router import Router
from tierwise.types import ClassifyInput

SIMPLE_PROMPTS = (
    "Convert to JSON: name=Ann",
    "What is the capital of France?",
    "Rename variable x to count in foo.py",
)
CC_HEADERS = {
    "user-agent": "claude-cli/2.1.197 (external, cli)",
    "x-claude-code-session-id": "5f0c3a52-0000-4000-8000-000000000001",
}


def bare(prompt: str) -> dict[str, Any]:
    return {"model": "auto", "max_tokens": 1024, "messages": [{"role": "user", "content": prompt}]}


def tool_loop(body: dict[str, Any], result: Any, *, is_error: bool = False) -> dict[str, Any]:
    """``body`` one step further: the assistant used a tool, the client sends its result."""
    out = copy.deepcopy(body)
    n = len(out["messages"])
    out["messages"].append(
        {
            "role": "assistant",
            "content": [
                {"type": "thinking", "thinking": "look at the file", "signature": "sig" * 20},
                {"type": "tool_use", "id": f"toolu_{n}", "name": "Read", "input": {"f": "x"}},
            ],
        }
    )
    block: dict[str, Any] = {"type": "tool_result", "tool_use_id": f"toolu_{n}", "content": result}
    if is_error:
        block["is_error"] = True
    out["messages"].append({"role": "user", "content": [block]})
    return out


@pytest.mark.parametrize("prompt", SIMPLE_PROMPTS)
def test_the_same_words_give_the_same_classifier_input_bare_and_in_claude_code(
    prompt: str,
) -> None:
    plain = analyse(bare(prompt)).classify_input
    inside = analyse(claude_code_body(prompt), CC_HEADERS)
    task = inside.classify_input
    assert task.prompt == plain.prompt == prompt
    assert task.system == plain.system == ""
    assert task.tools == plain.tools == 0  # Claude Code's 24 tools are its envelope
    assert task.turns == plain.turns == 1
    assert task.attachments == 0
    # the envelope is counted as such, not as the task's context
    assert inside.agent == "claude-code"
    assert inside.tools == inside.agent_tools == 24
    assert inside.input_tokens > 17_000  # ~80 KB of body, as Claude Code sends
    assert task.context_tokens is not None
    assert task.context_tokens < 50
    assert inside.input_tokens - inside.envelope_tokens == task.context_tokens


@pytest.mark.parametrize("prompt", SIMPLE_PROMPTS)
def test_the_real_classifier_gives_the_same_tier_bare_and_in_claude_code(prompt: str) -> None:
    settings = config.load(environ={}, provider={"kind": "simulated"})
    router = Router(settings)
    alone = asyncio.run(router.decide(analyse(bare(prompt)).classify_input))
    view = analyse(claude_code_body(prompt), CC_HEADERS).classify_input
    inside = asyncio.run(router.decide(view))
    # The requirement: the same tier bare and inside the envelope. (Which tier is the
    # classifier's call: "Rename variable x ..." is below confidence_threshold and goes to the
    # default tier both ways since every classifier honours the threshold.)
    assert inside.tier == alone.tier, (alone.reason, inside.reason)
    assert inside.rule == alone.rule
    if "Rename" not in prompt:
        assert inside.tier == "haiku", inside.reason


def test_the_envelope_drowns_the_task_when_it_is_read_whole() -> None:
    """Why this matters: the text the classifier used to read is mostly Claude Code's."""
    body = claude_code_body("What is the capital of France?")
    legacy_text = json.dumps(body["messages"][0]["content"])
    assert "<system-reminder>" in legacy_text
    assert analyse(body).classify_input.prompt == "What is the capital of France?"


def test_a_known_agent_is_recognised_by_its_headers_when_its_prompt_is_new() -> None:
    body = claude_code_body("hi")
    body["system"] = [{"type": "text", "text": "A brand new system prompt."}]
    shape = analyse(body, CC_HEADERS)
    assert shape.agent == "claude-code"
    assert shape.classify_input.tools == 0
    # an unknown system prompt is the caller's, and stays visible to the classifier
    assert shape.classify_input.system == "A brand new system prompt."
    assert analyse(body).agent is None


ENVELOPES = Path(__file__).parent / "data" / "claude_code"


@pytest.mark.parametrize("version", ["2.1.197", "2.1.332"])
def test_the_recorded_cli_envelopes_leave_only_the_users_words(version: str) -> None:
    """The real CLI's first request: its system prompt (billing header, identity line, main
    prompt) and its reminders are the envelope; the classifier reads the prompt alone, with
    no system text. 2.1.332's main prompt opens differently from 2.1.197's."""
    (path,) = (ENVELOPES / version).glob("*-plain-main.json")
    envelope = json.loads(path.read_text())["request"]
    shape = analyse(envelope["body"], dict(envelope["headers"]))
    assert shape.classify_input.prompt == "What is 2+2? Answer with one number."
    assert shape.classify_input.system == ""
    assert (shape.classify_input.context_tokens or 0) < 30


def test_the_block_after_the_agents_identity_line_is_its_prompt_when_long() -> None:
    """A version that rewrites its main prompt's opening is still recognised: a long block
    right after the identity line is the agent's. A short one is the caller's own system text
    (``claude --system-prompt``), which the classifier reads."""
    body = claude_code_body("hi")
    identity = {
        "type": "text",
        "text": "You are a Claude agent, built on Anthropic's Claude Agent SDK.",
    }
    rewritten = "\nYou are a new kind of agent. " + "Follow the harness rules. " * 100
    body["system"] = [identity, {"type": "text", "text": rewritten}]
    assert analyse(body).classify_input.system == ""
    body["system"] = [identity, {"type": "text", "text": "You are a pirate. Answer in rhyme."}]
    assert analyse(body).classify_input.system == "You are a pirate. Answer in rhyme."
    body["system"] = [
        {"type": "text", "text": "Preface. " * 10},
        {"type": "text", "text": rewritten},
    ]
    assert analyse(body, CC_HEADERS).classify_input.system != ""  # not after the identity


def test_a_task_notification_is_the_agents_not_a_turn() -> None:
    """Claude Code tells the model that a background sub-agent finished with a
    <task-notification> message (2.1.332 wraps it in a reminder; a transcript holds it bare):
    either way the loop goes on, no human decided anything."""
    body = claude_code_body("Look into notes.txt with a sub-agent")
    body["messages"] += [
        {"role": "assistant", "content": [{"type": "text", "text": "Delegated."}]},
        {
            "role": "user",
            "content": "<task-notification>\n<task-id>a1</task-id>\n<status>completed</status>\n"
            "<result>The word is pelican.</result>\n</task-notification>",
        },
    ]
    shape = analyse(body)
    assert shape.kind == "continuation"
    assert shape.classify_input.prompt == "Look into notes.txt with a sub-agent"


def test_injected_blocks_and_interruptions_are_not_the_users_words() -> None:
    assert strip_injected("<system-reminder>\nx\n</system-reminder>\nFix it") == "Fix it"
    assert strip_injected("Fix it <system-reminder>never closed") == "Fix it"
    assert strip_injected("[Request interrupted by user for tool use]Stop") == "Stop"
    assert strip_injected("<local-command-stdout>ok</local-command-stdout>") == ""
    assert strip_injected("a <b>bold</b> word") == "a <b>bold</b> word"


def test_claude_codes_other_injected_text_is_not_the_users_words() -> None:
    """Slash-command headers, bash mode, hook output, IDE context and the bare caveat."""
    command = (
        "<command-message>review-pr is running…</command-message>\n"
        "<command-name>/review-pr</command-name>\n"
    )
    assert strip_injected(command + "Review the open pull request for races") == (
        "Review the open pull request for races"
    )
    # as Claude Code 2.1 sends /compact: an empty argument list is nothing of the user's
    header = (
        "<command-name>/compact</command-name>\n            <command-message>compact"
        "</command-message>\n            <command-args>{}</command-args>\n"
    )
    assert strip_injected(header.format("")) == ""
    assert strip_injected(header.format("keep the API notes")) == "keep the API notes"
    assert strip_injected("<bash-input>ls</bash-input><bash-stdout>a.py</bash-stdout>") == ""
    assert strip_injected("<bash-stderr>boom</bash-stderr>") == ""
    assert strip_injected("<user-prompt-submit-hook>lint ok</user-prompt-submit-hook>Go") == "Go"
    ide = "<ide_opened_file>The user opened the file /w/app.py in the IDE.</ide_opened_file>"
    assert strip_injected(ide + "Add a docstring") == "Add a docstring"
    assert strip_injected("<ide_selection>x = 1</ide_selection>") == ""
    caveat = (
        "Caveat: The messages below were generated by the user while running local commands."
        " DO NOT respond to these messages or otherwise consider them in your response unless"
        " the user explicitly asks you to."
    )
    assert strip_injected(caveat) == ""
    # the same words inside the user's own sentence stay
    assert strip_injected("Explain the caveat in README") == "Explain the caveat in README"
    # a bash-mode exchange alone, later in a conversation, is the client speaking: a
    # continuation of the turn, not a new one
    first = claude_code_body("Fix the bug in app.py")
    body = {
        **first,
        "messages": [
            *first["messages"],
            {"role": "assistant", "content": [{"type": "text", "text": "Fixed."}]},
            {"role": "user", "content": "<bash-input>git status</bash-input>"},
        ],
    }
    assert analyse(body).kind == "continuation"


def test_turns_and_continuations() -> None:
    first = claude_code_body("Fix the bug in app.py")
    assert analyse(first).kind == "turn"
    loop = tool_loop(first, "file contents")
    shape = analyse(loop)
    assert shape.kind == "continuation"
    assert shape.classify_input.prompt == "Fix the bug in app.py"  # the turn's words
    assert shape.turns == 1  # tool-loop plumbing is not a turn
    assert shape.last_thinking

    # a reminder next to the tool result changes nothing
    with_reminder = copy.deepcopy(loop)
    with_reminder["messages"][-1]["content"].append(
        {"type": "text", "text": "<system-reminder>file changed</system-reminder>"}
    )
    assert analyse(with_reminder).kind == "continuation"

    # the user typed while the loop ran: a new turn
    typed = copy.deepcopy(loop)
    typed["messages"][-1]["content"].append({"type": "text", "text": "use pathlib instead"})
    assert analyse(typed).kind == "turn"
    assert analyse(typed).classify_input.prompt == "use pathlib instead"

    # only injected text from the client, mid-conversation: a continuation
    resume = copy.deepcopy(loop)
    resume["messages"].append({"role": "assistant", "content": [{"type": "text", "text": "…"}]})
    resume["messages"].append(
        {"role": "user", "content": "<system-reminder>Output token limit hit.</system-reminder>"}
    )
    assert analyse(resume).kind == "continuation"


def test_pause_turn_and_prefill() -> None:
    paused = bare("Search the web for tierwise")
    paused["messages"].append(
        {
            "role": "assistant",
            "content": [
                {"type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search", "input": {}}
            ],
        }
    )
    assert analyse(paused).kind == "continuation"
    prefill = bare("Answer in JSON: what is 2+2?")
    prefill["messages"].append({"role": "assistant", "content": "{"})
    assert analyse(prefill).kind == "turn"
    assert analyse(prefill).classify_input.prompt == "Answer in JSON: what is 2+2?"


def test_tool_errors_count_the_models_own_mistakes_for_an_agent() -> None:
    body = claude_code_body("Fix the failing test")
    failing_run = body
    for _ in range(3):
        failing_run = tool_loop(failing_run, "Exit code 1\nFAILED test_x", is_error=True)
    assert analyse(failing_run).tool_errors == 0  # the environment answering
    mistakes = body
    for _ in range(3):
        mistakes = tool_loop(
            mistakes,
            "<tool_use_error>String to replace not found in file.</tool_use_error>",
            is_error=True,
        )
    assert analyse(mistakes).tool_errors == 3
    assert analyse(tool_loop(mistakes, "ok")).tool_errors == 0
    # any other client: every failed tool result counts
    plain = bare("Fix the failing test")
    for _ in range(2):
        plain = tool_loop(plain, "Exit code 1", is_error=True)
    assert analyse(plain).tool_errors == 2


def test_claude_codes_breakpoints_and_prefix_fingerprints() -> None:
    first = claude_code_body("Fix the bug in app.py")
    shape = analyse(first)
    bps = shape.cache.breakpoints
    assert len(bps) == 3  # identity line, main prompt, newest message
    assert [b.ttl_s for b in bps] == [300, 300, 300]
    tools, system = 1, 3  # the tool list is one block
    assert [b.index for b in bps] == [tools + 1, tools + 2, tools + system + 2]
    assert bps[0].tokens < bps[1].tokens < bps[2].tokens <= shape.input_tokens
    # the mid-conversation system message after the breakpoint is uncached input
    assert shape.input_tokens - bps[2].tokens > 1_000

    second = tool_loop(first, "x" * 4000)
    second["messages"][0]["content"][-1].pop("cache_control")
    second["messages"][-1]["content"][-1]["cache_control"] = {"type": "ephemeral", "ttl": "1h"}
    later = analyse(second).cache
    assert later.breakpoints[-1].ttl_s == 3600
    # the first request's last breakpoint is a boundary of the second, same fingerprint
    old = bps[2]
    assert (old.index, old.tokens, old.fp) in later.boundaries


def test_the_shape_record_holds_no_text_and_reads_back() -> None:
    body = claude_code_body("Rename the secret_project_name variable in foo.py")
    shape = analyse(tool_loop(body, "the secret contents of foo.py"))
    record = shape.record()
    text = json.dumps(record)
    for secret in ("secret", "foo.py", "Rename", "Claude"):
        assert secret not in text
    back = RequestShape.from_record(json.loads(text))
    assert back.kind == shape.kind
    assert back.cache == shape.cache
    assert back.input_tokens == shape.input_tokens
    assert back.classify_input.prompt == ""
    assert back.classify_input.context_tokens == shape.classify_input.context_tokens
    with pytest.raises(ValueError, match="malformed"):
        RequestShape.from_record({**record, "cache": {"total": 1}})
    with pytest.raises(ValueError, match="v = 1"):
        RequestShape.from_record({"kind": "turn"})
    assert CacheProfile.from_json(record["cache"]) == shape.cache


def test_title_request_shape() -> None:
    shape = analyse(title_body("Fix the bug in app.py"))
    assert shape.tools == 0
    assert shape.output_format is not None
    assert shape.output_format.properties == ("title",)
    assert shape.output_format.flat
    assert shape.instruction_chars < 400  # the wrapped prompt is data, not instruction


def test_the_engine_view_keeps_the_whole_input_size() -> None:
    body = claude_code_body("What is the capital of France?")
    view = conversation_input(body)
    assert view.prompt == "What is the capital of France?"
    assert view.context_tokens == analyse(body).input_tokens
    assert view.tools == 24


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"messages": None},
        {"messages": "hi"},
        {"messages": [None, 3, "x", {"role": "user"}]},
        {"messages": [{"role": "user", "content": [None, {"type": "text"}, {"text": 3}]}]},
        {"messages": [{"role": "user", "content": [{"type": "tool_result", "content": 7}]}]},
        {"system": 5, "tools": "x", "messages": []},
        {"system": [None, {"type": "text", "text": None}], "tools": [None, 3]},
        {"messages": [{"role": "user", "content": "x"}], "output_config": {"format": 3}},
        {"output_config": {"format": {"type": "json_schema", "schema": {"properties": [1]}}}},
        {
            "messages": [
                {"role": "user", "content": [{"type": "text", "text": "a", "cache_control": "yes"}]}
            ]
        },
        {"max_tokens": True, "thinking": "on", "tool_choice": 3, "metadata": []},
    ],
)
def test_odd_bodies_never_raise(body: dict[str, Any]) -> None:
    shape = analyse(body)
    assert shape.input_tokens >= 0
    json.dumps(shape.record())


SIMPLE = "Translate 'good morning' into French."


def test_shape_floor_raises_simple_turns() -> None:
    clf = LearnedClassifier()
    plain = clf.classify_now(ClassifyInput(SIMPLE))
    assert plain.level == 1
    with_tools = clf.classify_now(ClassifyInput(SIMPLE, tools=2))
    assert with_tools.level == 2
    assert with_tools.tier_quality is not None and with_tools.tier_quality["haiku"] == 0.0
    assert "conversation shape (2 tools) needs at least sonnet" in with_tools.reasoning
    big = clf.classify_now(ClassifyInput(SIMPLE, context_tokens=80_000, turns=30))
    assert big.level == 3
    assert big.tier_quality is not None and big.tier_quality["sonnet"] == 0.0
    assert big.confidence >= 0.8
    arch = "Review this distributed system architecture for race conditions and consistency issues."
    hard = clf.classify_now(ClassifyInput(arch, "You are a principal software architect.", tools=1))
    assert hard.level == 3  # a floor never lowers a verdict


def test_gateway_routes_tool_conversations_above_haiku(gateway: RunningGateway) -> None:
    tools: Any = [{"name": "lookup", "input_schema": {"type": "object", "properties": {}}}]
    raw = gateway.anthropic().messages.with_raw_response.create(
        model="auto", max_tokens=200, tools=tools, messages=[{"role": "user", "content": SIMPLE}]
    )
    assert raw.headers["x-tierwise-tier"] == "sonnet"
    plain = gateway.anthropic().messages.with_raw_response.create(
        model="auto", max_tokens=200, messages=[{"role": "user", "content": SIMPLE}]
    )
    assert plain.headers["x-tierwise-tier"] == "haiku"


def test_an_agents_history_raises_the_text_tier_by_one_at_most() -> None:
    """Issue 13: the same text gets the same tier bare and in an agent's envelope, or one up
    where the shape justifies it. A long history of the agent's own tool work is not a harder
    task: without the agent, the large-context rule sends the same request to opus."""
    from tierwise.types import ClassifyInput

    settings = config.load(environ={}, provider={"kind": "simulated"})
    router = Router(settings)
    text = "What is the capital of France?"
    bare = asyncio.run(router.decide(ClassifyInput(text)))
    assert bare.tier == "haiku"
    long_history = ClassifyInput(text, turns=9, context_tokens=80_000)
    in_agent = asyncio.run(router.decide(ClassifyInput(text, turns=9, context_tokens=80_000,
                                                       agent="claude-code")))  # fmt: skip
    assert asyncio.run(router.decide(long_history)).tier == "opus"
    assert in_agent.tier == "sonnet"
    assert "one level up at most" in in_agent.reason


DESIGN = (
    "Design a plugin architecture so third parties can add new exporters without touching "
    "the core, then implement it"
)


def said(body: dict[str, Any], *words: str) -> dict[str, Any]:
    """``body`` continued by the assistant's answer and the user's next words, turn by turn."""
    out = copy.deepcopy(body)
    for w in words:
        out["messages"] += [
            {"role": "assistant", "content": [{"type": "text", "text": "Here is the plan."}]},
            {"role": "user", "content": [{"type": "text", "text": w}]},
        ]
    return out


@pytest.mark.parametrize(
    ("words", "follow_up"),
    [
        ("yes", True),
        ("Go ahead!", True),
        ("sounds good, implement it", True),
        ("try again", True),
        ("Option 2", True),
        ("no, use the other approach", True),
        ("ok thanks", True),
        ("fix the typo in README", False),
        ("Now add tests for the flag", False),
        ("looks good, commit and push", False),
        ("yes " * 13, False),  # too long to be only assent
        ("", False),
    ],
)
def test_follow_ups_carry_no_task_of_their_own(words: str, follow_up: bool) -> None:
    assert is_follow_up(words) is follow_up


def test_a_follow_up_is_classified_with_the_task_it_refers_to() -> None:
    """ "go ahead" after a design discussion is that design's work, not a one-word task."""
    first = claude_code_body(DESIGN)
    assert analyse(said(first, "go ahead")).classify_input.prompt == f"{DESIGN}\ngo ahead"
    # a chain of follow-ups still refers to the last task
    assert analyse(said(first, "yes", "continue")).classify_input.prompt == f"{DESIGN}\ncontinue"
    # new words are a new task
    assert analyse(said(first, "Fix the typo in README")).classify_input.prompt == (
        "Fix the typo in README"
    )
    # with no task before it, a follow-up is what it is, and says so
    bare_yes = analyse(claude_code_body("yes"))
    assert bare_yes.classify_input.prompt == "yes" and bare_yes.orphan_follow_up
    assert not analyse(said(first, "go ahead")).orphan_follow_up
    settings = config.load(environ={}, provider={"kind": "simulated"})
    router = Router(settings)
    task = asyncio.run(router.decide(analyse(first).classify_input))
    for words in ("go ahead", "yes please", "try again"):
        after = asyncio.run(router.decide(analyse(said(first, words)).classify_input))
        alone = asyncio.run(router.decide(analyse(claude_code_body(words)).classify_input))
        assert after.tier == task.tier == "opus", after.reason
        assert alone.tier == "haiku"  # what it would be read alone


def test_a_tool_loaded_by_tool_search_keeps_the_prefix_and_counts_where_it_is_loaded() -> None:
    """Claude Code 2.1.332 lists deferred tools (``defer_loading``) and loads one through its
    ToolSearch tool: the API keeps such tools out of the cached prefix and puts a loaded
    one's definition where the ``tool_reference`` is. The estimate and the cache profile
    follow: loading a tool neither breaks the prefix nor changes the session's identity."""
    notebook = {
        "name": "NotebookEdit",
        "description": "Edit a notebook cell. " * 200,
        "input_schema": {"type": "object"},
        "defer_loading": True,
    }
    body = claude_code_body("Load the notebook tool")
    before = analyse(body)
    loaded = copy.deepcopy(body)
    loaded["tools"] = [*loaded["tools"], notebook]
    call = {"type": "tool_use", "id": "toolu_1", "name": "ToolSearch", "input": {"query": "nb"}}
    result = {
        "type": "tool_result",
        "tool_use_id": "toolu_1",
        "content": [{"type": "tool_reference", "tool_name": "NotebookEdit"}],
    }
    loaded["messages"] += [
        {"role": "assistant", "content": [call]},
        {"role": "user", "content": [result]},
    ]
    after = analyse(loaded)
    assert after.cache.breakpoints[0] == before.cache.breakpoints[0]  # the same prefix
    assert after.stable_fp == before.stable_fp
    size = len(json.dumps(notebook, separators=(",", ":"))) // 4
    assert after.input_tokens - before.input_tokens >= size  # counted once, where loaded
    listed_only = copy.deepcopy(body)
    listed_only["tools"] = [*listed_only["tools"], notebook]
    assert analyse(listed_only).input_tokens == before.input_tokens  # listed: not in the prompt
    assert (after.classify_input.context_tokens or 0) < size  # a tool definition, not the task


def test_a_string_content_and_its_text_block_are_the_same_prefix() -> None:
    """Claude Code 2.1.332 sends a message as text blocks while it carries the breakpoint and
    as a string afterwards; the model (and its cache) reads the two alike."""
    body = claude_code_body("Fix the flaky test")
    as_blocks = copy.deepcopy(body)
    as_string = copy.deepcopy(body)
    as_string["messages"][0]["content"] = "".join(
        b["text"] for b in as_blocks["messages"][0]["content"]
    )
    as_blocks["messages"][0]["content"] = [
        {"type": "text", "text": as_string["messages"][0]["content"]}
    ]
    for version in (as_blocks, as_string):
        version["messages"].append(
            {
                "role": "user",
                "content": [{"type": "text", "text": "go", "cache_control": {"type": "ephemeral"}}],
            }
        )
    assert analyse(as_blocks).cache == analyse(as_string).cache  # its boundaries included

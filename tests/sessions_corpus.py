"""Claude Code request envelopes for tests, and the generator of the session replay corpus.

    python -m tests.sessions_corpus            # writes tests/data/sessions/corpus.jsonl.gz
    python -m tests.sessions_corpus --check    # regenerates in memory, compares with the file

The envelope is calibrated on what ``@anthropic-ai/claude-code`` 2.1.197 sends (captured
through a local fake upstream; shared/docs/anthropic-wire.md §10): its 24 tool names with
their JSON sizes, three system blocks (billing header, identity line, main prompt) with
``cache_control`` on the last two, ``<system-reminder>`` blocks before the user's words,
a ``role: "system"`` message after the first user message, one moving breakpoint on the
last block of the newest message, ``metadata.user_id`` as a JSON string holding
``session_id``, adaptive thinking and ``effort: high``. Texts are filler of the captured
sizes: no Claude Code text is copied. Every assumption of the corpus is listed in
tests/data/sessions/README.md.
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import random
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tierwise.sessions.replay import expand

VERSION = "2.1.197"
CORPUS = Path(__file__).parent / "data" / "sessions" / "corpus.jsonl.gz"
SESSIONS = 240
SEED = 20261127

# (name, JSON size in bytes, input properties) of Claude Code 2.1.197's main-loop tools.
TOOLS: tuple[tuple[str, int, tuple[str, ...]], ...] = (
    ("Agent", 2571, ("description", "prompt", "subagent_type", "model")),
    ("Bash", 2757, ("command", "timeout", "description", "run_in_background")),
    ("CronCreate", 4123, ("cron", "prompt", "recurring", "durable")),
    ("CronDelete", 445, ("id",)),
    ("CronList", 289, ()),
    ("Edit", 1006, ("file_path", "old_string", "new_string", "replace_all")),
    ("EnterWorktree", 3797, ("name", "path")),
    ("ExitWorktree", 2546, ("action", "discard_changes")),
    ("NotebookEdit", 1679, ("notebook_path", "cell_id", "new_source", "cell_type")),
    ("Read", 1687, ("file_path", "offset", "limit", "pages")),
    ("ReportFindings", 1923, ("level", "findings")),
    ("ScheduleWakeup", 3797, ("delaySeconds", "reason", "prompt")),
    ("SendMessage", 1206, ("to", "summary", "message")),
    ("Skill", 2135, ("skill", "args")),
    ("TaskCreate", 2855, ("subject", "description", "activeForm", "metadata")),
    ("TaskGet", 1036, ("taskId",)),
    ("TaskList", 1201, ()),
    ("TaskOutput", 1599, ("task_id", "block", "timeout")),
    ("TaskStop", 558, ("task_id", "shell_id")),
    ("TaskUpdate", 3598, ("taskId", "subject", "description", "status")),
    ("WebFetch", 776, ("url", "prompt")),
    ("WebSearch", 879, ("query", "allowed_domains", "blocked_domains")),
    ("Workflow", 21341, ("script", "name", "description", "title")),
    ("Write", 663, ("file_path", "content")),
)
SUBAGENT_TOOLS = ("Bash", "Edit", "Read", "Skill", "WebFetch", "WebSearch", "Write")
MAIN_PROMPT_CHARS = 5_688
SUB_PROMPT_CHARS = 3_200
AGENT_TYPES_CHARS = 6_062
BILLING = "x-anthropic-billing-header: cc_version={version}.{tag}; cc_entrypoint=cli;"
IDENTITY = "You are Claude Code, Anthropic's official CLI for Claude."
MAIN_OPENING = "\nYou are an interactive agent that helps users with software engineering tasks."
SUB_OPENING = "You are an agent for Claude Code, Anthropic's official CLI for Claude."
TITLE_OPENING = (
    "Generate a concise, sentence-case title (3-7 words) that captures the main topic or "
    "goal of this coding session. Return JSON with a single title field."
)
BETAS = (
    "claude-code-20250219,interleaved-thinking-2025-05-14,context-management-2025-06-27,"
    "prompt-caching-scope-2026-01-05,mid-conversation-system-2026-04-07,effort-2025-11-24"
)
TITLE_SCHEMA = {
    "type": "object",
    "properties": {"title": {"type": "string"}},
    "required": ["title"],
    "additionalProperties": False,
}


def fill(n: int, seed: int, prefix: str = "", suffix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {"$fill": max(0, n), "seed": seed}
    if prefix:
        out["prefix"] = prefix
    if suffix:
        out["suffix"] = suffix
    return out


def reminder(n: int, seed: int, head: str) -> dict[str, Any]:
    return {
        "type": "text",
        "text": fill(n, seed, f"<system-reminder>\n{head}\n", "\n</system-reminder>"),
    }


def tool_defs(names: tuple[str, ...] | None = None, seed: int = 7) -> list[dict[str, Any]]:
    """Tool definitions with Claude Code's names and JSON sizes (descriptions are filler)."""
    out = []
    for i, (name, size, props) in enumerate(TOOLS):
        if names is not None and name not in names:
            continue
        schema = {
            "type": "object",
            "properties": {p: {"type": "string", "description": f"The {p}."} for p in props},
            "required": list(props[:1]),
            "additionalProperties": False,
        }
        bare = {"name": name, "description": "", "input_schema": schema}
        overhead = len(json.dumps(bare))
        out.append(
            {
                "name": name,
                "description": fill(size - overhead, seed * 100 + i),
                "input_schema": schema,
            }
        )
    return out


def system_blocks(tag: str, opening: str, chars: int, seed: int) -> list[dict[str, Any]]:
    return [
        {"type": "text", "text": BILLING.format(version=VERSION, tag=tag)},
        {"type": "text", "text": IDENTITY, "cache_control": {"type": "ephemeral"}},
        {
            "type": "text",
            "text": fill(chars - len(opening), seed, opening),
            "cache_control": {"type": "ephemeral"},
        },
    ]


def headers(session_id: str) -> dict[str, str]:
    return {
        "user-agent": f"claude-cli/{VERSION} (external, cli)",
        "x-claude-code-session-id": session_id,
        "anthropic-beta": BETAS,
        "anthropic-version": "2023-06-01",
    }


def params(session_id: str, *, model: str = "auto") -> dict[str, Any]:
    user_id = json.dumps(
        {"device_id": "d" * 64, "account_uuid": "", "session_id": session_id},
        separators=(",", ":"),
    )
    return {
        "model": model,
        "max_tokens": 64000,
        "thinking": {"type": "adaptive"},
        "context_management": {"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]},
        "output_config": {"effort": "high"},
        "metadata": {"user_id": user_id},
        "stream": True,
    }


def first_user_message(prompt: str, seed: int, *, claude_md: int = 653) -> dict[str, Any]:
    return {
        "role": "user",
        "content": [
            reminder(
                claude_md,
                seed,
                "As you answer the user's questions, you can use the "
                "following context:\n# claudeMd",
            ),
            reminder(180, seed + 1, "# currentDate\nToday's date is 2026-11-27."),
            {"type": "text", "text": prompt},
        ],
    }


def claude_code_body(
    prompt: str, *, session_id: str = "5f0c3a52-0000-4000-8000-000000000001", tag: str = "a1f"
) -> dict[str, Any]:
    """A realistic first main-loop request of Claude Code for ``prompt`` (expanded)."""
    messages = [
        first_user_message(prompt, 11),
        {"role": "system", "content": fill(AGENT_TYPES_CHARS, 12, "Available agent types:\n")},
    ]
    body = {
        **params(session_id),
        "system": system_blocks(tag, MAIN_OPENING, MAIN_PROMPT_CHARS, 3),
        "tools": tool_defs(),
        "messages": messages,
    }
    expanded: dict[str, Any] = expand(body)
    content = expanded["messages"][0]["content"]
    content[-1] = {**content[-1], "cache_control": {"type": "ephemeral"}}
    return expanded


def title_body(
    prompt: str, *, session_id: str = "5f0c3a52-0000-4000-8000-000000000001"
) -> dict[str, Any]:
    """Claude Code's session-title side request for a first prompt (expanded)."""
    p = params(session_id)
    p["max_tokens"] = 32000
    p["output_config"] = {
        "effort": "high",
        "format": {"type": "json_schema", "schema": TITLE_SCHEMA},
    }
    del p["context_management"]
    expanded: dict[str, Any] = expand(
        {
            **p,
            "system": [
                {"type": "text", "text": BILLING.format(version=VERSION, tag="a1f")},
                {"type": "text", "text": TITLE_OPENING},
            ],
            "messages": [{"role": "user", "content": f"<session>{prompt}</session>"}],
        }
    )
    return expanded


# -- prompts ----------------------------------------------------------------------------------
FILES = (
    "src/app/config.py",
    "src/app/server.py",
    "src/app/models.py",
    "lib/parser.ts",
    "cmd/api/main.go",
    "src/utils/dates.js",
    "web/components/Table.tsx",
    "src/db/queries.py",
    "internal/cache/lru.go",
    "src/payments/invoice.py",
    "app/controllers/users_controller.rb",
    "src/main/java/com/acme/OrderService.java",
    "scripts/deploy.sh",
    "src/cli.rs",
)
FUNCS = (
    "parse_config",
    "load_user",
    "retry_request",
    "format_date",
    "handleSubmit",
    "compute_total",
    "normalize_path",
    "fetch_orders",
    "render_invoice",
    "validate_email",
    "merge_settings",
    "build_query",
    "sendNotification",
    "resolve_dependencies",
)
RENAMES = (
    ("x", "count"),
    ("tmp", "buffer"),
    ("data", "payload"),
    ("cb", "on_done"),
    ("res", "response"),
    ("i", "index"),
    ("usr", "user"),
    ("cfg", "config"),
)
FLAGS = (
    ("verbose", "prints every request it sends"),
    ("dry-run", "shows the plan without applying it"),
    ("json", "prints machine-readable output"),
    ("limit", "caps the number of results"),
    ("since", "filters entries older than a date"),
)
SIMPLE = (
    "Rename variable {a} to {b} in {file}",
    "What does {func} in {file} do?",
    "Add a docstring to {func}",
    "Fix the typo 'recieve' in {file}",
    "Run the tests",
    "Commit these changes with a short message",
    "Convert to JSON: name={name}, age={age}",
    "What is the default port in {file}?",
    "Sort the imports in {file}",
    "Bump the version to 1.{age}.0 in pyproject.toml",
    "Remove the unused import of os from {file}",
    "Show me the last 5 commits",
    "Where is {func} defined?",
    "Change the log level in {file} from DEBUG to INFO",
    "Add requests to requirements.txt",
    "What is the capital of France?",
    "Delete the commented-out code at the bottom of {file}",
    "Format {file}",
    "List the files in src/",
    "Make the heading in README.md title case",
)
STANDARD = (
    "Fix the failing test test_{func} in tests/test_{mod}.py",
    "Add a --{flag} flag to the CLI that {effect}",
    "Write unit tests for {func} in {file}",
    "Refactor {func} in {file} to use a dataclass instead of a dict",
    "Why does {func} raise KeyError when the config file is empty? Fix it.",
    "Implement pagination for the /{mod} endpoint",
    "Add retry with exponential backoff to {func}",
    "The settings page renders twice on load, find out why and fix it",
    "Add input validation to the signup form and show inline errors",
    "Replace the print statements in {file} with proper logging",
    "Add type hints to {file} and make mypy pass",
    "Write a migration that adds a created_at column to the {mod} table",
    "Make {func} handle timezones correctly",
    "Add caching to {func} so repeated calls don't hit the database",
    "Update the README with instructions for running the project locally",
    "Port {file} from callbacks to async/await",
    "Add a health check endpoint that reports database connectivity",
    "The CSV export drops rows with unicode names; fix it and add a test",
)
COMPLEX = (
    "Design a plugin architecture so third parties can add new exporters without touching "
    "the core, then implement it",
    "There's a race condition in the connection pool under concurrent load; find it and fix "
    "it with a test that reproduces it",
    "Audit the authentication and session handling for security vulnerabilities and fix "
    "what you find",
    "Migrate the storage layer from SQLite to PostgreSQL with zero downtime and a rollback plan",
    "Profile the report generator and make it at least 5x faster without changing its output",
    "Refactor the monolithic {mod} module into separate services with clear interfaces, "
    "keeping all tests green",
    "Implement a distributed rate limiter shared by all API replicas using Redis, correct "
    "under clock skew",
    "Find the memory leak that makes the worker grow to 4 GB after a day and fix it",
    "Design and implement an event-sourced audit log for every change to orders, with replay",
    "Review the codebase for concurrency bugs and propose and implement a locking strategy",
    "Design a multi-tenant permission model with row-level security and migrate the existing "
    "data to it",
    "Our p99 latency doubled after the last release; investigate across services and fix the "
    "regression",
)
DELEGATIONS = (
    "Search the codebase for every caller of {func} and report how each uses its return "
    "value, with file paths and line numbers.",
    "Read the test suite and list which tests cover {file}; report gaps.",
    "Find every place where the database connection is opened and closed and report any "
    "path that can leak a connection.",
    "Investigate how configuration is loaded at startup and summarise the order of sources.",
)
LABELS = {"simple": "haiku", "standard": "sonnet", "complex": "opus"}
LOOP = {"simple": (1, 2.0, 6), "standard": (4, 6.0, 22), "complex": (8, 12.0, 40)}
TOOL_MIX = {
    "simple": (("Read", 40), ("Bash", 30), ("Edit", 25), ("TaskCreate", 5)),
    "standard": (("Read", 35), ("Bash", 30), ("Edit", 25), ("Write", 5), ("TaskUpdate", 5)),
    "complex": (
        ("Read", 30),
        ("Bash", 25),
        ("Edit", 20),
        ("Agent", 8),
        ("Write", 7),
        ("WebSearch", 3),
        ("WebFetch", 2),
        ("TaskUpdate", 5),
    ),
}
CHARACTERS = (  # (name, weight, turns range, label weights simple/standard/complex)
    ("quick", 35, (1, 3), (80, 20, 0)),
    ("typical", 45, (2, 7), (40, 50, 10)),
    ("deep", 20, (3, 10), (20, 50, 30)),
)


def _lognormal(rng: random.Random, median: float, sigma: float, lo: float, hi: float) -> float:
    return min(hi, max(lo, median * math.exp(rng.gauss(0, sigma))))


def prompt_for(rng: random.Random, difficulty: str) -> str:
    pool = {"simple": SIMPLE, "standard": STANDARD, "complex": COMPLEX}[difficulty]
    a, b = rng.choice(RENAMES)
    flag, effect = rng.choice(FLAGS)
    return rng.choice(pool).format(
        a=a,
        b=b,
        file=rng.choice(FILES),
        func=rng.choice(FUNCS),
        flag=flag,
        effect=effect,
        mod=rng.choice(("users", "orders", "billing", "search", "auth")),
        name=rng.choice(("Ann", "Bo", "Chen", "Dara")),
        age=rng.randint(18, 90),
    )


# -- the generator ----------------------------------------------------------------------------
@dataclass
class _Thread:
    name: str
    messages: list[dict[str, Any]] = field(default_factory=list)
    sent: int = 0  # messages the previous request had
    pending: list[dict[str, Any]] = field(default_factory=list)  # to append next request


@dataclass
class _Session:
    rng: random.Random
    label: str
    session_id: str
    tag: str
    t: float
    lines: list[dict[str, Any]] = field(default_factory=list)
    seed: int = 0
    subagents: int = 0

    def next_seed(self) -> int:
        self.seed += 1
        return self.seed

    def emit(
        self,
        thread: _Thread,
        *,
        system: list[dict[str, Any]],
        envelope: str | None,
        p: dict[str, Any],
        output_tokens: int,
        thinking_tokens: int,
        stop_reason: str,
        label: str | None,
    ) -> None:
        thread.messages.extend(thread.pending)
        line: dict[str, Any] = {
            "type": "request",
            "session": self.label,
            "t": round(self.t, 3),
            "thread": thread.name,
            "system": system,
            "params": p,
            "keep": thread.sent,
            "append": thread.messages[thread.sent :],
            "mark_last": 1,
            "headers": headers(self.session_id),
            "response": {
                "output_tokens": output_tokens,
                "thinking_tokens": thinking_tokens,
                "stop_reason": stop_reason,
            },
        }
        if envelope is not None:
            line["envelope"] = envelope
        if label is not None:
            line["label"] = label
        self.lines.append(line)
        thread.sent = len(thread.messages)
        thread.pending = []


def _chars_tokens(chars: int) -> int:
    return max(1, chars // 4)


def _assistant_step(
    s: _Session, tools: tuple[tuple[str, int], ...], final: bool, answer_chars: int
) -> tuple[list[dict[str, Any]], int, int, list[str]]:
    """The assistant's content for one reply: (blocks, output tokens, thinking, tools used)."""
    rng = s.rng
    blocks: list[dict[str, Any]] = []
    thinking = 0
    if rng.random() < 0.6:
        chars = int(_lognormal(rng, 600, 0.8, 80, 6000))
        thinking = _chars_tokens(chars)
        blocks.append(
            {
                "type": "thinking",
                "thinking": fill(chars, s.next_seed()),
                "signature": fill(320, s.next_seed(), "Eq"),
            }
        )
    if final:
        blocks.append({"type": "text", "text": fill(answer_chars, s.next_seed())})
        return blocks, thinking + _chars_tokens(answer_chars), thinking, []
    text_tokens = 0
    if rng.random() < 0.5:
        chars = rng.randint(40, 400)
        text_tokens = _chars_tokens(chars)
        blocks.append({"type": "text", "text": fill(chars, s.next_seed())})
    used = []
    for _ in range(2 if rng.random() < 0.15 else 1):
        name = rng.choices([n for n, _ in tools], weights=[w for _, w in tools])[0]
        used.append(name)
        size = {"Edit": rng.randint(200, 1600), "Write": rng.randint(500, 6000)}.get(name, 120)
        blocks.append(
            {
                "type": "tool_use",
                "id": f"toolu_{s.label}_{s.next_seed():05d}",
                "name": name,
                "input": {
                    "file_path": f"/home/dev/project/{rng.choice(FILES)}",
                    "payload": fill(size, s.next_seed()),
                },
            }
        )
        text_tokens += _chars_tokens(size + 60)
    return blocks, thinking + text_tokens, thinking, used


RESULT_SIZES = {  # median chars, sigma, cap
    "Read": (7000, 0.9, 60000),
    "Bash": (800, 1.2, 30000),
    "Edit": (220, 0.3, 600),
    "Write": (120, 0.2, 300),
    "TaskCreate": (160, 0.2, 400),
    "TaskUpdate": (160, 0.2, 400),
    "WebFetch": (5000, 0.8, 40000),
    "WebSearch": (3000, 0.5, 12000),
}


def _tool_results(
    s: _Session, used: list[str], uses: list[dict[str, Any]], streak: tuple[int, bool]
) -> tuple[list[dict[str, Any]], tuple[int, bool], float]:
    """Tool results for the assistant's tool_use blocks: (blocks, streak, seconds).

    ``streak``: (failures in a row, whether the last one was the model's own mistake)."""
    rng = s.rng
    results: list[dict[str, Any]] = []
    seconds = 0.0
    failures, mistake = streak
    for name, use in zip(used, uses, strict=True):
        failing = rng.random() < (0.35 if failures else 0.07)
        if failing:
            mistake = rng.random() < (0.5 if mistake else 0.2)
            failures += 1
        else:
            failures, mistake = 0, False
        if name == "Agent":
            chars, took = rng.randint(1500, 4000), 0.0  # the sub-agent's time is added apart
        else:
            median, sigma, cap = RESULT_SIZES.get(name, (300, 0.5, 2000))
            chars = 200 if failing else int(_lognormal(rng, median, sigma, 40, cap))
            took = _lognormal(rng, 3.0, 1.2, 0.2, 180.0) if name == "Bash" else 0.3
        seconds += took
        if failing:
            head = (
                "<tool_use_error>String to replace not found in file.\n"
                if mistake
                else ("Exit code 1\n")
            )
            content: Any = fill(chars, s.next_seed(), head, "</tool_use_error>" if mistake else "")
        else:
            content = fill(chars, s.next_seed())
        block: dict[str, Any] = {
            "type": "tool_result",
            "tool_use_id": use["id"],
            "content": content,
        }
        if failing:
            block["is_error"] = True
        results.append(block)
    return results, (failures, mistake), seconds


def _subagent(s: _Session, difficulty: str) -> None:
    """A sub-agent's own conversation (same session id, its own thread and cache)."""
    rng = s.rng
    s.subagents += 1
    thread = _Thread(f"sub-{s.subagents}")
    system = system_blocks(s.tag, SUB_OPENING, SUB_PROMPT_CHARS, 41)
    delegation = rng.choice(DELEGATIONS).format(func=rng.choice(FUNCS), file=rng.choice(FILES))
    thread.pending = [{"role": "user", "content": [{"type": "text", "text": delegation}]}]
    steps = rng.randint(3, 12)
    tools = (("Read", 60), ("Bash", 40))
    streak = (0, False)
    for step in range(steps):
        final = step == steps - 1
        blocks, out, thinking, used = _assistant_step(s, tools, final, rng.randint(800, 3000))
        s.emit(
            thread,
            system=system,
            envelope="cc-sub",
            p=params(s.session_id),
            output_tokens=out,
            thinking_tokens=thinking,
            stop_reason="end_turn" if final else "tool_use",
            label=LABELS[difficulty],
        )
        s.t += 2.0 + out / 60
        thread.pending.append({"role": "assistant", "content": blocks})
        if not final:
            uses = [b for b in blocks if b["type"] == "tool_use"]
            results, streak, took = _tool_results(s, used, uses, streak)
            s.t += took
            thread.pending.append({"role": "user", "content": results})


def generate_session(index: int, rng: random.Random) -> list[dict[str, Any]]:
    character = rng.choices(CHARACTERS, weights=[c[1] for c in CHARACTERS])[0]
    _, _, (lo, hi), label_weights = character
    session_id = f"{rng.getrandbits(32):08x}-{index:04x}-4000-8000-{rng.getrandbits(48):012x}"
    s = _Session(
        rng=rng,
        label=f"cc-{index:04d}-{character[0]}",
        session_id=session_id,
        tag=f"{rng.getrandbits(12):03x}",
        t=index * 3600.0 * 6,
        seed=index * 1_000_000,
    )
    main = _Thread("main")
    system = system_blocks(s.tag, MAIN_OPENING, MAIN_PROMPT_CHARS, 5)
    turns = rng.randint(lo, hi)
    streak = (0, False)
    for turn in range(turns):
        difficulty = rng.choices(("simple", "standard", "complex"), weights=label_weights)[0]
        label = LABELS[difficulty]
        prompt = prompt_for(rng, difficulty)
        if turn == 0:
            main.pending.append(
                first_user_message(prompt, s.next_seed(), claude_md=rng.randint(300, 4000))
            )
            main.pending.append(
                {
                    "role": "system",
                    "content": fill(
                        AGENT_TYPES_CHARS,
                        s.next_seed(),
                        "Available agent types for the Agent tool:\n",
                    ),
                }
            )
        else:
            content: list[dict[str, Any]] = []
            if rng.random() < 0.3:
                content.append(reminder(rng.randint(150, 900), s.next_seed(), "Task list"))
            content.append({"type": "text", "text": prompt})
            main.pending.append({"role": "user", "content": content})
        first, mean, cap = LOOP[difficulty]
        steps = min(cap, first + int(rng.expovariate(1 / max(mean - first, 0.5))))
        for step in range(steps):
            final = step == steps - 1
            answer = int(_lognormal(rng, 900, 0.7, 100, 8000))
            blocks, out, thinking, used = _assistant_step(s, TOOL_MIX[difficulty], final, answer)
            stop = "end_turn" if final else "tool_use"
            truncated = not final and rng.random() < 0.003
            if truncated:  # a runaway reply: 48k tokens of thinking, 16k of text
                blocks = [
                    {
                        "type": "thinking",
                        "thinking": fill(48000 * 4, s.next_seed()),
                        "signature": fill(320, s.next_seed(), "Eq"),
                    },
                    {"type": "text", "text": fill(16000 * 4, s.next_seed())},
                ]
                out, thinking, stop, used = 64000, 48000, "max_tokens", []
            s.emit(
                main,
                system=system,
                envelope="cc-main",
                p=params(s.session_id),
                output_tokens=out,
                thinking_tokens=thinking,
                stop_reason=stop,
                label=label,
            )
            s.t += 2.0 + out / 60
            if turn == 0 and step == 0:
                _title(s, prompt)
            main.pending.append({"role": "assistant", "content": blocks})
            if final:
                break
            if truncated:
                main.pending.append(
                    {
                        "role": "user",
                        "content": [
                            reminder(60, s.next_seed(), "Output token limit hit. Resume directly.")
                        ],
                    }
                )
                continue
            uses = [b for b in blocks if b["type"] == "tool_use"]
            if "Agent" in used:
                _subagent(s, difficulty)
            results, streak, took = _tool_results(s, used, uses, streak)
            s.t += took
            if rng.random() < 0.1:
                results.append(reminder(rng.randint(100, 600), s.next_seed(), "File modified"))
            main.pending.append({"role": "user", "content": results})
        s.t += _lognormal(rng, 90.0, 1.4, 5.0, 4 * 3600.0)  # the human reads and types
    return s.lines


def _title(s: _Session, prompt: str) -> None:
    p = params(s.session_id)
    p["max_tokens"] = 32000
    p["output_config"] = {
        "effort": "high",
        "format": {"type": "json_schema", "schema": TITLE_SCHEMA},
    }
    del p["context_management"]
    line = {
        "type": "request",
        "session": s.label,
        "t": round(s.t - 1.0, 3),
        "thread": "title",
        "system": [
            {"type": "text", "text": BILLING.format(version=VERSION, tag=s.tag)},
            {"type": "text", "text": TITLE_OPENING},
        ],
        "params": p,
        "keep": 0,
        "append": [{"role": "user", "content": f"<session>{prompt}</session>"}],
        "headers": headers(s.session_id),
        "response": {"output_tokens": 60, "thinking_tokens": 40, "stop_reason": "end_turn"},
    }
    s.lines.append(line)


def generate(sessions: int = SESSIONS, seed: int = SEED) -> bytes:
    rng = random.Random(seed)
    lines: list[dict[str, Any]] = [
        {"type": "envelope", "id": "cc-main", "tools": tool_defs()},
        {"type": "envelope", "id": "cc-sub", "tools": tool_defs(SUBAGENT_TOOLS)},
    ]
    for index in range(sessions):
        lines.extend(generate_session(index, rng))
    return "".join(json.dumps(line, separators=(",", ":")) + "\n" for line in lines).encode()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="compare with the committed file")
    parser.add_argument("--out", type=Path, default=CORPUS)
    args = parser.parse_args(argv)
    data = generate()
    if args.check:
        current = gzip.decompress(args.out.read_bytes())
        if current != data:
            print(f"{args.out} differs from what the generator writes", file=sys.stderr)
            return 1
        print(f"{args.out} is up to date")
        return 0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(gzip.compress(data, compresslevel=9, mtime=0))
    print(f"wrote {args.out} ({len(data)} bytes uncompressed)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

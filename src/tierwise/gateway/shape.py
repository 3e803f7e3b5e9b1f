"""What routing reads from a Messages request: the task, apart from the envelope it came in.

One pass over a request body (:func:`analyse`) gives two views of it:

* **The task** (:attr:`RequestShape.classify_input`), which is what the classifier scores: the
  user's own words in the current turn, without the blocks a client injects into user turns
  (``<system-reminder>`` and the like). The system prompt is included, minus a recognised
  agent's own prompt (see :data:`AGENTS`). The shape features describe the task, not the
  envelope:

  - ``turns``: conversational turns. Tool-loop plumbing (assistant ``tool_use`` messages and
    user messages that carry only ``tool_result`` blocks) is not counted, and neither are
    ``role: "system"`` messages.
  - ``tools``: the tools the caller defined. For a recognised agent (Claude Code), its tool set
    is part of the envelope: the agent sends the same tools with every request whatever the
    task, so their number says nothing about the task, and ``tools`` is 0.
  - ``context_tokens``: the estimated input minus the recognised envelope (the agent's system
    prompt, its tool definitions, injected blocks and ``role: "system"`` messages).

  The same words therefore give the same :class:`~tierwise.types.ClassifyInput` text whether
  they are sent bare or inside Claude Code's envelope.

  A **follow-up** carries no task of its own ("yes", "go ahead", "try again", "option 2":
  :func:`is_follow_up`). Its task is the user's previous one, so the classifier reads the two
  together. Alone, "go ahead" after a design discussion would read as a one-word task for the
  cheapest tier.

* **The envelope facts** (:class:`RequestShape`): the whole input's estimated size (used for
  context-window checks and budget holds), tool counts, cache breakpoints with prefix
  fingerprints, whether the request starts a turn or continues one, recent tool errors,
  structured output. :meth:`RequestShape.record` holds these facts *without any text*. It is
  what the ledger stores per request and what ``tierwise replay`` reads back.

Token counts are estimates (about 4 characters per token, images ~1,600 tokens). Nothing in
this module raises on an odd body shape; validation lives elsewhere.

Turn kinds (:attr:`RequestShape.kind`):

``turn``
    The newest user message carries the user's own text (after injected blocks are removed),
    possibly next to ``tool_result`` blocks (the user typed while a tool loop was running).
    This is where a human decides something, so this request is classified.
``continuation``
    The newest user message carries only ``tool_result`` blocks (and injected text), or only
    injected text in an ongoing conversation (a client's own "continue" note), or the
    conversation ends with the assistant's paused turn (``pause_turn``: an assistant message
    holding server-tool or thinking blocks). The tier already chosen for the turn is kept.
    A recognised agent's own texts in a user turn count as its, not the user's: Claude
    Code's instruction to summarise the conversation when it compacts it
    (:attr:`RequestShape.client_turn` ``"compact"``), and the summary and "please continue"
    the compacted conversation starts from (``"resume"``). The compacted conversation is a
    new thread, known by that summary.

Prefix fingerprints, for the prompt-cache simulation: blocks are counted in the API's prefix
order (tools → system → messages; the tool list is one block unless a breakpoint sits inside
it). The fingerprint of the prefix up to block *i* is a 64-bit digest (CRC-32 + Adler-32,
stable across processes, as state is shared through Redis) of *i*, the estimated tokens up to
*i*, and block *i*'s key: its type, its length, its first and last 64 characters, and ids and
signatures where present. Session state keeps a separate cache simulation per conversation
thread, and a thread only grows by appending, so this tells its prefixes apart. An edit earlier
in the conversation changes the size at every later block. Only the boundaries a cache hit
can be found at (each breakpoint and the ``LOOKBACK_BLOCKS`` before it) are fingerprinted, so
a request costs a few microseconds per block plus a constant, not a hash of its whole body.
"""

from __future__ import annotations

import hashlib
import re
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson

from tierwise.types import ClassifyInput

_IMAGE_TOKENS = 1_600  # a large image is about 1,600 tokens; smaller ones cost less
_ATTACHMENTS = frozenset({"image", "document"})
LOOKBACK_BLOCKS = 20  # the API looks for cache hits up to ~20 blocks before a breakpoint
DEFAULT_TTL_S = 300
_TTLS = {"5m": 300, "1h": 3600}

ClientTurn = Literal["compact", "resume"]

# A follow-up: user words that carry no task of their own, only assent, a choice or "go on"
# ("yes", "go ahead", "try again", "option 2", "sounds good, implement it"). Its task is the
# user's previous one, which the classifier reads with it (:func:`is_follow_up`).
_FOLLOW_UP_GROUPS = (
    # assent, thanks, refusal
    "yes yeah yep yup ya sure ok okay k kk fine great good perfect nice cool awesome excellent "
    "thanks thank thx ty please pls plz lgtm approved approve agreed agree correct right "
    "exactly absolutely definitely sounds looks seems alright all of course no nope not don't "
    "dont stop wait hold",
    # go on, again, with what was proposed
    "go ahead continue proceed carry on keep going next resume finish start begin do it that "
    "this them those these so then now again try retry redo once more implement apply make fix "
    "the plan changes change use same way approach recommended recommendation suggested "
    "proposed said other instead alternative",
    # a choice among what was offered
    "option choice one first second third last both either a b c 1 2 3 4 5",
    # the words around them
    "and with as you your let's lets let us me i we want would like to is are was be just",
)
FOLLOW_UP_WORDS = frozenset(w for group in _FOLLOW_UP_GROUPS for w in group.split())
FOLLOW_UP_MAX_WORDS = 12
_WORD = re.compile(r"[a-z0-9']+")


def is_follow_up(words: str) -> bool:
    """Whether ``words`` (a user's turn) carry no task of their own: at most
    :data:`FOLLOW_UP_MAX_WORDS` words, all of them :data:`FOLLOW_UP_WORDS`."""
    if len(words) > 120:
        return False
    found = _WORD.findall(words.lower().replace("\u2019", "'"))
    return 0 < len(found) <= FOLLOW_UP_MAX_WORDS and all(w in FOLLOW_UP_WORDS for w in found)


def _client_turn(value: Any) -> ClientTurn | None:
    return "compact" if value == "compact" else "resume" if value == "resume" else None


# Blocks a client injects into user turns; never the user's own words. Claude Code's: its
# reminders; a slash command's header (the command's expanded prompt that follows it is the
# instruction, and stays); local command output; "!" bash-mode input and output; a
# UserPromptSubmit hook's output; what an IDE extension adds about the open file.
INJECTED_TAGS = (
    "system-reminder",
    "task-notification",  # Claude Code: a background task (a sub-agent) finished
    "local-command-caveat",
    "local-command-stdout",
    "local-command-stderr",
    "command-message",
    "command-name",
    "bash-input",
    "bash-stdout",
    "bash-stderr",
    "user-prompt-submit-hook",
    "ide_opened_file",
    "ide_selection",
)
_INJECTED = re.compile(
    r"<(" + "|".join(INJECTED_TAGS) + r")>.*?(?:</\1>|\Z)",
    re.DOTALL,
)
_INTERRUPTED = re.compile(r"\[Request interrupted by user(?: for tool use)?\]")
# A slash command's arguments are the user's words; the tag around them is not.
_COMMAND_ARGS = re.compile(r"<command-args>(.*?)</command-args>", re.DOTALL)
# Claude Code's caveat before local command output, sent bare by its earlier versions.
_CAVEAT = "Caveat: The messages below were generated by the user while running local commands."
_CAVEAT_TEXT = re.compile(re.escape(_CAVEAT) + r"[^\n]*")
# Data wrapped in a tag (e.g. Claude Code's <session>…</session> around the first prompt of a
# title request) is material the instruction works on, not the instruction.
_WRAPPED = re.compile(r"<([A-Za-z][\w-]{0,40})>.{200,}?</\1>", re.DOTALL)


# An agent's main prompt is kilobytes long; a caller's own short system text after the
# agent's identity line (Claude Code's --system-prompt) stays the caller's.
AGENT_PROMPT_MIN_CHARS = 1_500
MAX_IDENTITY_CHARS = 200


@dataclass(frozen=True, slots=True)
class Agent:
    """A client whose envelope tierwise recognises.

    ``system_prefixes``: system blocks starting with one of these are the agent's own prompt
    (leading whitespace ignored). ``identities``: the agent's one-line identity blocks; the
    block right after one is the agent's main prompt too when it is at least
    ``AGENT_PROMPT_MIN_CHARS`` long, whatever its opening (each version rewrites it).
    ``user_agents`` / ``headers`` / ``betas``: request headers that identify the agent. The
    agent is recognised by its system prompt, else by those headers (then only system blocks
    with a known opening count as its prompt).
    """

    name: str
    system_prefixes: tuple[str, ...]
    identities: tuple[str, ...] = ()
    user_agents: tuple[str, ...] = ()
    headers: tuple[str, ...] = ()
    betas: tuple[str, ...] = ()
    compact_prompts: tuple[str, ...] = ()
    resume_prompts: tuple[str, ...] = ()

    def client_text(self, text: str) -> ClientTurn | None:
        """Whether ``text`` (injected blocks removed) is the agent's own instruction to
        summarise the conversation (``"compact"``) or its own first message after it did
        (``"resume"``), not the user's words."""
        if text.startswith(self.compact_prompts):
            return "compact"
        if text.startswith(self.resume_prompts):
            return "resume"
        return None


AGENTS: tuple[Agent, ...] = (
    Agent(
        name="claude-code",
        system_prefixes=(
            "x-anthropic-billing-header:",
            "You are Claude Code, Anthropic's official CLI for Claude",
            "You are a Claude agent, built on Anthropic's Claude Agent SDK",
            "You are an interactive agent that helps users with software engineering tasks",
            "You are an agent working with the user toward their goals",  # 2.1.3xx
            "You are an interactive CLI tool that helps users",
            "You are an agent for Claude Code",
            # its compaction requests' own system prompt, in versions before 2.1
            "You are a helpful AI assistant tasked with summarizing conversations",
        ),
        identities=(
            "You are Claude Code, Anthropic's official CLI for Claude",
            "You are a Claude agent, built on Anthropic's Claude Agent SDK",
        ),
        user_agents=("claude-cli/",),
        headers=("x-claude-code-session-id",),
        betas=("claude-code-20250219",),
        # Compaction (/compact, or automatic near the context limit): the whole conversation
        # plus an instruction to summarise it, with a text-only guard in newer versions.
        compact_prompts=(
            "CRITICAL: Respond with TEXT ONLY. Do NOT call any tools.",
            "Your task is to create a detailed summary of the conversation so far",
        ),
        # The conversation that follows starts from the summary (and, when compaction was
        # automatic, the CLI's own "please continue").
        resume_prompts=(
            "This session is being continued from a previous conversation that ran out of context.",
            "Please continue the conversation from where we left it off without asking the "
            "user any further questions.",
        ),
    ),
)


@dataclass(frozen=True, slots=True)
class Breakpoint:
    """A ``cache_control`` marker: after block ``index`` (0-based, prefix order), at
    ``tokens`` cumulative input tokens, with its TTL and the prefix's fingerprint."""

    index: int
    tokens: int
    ttl_s: int
    fp: str


@dataclass(frozen=True, slots=True)
class CacheProfile:
    """What a prompt-cache simulation needs of a request, and nothing else.

    ``boundaries``: ``(index, tokens, fingerprint)`` of every block boundary where a cache
    hit can be found: each breakpoint, and each message end within the ``LOOKBACK_BLOCKS``
    boundaries before a breakpoint (where earlier requests' breakpoints were).
    """

    total_tokens: int
    blocks: int
    breakpoints: tuple[Breakpoint, ...]
    boundaries: tuple[tuple[int, int, str], ...]

    def scaled(self, factor: float) -> CacheProfile:
        """The same profile with token counts multiplied by ``factor`` (a calibration)."""
        if factor == 1.0:
            return self
        return CacheProfile(
            total_tokens=round(self.total_tokens * factor),
            blocks=self.blocks,
            breakpoints=tuple(
                Breakpoint(b.index, round(b.tokens * factor), b.ttl_s, b.fp)
                for b in self.breakpoints
            ),
            boundaries=tuple((i, round(t * factor), f) for i, t, f in self.boundaries),
        )

    def as_json(self) -> dict[str, Any]:
        return {
            "total": self.total_tokens,
            "blocks": self.blocks,
            "bp": [[b.index, b.tokens, b.ttl_s, b.fp] for b in self.breakpoints],
            "lb": [list(x) for x in self.boundaries],
        }

    @classmethod
    def from_json(cls, data: Any) -> CacheProfile:
        """The inverse of :meth:`as_json`; raises ValueError naming what is wrong."""
        if not isinstance(data, dict):
            raise ValueError("cache profile must be an object")
        try:
            bps = tuple(
                Breakpoint(int(i), int(t), int(ttl), str(fp)) for i, t, ttl, fp in data["bp"]
            )
            lbs = tuple((int(i), int(t), str(fp)) for i, t, fp in data["lb"])
            return cls(int(data["total"]), int(data["blocks"]), bps, lbs)
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"cache profile is malformed: {exc!r}") from exc


@dataclass(frozen=True, slots=True)
class OutputFormat:
    """A structured-output request (``output_config.format``), described without text."""

    kind: str  # "json_schema" | other format type
    properties: tuple[str, ...]  # top-level property names
    flat: bool  # every property is a scalar or an enum (no nested objects / arrays of them)
    enums: int  # properties restricted to an enum or booleans


@dataclass(frozen=True, slots=True)
class RequestShape:
    """The facts of one request. ``classify_input`` carries text; :meth:`record` never does."""

    kind: Literal["turn", "continuation"]
    agent: str | None
    classify_input: ClassifyInput = field(repr=False)
    input_tokens: int  # the whole input, estimated
    envelope_tokens: int  # the recognised envelope's part of it
    messages: int
    human_turns: int  # user messages carrying the user's own text
    turns: int  # conversational turns (tool-loop plumbing excluded)
    tools: int  # every tool definition sent
    agent_tools: int  # those that belong to a recognised agent's envelope
    attachments: int
    max_tokens: int
    stream: bool
    thinking: str | None  # the request's thinking type, if any
    effort: str | None
    forced_tool: bool  # tool_choice any/tool
    output_format: OutputFormat | None
    tool_errors: int  # tool uses the model got wrong, in a row, at the end (see _model_failure)
    last_thinking: bool  # the latest assistant message holds thinking blocks
    instruction_chars: int  # the user's own text + caller's system text, wrapped data excluded
    cache: CacheProfile
    stable_fp: str  # fingerprint of the stable prefix: system + tool names + first user turn
    thread_fp: str  # fingerprint of the conversation's start (first user turn + system head)
    # The newest user message is the agent's own: its instruction to summarise the
    # conversation ("compact"), or the first message after it did ("resume").
    client_turn: ClientTurn | None = None
    # The newest words are a follow-up with no earlier task in the conversation to read them
    # with (after a compaction, "continue" has only the summary before it).
    orphan_follow_up: bool = False
    # The conversation starts from the summary a compaction wrote (its first user text is the
    # agent's "resume" text), whichever message holds the user's next words: Claude Code
    # 2.1.3xx keeps the last messages before the compaction verbatim after the summary.
    from_summary: bool = False

    def record(self) -> dict[str, Any]:
        """The text-free facts, as JSON-ready values (the ledger's ``session_shape``)."""
        fmt = self.output_format
        return {
            "v": 1,
            "kind": self.kind,
            "agent": self.agent,
            "input_tokens": self.input_tokens,
            "envelope_tokens": self.envelope_tokens,
            "task_tokens": self.classify_input.context_tokens,
            "messages": self.messages,
            "human_turns": self.human_turns,
            "turns": self.turns,
            "tools": self.tools,
            "agent_tools": self.agent_tools,
            "attachments": self.attachments,
            "max_tokens": self.max_tokens,
            "stream": self.stream,
            "thinking": self.thinking,
            "effort": self.effort,
            "forced_tool": self.forced_tool,
            "format": None
            if fmt is None
            else {
                "kind": fmt.kind[:40],
                "props": [p[:40] for p in fmt.properties[:8]],
                "flat": fmt.flat,
                "enums": fmt.enums,
            },
            "tool_errors": self.tool_errors,
            "last_thinking": self.last_thinking,
            "instruction_chars": self.instruction_chars,
            "cache": self.cache.as_json(),
            "thread": self.thread_fp,
            "client_turn": self.client_turn,
            "orphan_follow_up": self.orphan_follow_up,
            "from_summary": self.from_summary,
        }

    @classmethod
    def from_record(cls, data: Any) -> RequestShape:
        """A shape read back from :meth:`record` (the ledger): no text, so its
        ``classify_input`` has an empty prompt. Raises ValueError naming what is wrong."""
        if not isinstance(data, dict) or data.get("v") != 1:
            raise ValueError("session shape must be an object with v = 1")
        try:
            fmt = data.get("format")
            task_tokens = int(data.get("task_tokens") or 0)
            return cls(
                kind="continuation" if data["kind"] == "continuation" else "turn",
                agent=data.get("agent"),
                classify_input=ClassifyInput(
                    prompt="",
                    turns=int(data["turns"]),
                    tools=0 if data.get("agent") else int(data["tools"]),
                    attachments=int(data.get("attachments", 0)),
                    context_tokens=task_tokens,
                    agent=data.get("agent"),
                ),
                input_tokens=int(data["input_tokens"]),
                envelope_tokens=int(data.get("envelope_tokens", 0)),
                messages=int(data.get("messages", 0)),
                human_turns=int(data.get("human_turns", 0)),
                turns=int(data["turns"]),
                tools=int(data["tools"]),
                agent_tools=int(data.get("agent_tools", 0)),
                attachments=int(data.get("attachments", 0)),
                max_tokens=int(data.get("max_tokens", 0)),
                stream=bool(data.get("stream")),
                thinking=data.get("thinking"),
                effort=data.get("effort"),
                forced_tool=bool(data.get("forced_tool")),
                output_format=None
                if not isinstance(fmt, dict)
                else OutputFormat(
                    kind=str(fmt.get("kind", "")),
                    properties=tuple(str(p) for p in fmt.get("props") or ()),
                    flat=bool(fmt.get("flat")),
                    enums=int(fmt.get("enums", 0)),
                ),
                tool_errors=int(data.get("tool_errors", 0)),
                last_thinking=bool(data.get("last_thinking")),
                instruction_chars=int(data.get("instruction_chars", 0)),
                cache=CacheProfile.from_json(data["cache"]),
                stable_fp=str(data.get("thread", "")),
                thread_fp=str(data.get("thread", "")),
                client_turn=_client_turn(data.get("client_turn")),
                orphan_follow_up=bool(data.get("orphan_follow_up")),
                from_summary=bool(data.get("from_summary")),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"session shape is malformed: {exc!r}") from exc


# -- text helpers ---------------------------------------------------------------------------
def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(
            b["text"] for b in content if isinstance(b, dict) and isinstance(b.get("text"), str)
        )
    return ""


def system_text(system: Any) -> str:
    return _text(system)


def strip_injected(text: str) -> str:
    """``text`` without injected blocks (``<system-reminder>…</system-reminder>`` and the
    like, an unterminated one up to the end), interruption markers and the local-command
    caveat, trimmed."""
    if "<" in text:
        text = _INJECTED.sub("", text)
        if "<command-args>" in text:
            text = _COMMAND_ARGS.sub(r"\1", text)
    if "[Request interrupted" in text:
        text = _INTERRUPTED.sub("", text)
    text = text.strip()
    if text.startswith(_CAVEAT):  # a message of its own (stripped of what came before)
        text = _CAVEAT_TEXT.sub("", text, count=1)
    return text.strip()


def own_text(content: Any) -> str:
    """The user's own words in one message's content (text blocks only, injected removed)."""
    return _words(content, None)[0]


def _words(content: Any, agent: Agent | None) -> tuple[str, ClientTurn | None, str]:
    """(the user's own words, the agent's own text it holds if any, and that text)."""
    if isinstance(content, str):
        texts = [content]
    elif isinstance(content, list):
        texts = [
            b["text"]
            for b in content
            if isinstance(b, dict) and b.get("type") == "text" and isinstance(b.get("text"), str)
        ]
    else:
        return "", None, ""
    own: list[str] = []
    client: ClientTurn | None = None
    said: list[str] = []
    for text in texts:
        stripped = strip_injected(text)
        if not stripped:
            continue
        kind = agent.client_text(stripped) if agent is not None else None
        if kind is None:
            own.append(stripped)
        else:
            client = "compact" if "compact" in (client, kind) else kind
            said.append(stripped)
    return "\n".join(own), client, "\n".join(said)


def _is_injected_block(text: str) -> bool:
    head = text.lstrip()[:40]
    return any(head.startswith(f"<{tag}>") for tag in INJECTED_TAGS)


# -- tokens ---------------------------------------------------------------------------------
def _document_tokens(block: dict[str, Any]) -> int:
    source = block.get("source")
    if not isinstance(source, dict):
        return 0
    data = source.get("data") or source.get("content") or ""
    if not isinstance(data, str):
        return _json_tokens(data)
    # base64 PDF: ~3/4 byte per char, and a PDF page (~3 kB) is ~1.5k tokens; text: 4 chars.
    return len(data) // 2 if source.get("type") == "base64" else len(data) // 4


def _str_tokens(value: Any) -> int:
    return len(value) // 4 if isinstance(value, str) else 0


def _result_tokens(block: dict[str, Any], depth: int) -> tuple[int, int]:
    inner = block.get("content")
    if not isinstance(inner, list):
        return len(str(inner or "")) // 4, 0
    pairs = [_block_tokens(b, depth + 1) for b in inner]
    return sum(t for t, _ in pairs), sum(a for _, a in pairs)


def _block_tokens(block: Any, depth: int = 0) -> tuple[int, int]:
    """(tokens, attachments) of one content block, roughly (nesting looked into 4 deep)."""
    if not isinstance(block, dict) or depth > 4:
        return 0, 0
    kind = block.get("type")
    if kind in _ATTACHMENTS:
        return (_IMAGE_TOKENS if kind == "image" else _document_tokens(block)), 1
    if kind == "tool_result":
        return _result_tokens(block, depth)
    if kind in ("text", "thinking"):
        return _str_tokens(block.get(kind)), 0
    return _json_tokens(block), 0


def _json_tokens(value: Any) -> int:
    """Tokens of a JSON value, ~4 characters each (0 for one nested deeper than orjson
    writes: ``Engine.body_for`` rejects such a request anyway)."""
    if not value:
        return 0
    try:
        return len(orjson.dumps(value)) // 4
    except orjson.JSONEncodeError:
        return 0


# -- fingerprints ---------------------------------------------------------------------------
def _digest(data: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=8).digest()


def _ends(text: str) -> bytes:
    if len(text) <= 128:
        return text.encode(errors="replace")
    return b"%d:" % len(text) + (text[:64] + "\x00" + text[-64:]).encode(errors="replace")


def _result_key(block: dict[str, Any], depth: int) -> bytes:
    inner = block.get("content")
    head = f"r{block.get('tool_use_id', '')}:{bool(block.get('is_error'))}:".encode()
    if isinstance(inner, list):
        return head + b"|".join(_block_key(b, depth + 1) for b in inner[:64])
    return head + _ends(str(inner or ""))


def _use_key(block: dict[str, Any], depth: int) -> bytes:
    name = f"u{block.get('id', '')}:{block.get('name', '')}".encode()
    return name + _ends(_dumps(block.get("input")))


def _thinking_key(block: dict[str, Any], depth: int) -> bytes:
    sig = block.get("signature")
    thought = block.get("thinking")
    return b"k" + _ends(sig if isinstance(sig, str) else "") + _ends(str(thought or ""))


def _text_key(block: dict[str, Any], depth: int) -> bytes:
    text = block.get("text")
    return b"t" + _ends(text if isinstance(text, str) else "")


def _attachment_key(block: dict[str, Any], depth: int) -> bytes:
    source = block.get("source")
    data = source.get("data") if isinstance(source, dict) else None
    return str(block.get("type")).encode() + _ends(
        data if isinstance(data, str) else _dumps(source)
    )


_KEYS: dict[str, Callable[[dict[str, Any], int], bytes]] = {
    "text": _text_key,
    "tool_result": _result_key,
    "tool_use": _use_key,
    "server_tool_use": _use_key,
    "thinking": _thinking_key,
    "redacted_thinking": lambda b, _: b"d" + _ends(str(b.get("data") or "")),
    "image": _attachment_key,
    "document": _attachment_key,
}


def _block_key(block: Any, depth: int = 0) -> bytes:
    """A cheap digest input for one content block (see the module docstring)."""
    if isinstance(block, str):  # a string content is one text block to the model and cache
        return b"t" + _ends(block)
    if not isinstance(block, dict) or depth > 4:
        return b"?"
    keyer = _KEYS.get(str(block.get("type", "")))
    return keyer(block, depth) if keyer else b"j" + _ends(_dumps(block))


def _dumps(value: Any) -> str:
    try:
        return orjson.dumps(value).decode()
    except (orjson.JSONEncodeError, TypeError):
        return ""


def _ttl(block: Any) -> int | None:
    """The TTL (seconds) of a block's ``cache_control``, or None when it has none."""
    if not isinstance(block, dict):
        return None
    control = block.get("cache_control")
    if not isinstance(control, dict):
        return None
    return _TTLS.get(str(control.get("ttl", "5m")), DEFAULT_TTL_S)


# -- the analysis ---------------------------------------------------------------------------
def _agent_for(system_blocks: list[str], headers: Any) -> Agent | None:
    """The agent whose own system prompt opens the request, else the one its headers name
    (then only system blocks with the agent's known openings are treated as its prompt)."""
    for agent in AGENTS:
        if any(b.lstrip().startswith(p) for b in system_blocks[:4] for p in agent.system_prefixes):
            return agent
    named = recognised_by_headers(headers)
    return next((a for a in AGENTS if a.name == named), None)


def _header(headers: Any, name: str) -> str:
    if headers is None:
        return ""
    try:
        value = headers.get(name)
    except AttributeError:
        return ""
    return value if isinstance(value, str) else ""


def recognised_by_headers(headers: Any) -> str | None:
    """The agent a request's headers name (user agent, session header, beta), if any."""
    if headers is None:
        return None
    ua = _header(headers, "user-agent")
    betas = _header(headers, "anthropic-beta")
    for agent in AGENTS:
        if any(ua.startswith(p) for p in agent.user_agents):
            return agent.name
        if any(_header(headers, h) for h in agent.headers):
            return agent.name
        if any(b in betas for b in agent.betas):
            return agent.name
    return None


def _output_format(body: dict[str, Any]) -> OutputFormat | None:
    config = body.get("output_config")
    fmt = config.get("format") if isinstance(config, dict) else None
    if not isinstance(fmt, dict):
        return None
    kind = str(fmt.get("type", ""))
    schema = fmt.get("schema")
    props = schema.get("properties") if isinstance(schema, dict) else None
    if not isinstance(props, dict):
        return OutputFormat(kind=kind, properties=(), flat=True, enums=0)
    flat, enums = True, 0
    for spec in props.values():
        if not isinstance(spec, dict):
            continue
        ptype = spec.get("type")
        if "enum" in spec or ptype == "boolean":
            enums += 1
        if ptype == "object" or (
            ptype == "array"
            and isinstance(spec.get("items"), dict)
            and spec["items"].get("type") in ("object", "array")
        ):
            flat = False
    return OutputFormat(
        kind=kind, properties=tuple(str(k) for k in props)[:64], flat=flat, enums=enums
    )


def _instruction_chars(text: str) -> int:
    if len(text) >= 200 and "<" in text:
        text = _WRAPPED.sub("", text)
    return len(text.strip())


class _Walk:
    """One pass over a request's blocks in prefix order (tools → system → messages)."""

    def __init__(self, agent: Agent | None) -> None:
        self.agent = agent
        self.tokens = 0
        self.index = -1
        self.keys: list[tuple[bytes, Any]] = []  # (tag, block): fingerprinted on demand
        self.cums: list[int] = []
        self.bps: list[tuple[int, int, int]] = []  # (index, tokens, ttl)
        self.envelope = 0
        self.attachments = 0
        self.turns = 0
        self.human_turns = 0
        self.first_own = ""
        self.first_key: str | None = None  # the thread's first user text (see message())
        self.last_own = ""  # the newest user words, with the task a follow-up refers to
        self.last_task = ""  # the newest user words that were not a follow-up
        self.orphan_follow_up = False  # the newest words are a follow-up with no task before
        self.last_client: ClientTurn | None = None
        self.first_client: ClientTurn | None = None  # the agent's own text in the first one
        self.last_words = ""  # the newest user message's own words (read once, here)
        self.kept_system: list[str] = []
        self.conversation: list[tuple[str, Any]] = []  # non-system messages, in order
        self.message_ends: list[int] = []  # index of each message's last block
        self.deferred: dict[str, int] = {}  # defer_loading tools: name → tokens

    def _step(self, tokens: int, tag: bytes, block: Any) -> None:
        self.index += 1
        self.tokens += tokens
        self.keys.append((tag, block))
        self.cums.append(self.tokens)
        if isinstance(block, dict) and "cache_control" in block:
            ttl = _ttl(block)
            if ttl is not None:
                self.bps.append((self.index, self.tokens, ttl))

    def fingerprint(self, i: int) -> str:
        """The prefix up to block ``i``: its position, its size and block ``i``'s key."""
        tag, block = self.keys[i]
        key = tag if tag.startswith(b"T") else tag + _block_key(block)
        data = b"%d:%d:" % (i, self.cums[i]) + key
        return f"{zlib.crc32(data):08x}{zlib.adler32(data):08x}"

    def tools(self, tools: list[Any], deferred: list[dict[str, Any]]) -> None:
        """Tool definitions: one block for the whole list (what is cached with them), unless
        a breakpoint sits on a tool before the last one. A ``defer_loading`` tool is not in
        the prompt until tool search loads it: then its definition counts where the
        ``tool_reference`` naming it is (see :meth:`references`), and the prefix is intact."""
        for tool in deferred:
            self.deferred[str(tool.get("name"))] = _json_tokens(tool)
        if not tools:
            return
        marked = [i for i, tool in enumerate(tools) if _ttl(tool) is not None]
        groups = [tools] if not marked or marked == [len(tools) - 1] else [[t] for t in tools]
        for group in groups:
            try:
                raw = orjson.dumps(group)
            except orjson.JSONEncodeError:
                raw = b""
            t = len(raw) // 4
            if self.agent is not None:
                self.envelope += t
            self._step(t, b"T%d:" % len(raw) + raw[:64] + b"\x00" + raw[-64:], group[-1])

    def references(self, block: dict[str, Any]) -> int:
        """Tokens of the deferred tools a tool result loads (its ``tool_reference`` blocks)."""
        inner = block.get("content")
        if not self.deferred or not isinstance(inner, list):
            return 0
        return sum(
            self.deferred.get(str(b.get("tool_name")), 0)
            for b in inner
            if isinstance(b, dict) and b.get("type") == "tool_reference"
        )

    def system(self, blocks: list[Any], texts: list[str | None]) -> None:
        agent = self.agent
        prefixes = agent.system_prefixes if agent is not None else ()
        after_identity = False
        for block, text in zip(blocks, texts, strict=True):
            t = len(text) // 4 if isinstance(text, str) else _json_tokens(block)
            if isinstance(text, str) and (
                any(text.lstrip().startswith(p) for p in prefixes)
                or (after_identity and len(text) >= AGENT_PROMPT_MIN_CHARS)
            ):
                self.envelope += t
            elif isinstance(text, str):
                stripped = strip_injected(text)
                if stripped:
                    self.kept_system.append(stripped)
                self.envelope += t - len(stripped) // 4
            self._step(t, b"S", block)
            after_identity = (
                agent is not None
                and isinstance(text, str)
                and len(text) <= MAX_IDENTITY_CHARS
                and text.lstrip().startswith(agent.identities)
            )

    def _content_block(self, block: Any, system_role: bool) -> tuple[int, str]:
        """(tokens, kind) of one message block; injected text counts as envelope."""
        if isinstance(block, str):
            t = len(block) // 4
            if system_role or (block[:1] in ("<", " ", "\n") and _is_injected_block(block)):
                self.envelope += t
            return t, "text"
        if not isinstance(block, dict):
            return 0, "?"
        kind = block.get("type")
        if kind == "text":
            text = block.get("text")
            if not isinstance(text, str):
                return 0, "text"
            t = len(text) // 4
            if system_role or (text[:1] in ("<", " ", "\n") and _is_injected_block(text)):
                self.envelope += t
            return t, "text"
        if kind == "tool_result":
            t, a = _result_tokens(block, 0)
            loaded = self.references(block)
            if loaded and self.agent is not None:
                self.envelope += loaded  # tool definitions, not the task
            t += loaded
        else:
            t, a = _block_tokens(block)
        self.attachments += a
        return t, str(kind)

    def message(self, message: dict[str, Any]) -> None:
        role = message.get("role")
        content = message.get("content")
        blocks = content if isinstance(content, list) else [content]
        kinds: set[str] = set()
        tag = str(role or "?").encode()[:1]
        system_role = role == "system"
        for block in blocks:
            t, kind = self._content_block(block, system_role)
            kinds.add(kind)
            self._step(t, tag, block)
        self.message_ends.append(self.index)
        self.tokens += 4  # per-message framing
        if system_role:
            return
        self.conversation.append((str(role), content))
        if role == "user":
            words, client, said = _words(content, self.agent) if "text" in kinds else ("", None, "")
            self.last_words, self.last_client = words, client
            if self.first_key is None and (words or said):
                # A thread is known by its first user text: the user's words, or the agent's
                # own (the summary a compacted conversation starts from).
                self.first_key = words or said
                self.first_client = client
            if words:
                self.human_turns += 1
                self.orphan_follow_up = False
                if is_follow_up(words):
                    # "go ahead", "yes", "try again": the task is the one before
                    self.last_own = f"{self.last_task}\n{words}" if self.last_task else words
                    self.orphan_follow_up = not self.last_task
                else:
                    self.last_own = self.last_task = words
                self.first_own = self.first_own or words
                self.turns += 1
            elif "tool_result" not in kinds:
                self.turns += 1  # an empty or attachment-only user turn
        elif role == "assistant" and "tool_use" not in kinds:
            self.turns += 1


def _system_blocks(system: Any) -> tuple[list[Any], list[str | None]]:
    if isinstance(system, str):
        blocks: list[Any] = [system] if system else []
    elif isinstance(system, list):
        blocks = system
    else:
        blocks = []
    texts = [
        b if isinstance(b, str) else (b.get("text") if isinstance(b, dict) else None)
        for b in blocks
    ]
    return blocks, [t if isinstance(t, str) else None for t in texts]


def analyse(body: dict[str, Any], headers: Any = None) -> RequestShape:
    """Both views of a Messages request body (never raises on odd shapes)."""
    messages_raw = body.get("messages")
    messages = messages_raw if isinstance(messages_raw, list) else []
    tools_raw = body.get("tools")
    tools = tools_raw if isinstance(tools_raw, list) else []
    system_blocks, system_texts = _system_blocks(body.get("system"))
    system_strs = [t for t in system_texts if t is not None]
    agent = _agent_for(system_strs, headers)

    walk = _Walk(agent)
    deferred = [t for t in tools if isinstance(t, dict) and t.get("defer_loading") is True]
    live = [t for t in tools if not any(t is d for d in deferred)] if deferred else tools
    walk.tools(live, deferred)
    walk.system(system_blocks, system_texts)
    for message in messages:
        if isinstance(message, dict):
            walk.message(message)

    kind, tool_errors, last_thinking = _turn_kind(walk, agent is not None)
    system_kept = "\n".join(walk.kept_system)
    total = walk.tokens
    classify = ClassifyInput(
        prompt=walk.last_own,
        system=system_kept,
        turns=max(walk.turns, 1),
        tools=0 if agent is not None else len(tools),
        attachments=walk.attachments,
        context_tokens=max(0, total - walk.envelope),
        agent=None if agent is None else agent.name,
    )
    latest = walk.conversation[-1] if walk.conversation else ("", None)
    own_latest = walk.last_words if latest[0] == "user" else ""
    first_key = (walk.first_key or "").encode(errors="replace")
    instruction = _instruction_chars(own_latest or walk.last_own) + len(system_kept)
    # the tools always in the prompt (a deferred one that tool search loads later does not
    # make the conversation another)
    tool_names = [str(t.get("name") or "") if isinstance(t, dict) else "" for t in live]
    stable = _digest(
        "\x00".join(system_strs).encode(errors="replace")
        + b"\x01"
        + "\x00".join(tool_names).encode(errors="replace")
        + b"\x01"
        + first_key
    ).hex()
    head = next((s for s in system_strs if not s.startswith("x-anthropic-billing-header")), "")
    thread = _digest(_ends(head) + b"\x01" + first_key).hex()
    return RequestShape(
        kind=kind,
        agent=agent.name if agent else None,
        classify_input=classify,
        input_tokens=total,
        envelope_tokens=min(walk.envelope, total),
        messages=len(messages),
        human_turns=walk.human_turns,
        turns=classify.turns,
        tools=len(tools),
        agent_tools=len(tools) if agent is not None else 0,
        attachments=walk.attachments,
        max_tokens=_positive_int(body.get("max_tokens")),
        stream=bool(body.get("stream")),
        thinking=_field(body.get("thinking"), "type"),
        effort=_field(body.get("output_config"), "effort"),
        forced_tool=_field(body.get("tool_choice"), "type") in ("any", "tool"),
        output_format=_output_format(body),
        tool_errors=tool_errors,
        last_thinking=last_thinking,
        instruction_chars=instruction,
        cache=_profile(walk),
        stable_fp=stable,
        thread_fp=thread,
        client_turn=walk.last_client if latest[0] == "user" else None,
        from_summary=walk.first_client == "resume",
        orphan_follow_up=walk.orphan_follow_up and latest[0] == "user",
    )


def _positive_int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def _field(obj: Any, name: str) -> str | None:
    value = obj.get(name) if isinstance(obj, dict) else None
    return str(value) if value else None


def _last_thinking(conversation: list[tuple[str, Any]]) -> bool:
    for role, content in reversed(conversation):
        if role == "assistant":
            return isinstance(content, list) and any(
                isinstance(b, dict) and b.get("type") in ("thinking", "redacted_thinking")
                for b in content
            )
    return False


TOOL_USE_ERROR = "<tool_use_error>"


def _model_failure(block: dict[str, Any], agent: bool) -> bool:
    """A failed tool result that says the model used the tool wrongly.

    Claude Code wraps those in ``<tool_use_error>`` (invalid input, an edit whose text is not
    in the file …). A command that ran and failed (a test run with exit code 1) is the
    environment answering, not the model failing, so for a recognised agent only the former
    count. For other clients every ``is_error`` result counts.
    """
    if not block.get("is_error"):
        return False
    if not agent:
        return True
    inner = block.get("content")
    if isinstance(inner, list):
        inner = " ".join(str(b.get("text") or "") for b in inner[:8] if isinstance(b, dict))
    return TOOL_USE_ERROR in str(inner or "")[:400]


def _tool_errors(conversation: list[tuple[str, Any]], agent: bool) -> int:
    """Tool results in a row, at the end of the current tool loop, where the model used a
    tool wrongly (:func:`_model_failure`)."""
    errors = 0
    for role, content in reversed(conversation):
        if role != "user" or not isinstance(content, list):
            continue
        if own_text(content):
            break
        failed = [
            _model_failure(b, agent)
            for b in content
            if isinstance(b, dict) and b.get("type") == "tool_result"
        ]
        trailing = len(failed) - next(
            (i + 1 for i in range(len(failed) - 1, -1, -1) if not failed[i]), 0
        )
        errors += trailing
        if trailing < len(failed):
            break
    return errors


def _turn_kind(walk: _Walk, agent: bool) -> tuple[Literal["turn", "continuation"], int, bool]:
    """(kind, consecutive failed tool uses at the end, latest assistant has thinking)."""
    conversation = walk.conversation
    return (
        _kind(conversation, walk.last_words, walk.last_client),
        _tool_errors(conversation, agent),
        _last_thinking(conversation),
    )


def _kind(
    conversation: list[tuple[str, Any]], words: str, client: ClientTurn | None
) -> Literal["turn", "continuation"]:
    """The newest user message (``words``, ``client``: its own words and the agent's own text,
    as the walk read them) starts a turn or continues one."""
    if not conversation:
        return "turn"
    role, content = conversation[-1]
    if role == "assistant":
        blocks = content if isinstance(content, list) else []
        if any(isinstance(b, dict) and b.get("type") != "text" for b in blocks):
            return "continuation"  # a paused turn (pause_turn) sent back to continue
        # A text-only assistant message is a prefill: the turn is the user's message before it.
        content = next((c for r, c in reversed(conversation[:-1]) if r == "user"), None)
        if content is None:
            return "turn"
    if words:
        return "turn"
    blocks = content if isinstance(content, list) else [content]
    # The agent's own compaction or resume text, or tool results: no human decided.
    if client is not None or any(
        isinstance(b, dict) and b.get("type") == "tool_result" for b in blocks
    ):
        return "continuation"
    # Only injected text (e.g. a "resume after max_tokens" reminder) inside an ongoing
    # conversation: the client speaks, not the user.
    injected = any(
        _is_injected_block(b if isinstance(b, str) else str(b.get("text") or ""))
        for b in blocks
        if isinstance(b, str) or (isinstance(b, dict) and b.get("type") == "text")
    )
    ongoing = any(r == "assistant" for r, _ in conversation[:-1])
    return "continuation" if injected and ongoing else "turn"


def _profile(walk: _Walk) -> CacheProfile:
    """Breakpoints, and the boundaries a cache hit can be found at: earlier requests wrote
    their entries at their own breakpoints, which are this request's breakpoints or the end
    of an earlier message, so only those inside a breakpoint's lookback window are kept."""
    candidates = {i for i, _, _ in walk.bps}
    candidates.update(walk.message_ends)
    seen = {
        j
        for i, _, _ in walk.bps
        for j in range(max(0, i - LOOKBACK_BLOCKS), i + 1)
        if j in candidates
    }
    fps = {i: walk.fingerprint(i) for i in seen}
    breakpoints = tuple(Breakpoint(i, t, ttl, fps[i]) for i, t, ttl in walk.bps)
    boundaries = tuple((i, walk.cums[i], fps[i]) for i in sorted(seen))
    return CacheProfile(walk.tokens, walk.index + 1, breakpoints, boundaries)


def conversation_input(body: dict[str, Any]) -> ClassifyInput:
    """The per-request view the gateway engine uses today: the task's text (envelope text
    stripped, see :func:`analyse`), with the *whole* input's size in ``context_tokens`` (the
    engine also uses it for context-window escalation and budget holds) and every tool counted.
    """
    shape = analyse(body)
    task = shape.classify_input
    return ClassifyInput(
        prompt=task.prompt,
        system=task.system,
        turns=shape.messages,
        tools=shape.tools,
        attachments=task.attachments,
        context_tokens=shape.input_tokens,
    )


def has_unthought_tool_use(body: dict[str, Any]) -> bool:
    """True when an assistant turn used a tool without a thinking block before it.

    Turning thinking on for such a conversation makes the API reject it, so tier thinking
    defaults are not added there.
    """
    for message in body.get("messages") or []:
        if not isinstance(message, dict) or message.get("role") != "assistant":
            continue
        content = message.get("content")
        if not isinstance(content, list):
            continue
        kinds = [b.get("type") for b in content if isinstance(b, dict)]
        if "tool_use" in kinds and not (kinds and kinds[0] in ("thinking", "redacted_thinking")):
            return True
    return False

"""The Messages API contract, per model, as the strict fake upstream enforces it.

Per-model capabilities come from tierwise's own catalogue (``src/tierwise/prices/anthropic.toml``),
the single source that tierwise's request adaptation also reads; the few models the fake serves
that the catalogue does not list (Fable, Mythos, Haiku/Sonnet 5.5) get capabilities from
``/work/shared/docs/anthropic-wire.md`` §1 item 11 below. The rules and their messages come from
that document (§1, §2, §5.1, §10) and from the API's own 400 messages as reported in public issue
threads; a message marked *invented* below is a rule whose exact wording we could not find.

:func:`rejection` answers "would the real API refuse this body, and with what message?" without a
server, so tests (and the hypothesis property test of :mod:`tierwise.adapt`) can ask it directly.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import math
from collections.abc import Collection, Mapping
from functools import cache
from typing import Any

from tierwise.pricing import ModelInfo, PriceCatalogue

API_VERSIONS = ("2023-06-01", "2026-10-21")
STRICT_VERSION = "2026-10-21"  # removes temperature/top_p/top_k, adds document/citation rules
EFFORT_LEVELS = ("low", "medium", "high", "xhigh", "max")
THINKING_TYPES = ("enabled", "adaptive", "disabled", "between_tools")
SAMPLING_PARAMS = ("temperature", "top_p", "top_k")
INTERLEAVED_BETA = "interleaved-thinking-2025-05-14"
MAX_CACHE_BREAKPOINTS = 4
CACHE_TTLS = ("5m", "1h")

# Top-level fields of MessageCreateParams (SDK 2.14, wire doc §2.2) plus the beta fields real
# clients send (Claude Code: context_management; MCP connector: mcp_servers).
MESSAGE_FIELDS = frozenset(
    {
        "model", "max_tokens", "messages", "system", "stop_sequences", "stream", "tools",
        "tool_choice", "metadata", "thinking", "output_config", "service_tier", "cache_control",
        "container", "diagnostics", "inference_geo", "speed", "context_management", "mcp_servers",
    }
)  # fmt: skip
COUNT_FIELDS = frozenset(
    {
        "model", "messages", "system", "tools", "tool_choice", "thinking", "output_config",
        "cache_control", "speed", "context_management", "mcp_servers",
    }
)  # fmt: skip
OUTPUT_CONFIG_FIELDS = frozenset({"effort", "format"})

# Documented 400 messages (wire doc §5.1).
PREFILL_MESSAGE = (
    "This model does not support assistant message prefill. "
    "The conversation must end with a user message."
)
ENABLED_THINKING_MESSAGE = (
    '"thinking.type.enabled" is not supported for this model. Use "thinking.type.adaptive" '
    'and "output_config.effort" to control thinking behavior.'
)
ADAPTIVE_THINKING_MESSAGE = "adaptive thinking is not supported on this model"
THINKING_MODIFIED_MESSAGE = (
    "`thinking` or `redacted_thinking` blocks in the latest assistant message cannot be "
    "modified. These blocks must remain as they were in the original response."
)
TOOL_CHOICE_MESSAGE = 'tool_choice: type "tool" and "any" are not supported for this model.'
# Reported verbatim in public issue threads (mastra-ai/mastra#7507, BerriAI/litellm#17129, ...).
FORCED_TOOL_THINKING_MESSAGE = "Thinking may not be enabled when tool_choice forces tool use."
NO_EFFORT_MESSAGE = "This model does not support the effort parameter."
EXCLUSIVE_SAMPLING_MESSAGE = (
    "`temperature` and `top_p` cannot both be specified for this model. Please use only one."
)
THINKING_TEMPERATURE_MESSAGE = (
    "`temperature` may only be set to 1 when thinking is enabled. Please consult our "
    "documentation at https://docs.claude.com/en/docs/build-with-claude/extended-thinking"
    "#important-considerations-when-using-extended-thinking"
)
INVALID_SIGNATURE_MESSAGE = "Invalid `signature` in `thinking` block"
THINKING_FIRST_MESSAGE = (
    "When `thinking` is enabled, a final `assistant` message must start with a thinking block "
    "(preceeding the lastmost set of `tool_use` and `tool_result` blocks). We recommend you "
    "include thinking blocks from previous turns. To avoid this requirement, disable `thinking`. "
    "Please consult our documentation at "
    "https://docs.claude.com/en/docs/build-with-claude/extended-thinking"
)
BUDGET_MESSAGE = (
    "`max_tokens` must be greater than `thinking.budget_tokens`. Please consult our "
    "documentation at https://docs.claude.com/en/docs/build-with-claude/"
    "extended-thinking#max-tokens-and-context-window-size"
)


class ApiError(Exception):
    """The API's answer to a request it refuses: status, error type and message."""

    def __init__(self, status: int, error_type: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.error_type = error_type
        self.message = message


def invalid(message: str) -> ApiError:
    return ApiError(400, "invalid_request_error", message)


# --- capabilities ------------------------------------------------------------------------------


@cache
def catalogue() -> PriceCatalogue:
    return PriceCatalogue.default()


def _extra(model: str, name: str, thinking: tuple[str, ...], *, prefill: bool = False) -> ModelInfo:
    """A model the fake serves that tierwise's catalogue does not list (no prices known)."""
    return ModelInfo(
        model=model,
        display_name=name,
        aliases=(),
        context_window=1_000_000,
        max_output_tokens=128_000,
        thinking_types=thinking,
        efforts=EFFORT_LEVELS,
        accepts_sampling=False,
        prices=(),
        accepts_prefill=prefill,
        min_cacheable_tokens=512,
        capabilities_source="wire doc §1 item 11 (fake only: not in tierwise's catalogue)",
    )


# Fable 5/5.1, Mythos 5/5.1 and Mythos Preview refuse "disabled" (wire doc §1 item 11); every
# 4.7+ model refuses "enabled". Fable/Mythos 5.1 also refuse a forced tool_choice (§2.2).
EXTRA_MODELS: dict[str, ModelInfo] = {
    info.model: info
    for info in (
        _extra("claude-fable-5-2", "Claude Fable 5.2", ("adaptive", "disabled")),
        _extra("claude-mythos-5-2", "Claude Mythos 5.2", ("adaptive", "disabled")),
        _extra("claude-haiku-5-5", "Claude Haiku 5.5", ("adaptive", "disabled")),
        _extra("claude-sonnet-5-5", "Claude Sonnet 5.5", ("adaptive", "disabled")),
        _extra("claude-fable-5-1", "Claude Fable 5.1", ("adaptive",)),
        _extra("claude-mythos-5-1", "Claude Mythos 5.1", ("adaptive",)),
        _extra("claude-fable-5", "Claude Fable 5", ("adaptive",)),
        _extra("claude-mythos-5", "Claude Mythos 5", ("adaptive",)),
        _extra("claude-mythos-preview", "Claude Mythos Preview", ("enabled", "adaptive")),
    )
}
NO_FORCED_TOOL_CHOICE = frozenset({"claude-fable-5-1", "claude-mythos-5-1"})


def capabilities(model: str) -> ModelInfo | None:
    """What the API accepts for ``model`` (by id or alias); None for a model it does not serve."""
    return catalogue().info(model) or EXTRA_MODELS.get(model)


def served_models() -> list[ModelInfo]:
    return [*catalogue().models(), *EXTRA_MODELS.values()]


# --- thinking signatures -----------------------------------------------------------------------

_SIGNING_KEY = b"tierwise-fake-upstream"


def sign_thinking(thinking: str, model: str) -> str:
    """The signature the fake puts on a thinking block: bound to the model that wrote it and to
    the text it returned (real signatures are opaque; these carry the model so the fake can tell
    a block from another model, as the real API does)."""
    info = capabilities(model)
    owner = info.model if info is not None else model
    mac = hmac.new(_SIGNING_KEY, f"{owner}\x00{thinking}".encode(), hashlib.sha256).digest()
    return base64.b64encode(owner.encode() + b"\x00" + mac).decode()


def signature_model(signature: str) -> str | None:
    """The model a fake signature was made by, or None when it is not one of the fake's."""
    try:
        raw = base64.b64decode(signature.encode(), validate=True)
    except ValueError:
        return None
    owner, sep, _mac = raw.partition(b"\x00")
    return owner.decode(errors="replace") if sep else None


# --- token estimates ---------------------------------------------------------------------------


def estimate_tokens(text: str) -> int:
    """The fake's tokenizer: ceil(characters / 4)."""
    return math.ceil(len(text) / 4)


def _without_cache_control(block: Any) -> Any:
    if isinstance(block, dict) and "cache_control" in block:
        return {k: v for k, v in block.items() if k != "cache_control"}
    return block


def block_tokens(block: Any) -> int:
    """Tokens of one content block (text: its text; anything else: its JSON), at least 1."""
    if isinstance(block, str):
        return max(1, estimate_tokens(block))
    if isinstance(block, dict) and block.get("type") == "text":
        return max(1, estimate_tokens(str(block.get("text", ""))))
    return max(1, estimate_tokens(json.dumps(_without_cache_control(block), separators=(",", ":"))))


def prompt_blocks(body: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """The prompt as the cache sees it, in order: tools, then system, then messages.

    Each item is (a stable key of the block for prefix hashing, the block itself); a string
    content is its text block. A tool with
    ``defer_loading`` is not in the prefix: once tool search finds it, its definition comes
    inline, where a ``tool_reference`` block names it in a tool result, so loading a tool
    does not break the cache (the API's documented behaviour)."""
    items: list[tuple[str, Any]] = []
    tools = [t for t in body.get("tools") or [] if isinstance(t, dict)]
    deferred = {str(t.get("name")): t for t in tools if t.get("defer_loading") is True}
    items += [("tool", tool) for tool in tools if tool.get("defer_loading") is not True]
    system = body.get("system")
    if isinstance(system, str) and system:
        items.append(("system", _text_block(system)))
    elif isinstance(system, list):
        items += [("system", block) for block in system]
    for message in body.get("messages") or []:
        if not isinstance(message, dict):
            continue
        role = str(message.get("role"))
        content = message.get("content")
        if isinstance(content, str):
            items.append((role, _text_block(content)))
        elif isinstance(content, list):
            for block in content:
                items.append((role, block))
                items += [("tool", deferred[name]) for name in _references(block, deferred)]
    return items


def _text_block(text: str) -> dict[str, Any]:
    """A string content is one text block to the model, so to the cache: a prefix sent once
    as a string and once as ``[{"type": "text", ...}]`` (as Claude Code does with a message
    that carried a breakpoint) is the same prefix."""
    return {"type": "text", "text": text}


def _references(block: Any, deferred: Mapping[str, Any]) -> list[str]:
    """The deferred tools a tool result loads (its ``tool_reference`` blocks)."""
    inner = block.get("content") if isinstance(block, dict) else None
    found = [b for b in inner if isinstance(b, dict)] if isinstance(inner, list) else []
    names = [str(b.get("tool_name")) for b in found if b.get("type") == "tool_reference"]
    return [name for name in names if name in deferred]


def count_input_tokens(body: Mapping[str, Any]) -> int:
    """Input-token estimate for a request body: tools + system + messages, at least 1."""
    return max(1, sum(block_tokens(block) for _role, block in prompt_blocks(body)))


# --- validation --------------------------------------------------------------------------------


def rejection(
    body: Mapping[str, Any],
    *,
    version: str = STRICT_VERSION,
    betas: Collection[str] = (),
    count_only: bool = False,
) -> str | None:
    """The message of the 400/404 the strict API answers ``body`` with, or None if it accepts."""
    try:
        validate(body, version=version, betas=betas, count_only=count_only)
    except ApiError as exc:
        return exc.message
    return None


def validate(
    body: Mapping[str, Any],
    *,
    version: str,
    betas: Collection[str] = (),
    count_only: bool = False,
    strict: bool = True,
) -> ModelInfo | None:
    """Raise :class:`ApiError` the way the real API would refuse ``body``.

    Returns the model's capabilities (None when not ``strict``). With ``strict=False`` only
    the shape is checked (required fields and their types), for tests that script deliberately
    invalid traffic."""
    _shape(body, count_only=count_only)
    if not strict:
        if not str(body["model"]).startswith("claude-"):
            raise ApiError(404, "not_found_error", f"model: {body['model']}")
        return None
    model = str(body["model"])
    info = capabilities(model)
    if info is None:
        raise ApiError(404, "not_found_error", f"model: {model}")
    _fields(body, version, count_only)
    _messages(body, version)
    _tools(body, info)
    thinking_on = _thinking(body, info, betas, count_only)
    _effort_and_format(body, info)
    _sampling(body, info, version, thinking_on)
    _cache_breakpoints(body)
    tokens = count_input_tokens(body)
    if tokens > info.context_window:
        raise invalid(f"prompt is too long: {tokens} tokens > {info.context_window} maximum")
    if not count_only:
        _prefill(body, info)
    _thinking_blocks(body, info)
    return info


def _shape(body: Mapping[str, Any], *, count_only: bool) -> None:
    for name in ("model", "messages") if count_only else ("model", "max_tokens", "messages"):
        if name not in body:
            raise invalid(f"{name}: Field required")
    if not isinstance(body["model"], str):
        raise invalid("model: Input should be a valid string")
    if not count_only:
        max_tokens = body["max_tokens"]
        if not isinstance(max_tokens, int) or isinstance(max_tokens, bool):
            raise invalid("max_tokens: Input should be a valid integer")
        if max_tokens < 0:
            raise invalid("max_tokens: Input should be greater than or equal to 0")
    if "stream" in body and not isinstance(body["stream"], bool):
        raise invalid("stream: Input should be a valid boolean")
    messages = body["messages"]
    if not isinstance(messages, list) or not messages:
        raise invalid("messages: at least one message is required")
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in (
            "user",
            "assistant",
            "system",
        ):
            raise invalid(f"messages.{i}.role: Input should be 'user', 'assistant' or 'system'")
        content = message.get("content")
        if not isinstance(content, str | list):
            raise invalid(f"messages.{i}.content: Input should be a valid string or list")
        for j, block in enumerate(content if isinstance(content, list) else []):
            if not isinstance(block, dict) or not isinstance(block.get("type"), str):
                raise invalid(f"messages.{i}.content.{j}.type: Field required")


def _fields(body: Mapping[str, Any], version: str, count_only: bool) -> None:
    allowed = COUNT_FIELDS if count_only else MESSAGE_FIELDS
    for name in body:
        if name in SAMPLING_PARAMS and version != STRICT_VERSION and not count_only:
            continue
        if name not in allowed:
            raise invalid(f"{name}: Extra inputs are not permitted")
    if not count_only:
        info = capabilities(str(body["model"]))
        assert info is not None
        if body["max_tokens"] > info.max_output_tokens:
            raise invalid(
                f"max_tokens: {body['max_tokens']} > {info.max_output_tokens}, which is the "
                f"maximum allowed number of output tokens for {body['model']}"
            )


def _user_citations(block: Any) -> bool:
    """True when a user-side text block (also inside search_result / tool_result) cites."""
    if not isinstance(block, dict):
        return False
    if block.get("type") == "text":
        citations = block.get("citations")
        return isinstance(citations, list) and len(citations) > 0
    if block.get("type") in ("search_result", "tool_result") and isinstance(
        block.get("content"), list
    ):
        return any(_user_citations(inner) for inner in block["content"])
    return False


def _turns(messages: list[Any]) -> list[int]:
    """Indexes of the user/assistant turns (mid-conversation system messages skipped)."""
    return [i for i, m in enumerate(messages) if m["role"] != "system"]


def _ids(content: Any, kind: str, key: str) -> list[str]:
    if not isinstance(content, list):
        return []
    return [str(b.get(key)) for b in content if b.get("type") == kind]


def _messages(body: Mapping[str, Any], version: str) -> None:
    messages: list[dict[str, Any]] = body["messages"]
    last = len(messages) - 1
    for i, message in enumerate(messages):
        content = message["content"]
        empty = content in ("", [])
        if empty and not (i == last and message["role"] == "assistant"):
            raise invalid(
                f"messages.{i}: all messages must have non-empty content except for the "
                "optional final assistant message"
            )
        for j, block in enumerate(content if isinstance(content, list) else []):
            if block["type"] == "text" and not block.get("text"):
                raise invalid("messages: text content blocks must be non-empty")
            if version == STRICT_VERSION:
                if message["role"] == "assistant" and block["type"] == "document":
                    raise invalid(
                        f"messages.{i}.content.{j}: document blocks are not permitted "
                        "in assistant messages"
                    )
                if message["role"] == "user" and _user_citations(block):
                    raise invalid(
                        f"messages.{i}.content.{j}: text blocks with citations are not "
                        "permitted in user messages"
                    )
    turns = _turns(messages)
    for n, i in enumerate(turns):
        message = messages[i]
        if message["role"] == "assistant":
            calls = _ids(message["content"], "tool_use", "id")
            if not calls or i == turns[-1]:
                continue
            following = messages[turns[n + 1]]
            answered = set(_ids(following["content"], "tool_result", "tool_use_id"))
            missing = [c for c in calls if c not in answered]
            if following["role"] != "user" or missing:
                raise invalid(
                    f"messages.{i}: `tool_use` ids were found without `tool_result` blocks "
                    f"immediately after: {', '.join(missing or calls)}. Each `tool_use` block "
                    "must have a corresponding `tool_result` block in the next message."
                )
        else:
            previous = messages[turns[n - 1]] if n > 0 else None
            offered = set(
                _ids(previous["content"], "tool_use", "id")
                if previous is not None and previous["role"] == "assistant"
                else []
            )
            content = message["content"]
            for j, block in enumerate(content if isinstance(content, list) else []):
                if block["type"] == "tool_result" and block.get("tool_use_id") not in offered:
                    raise invalid(
                        f"messages.{i}.content.{j}: unexpected `tool_use_id` found in "
                        f"`tool_result` blocks: {block.get('tool_use_id')}. Each `tool_result` "
                        "block must have a corresponding `tool_use` block in the previous "
                        "message."
                    )


def forced_tool(body: Mapping[str, Any]) -> bool:
    choice = body.get("tool_choice")
    return isinstance(choice, dict) and choice.get("type") in ("any", "tool")


def _tools(body: Mapping[str, Any], info: ModelInfo) -> None:
    tools = body.get("tools")
    if tools is not None and not isinstance(tools, list):
        raise invalid("tools: Input should be a valid list")
    names = set()
    for i, tool in enumerate(tools or []):
        if not isinstance(tool, dict) or not isinstance(tool.get("name"), str):
            raise invalid(f"tools.{i}.name: Field required")
        custom = tool.get("type") in (None, "custom")
        if custom and not isinstance(tool.get("input_schema"), dict):
            raise invalid(f"tools.{i}.custom.input_schema: Field required")
        if tool["name"] in names:
            raise invalid(f"tools: Tool names must be unique. Duplicate: {tool['name']}")
        names.add(tool["name"])
    choice = body.get("tool_choice")
    if choice is None:
        return
    kind = choice.get("type") if isinstance(choice, dict) else None
    if kind not in ("auto", "any", "tool", "none"):
        raise invalid("tool_choice.type: Input should be 'auto', 'any', 'tool' or 'none'")
    if kind in ("any", "tool") and not tools:
        raise invalid("tool_choice may only be specified while providing tools.")
    if kind == "tool" and choice.get("name") not in names:
        # invented wording
        raise invalid(f"tool_choice.name: tool {choice.get('name')!r} not found in tools")
    if kind in ("any", "tool") and info.model in NO_FORCED_TOOL_CHOICE:
        raise invalid(TOOL_CHOICE_MESSAGE)


def thinking_type(body: Mapping[str, Any]) -> str | None:
    thinking = body.get("thinking")
    return thinking.get("type") if isinstance(thinking, dict) else None


def _thinking(
    body: Mapping[str, Any], info: ModelInfo, betas: Collection[str], count_only: bool
) -> bool:
    """Check ``thinking``; return True when the request thinks (enabled or adaptive)."""
    if "thinking" not in body or body["thinking"] is None:
        return False
    thinking = body["thinking"]
    kind = thinking.get("type") if isinstance(thinking, dict) else None
    if kind not in THINKING_TYPES:
        raise invalid(
            "thinking.type: Input should be 'enabled', 'adaptive', 'disabled' or 'between_tools'"
        )
    assert isinstance(thinking, dict)
    if kind not in info.thinking_types:
        if not info.thinking_types:
            raise invalid(f"thinking: {info.model} does not support extended thinking")  # invented
        if kind == "enabled":
            raise invalid(ENABLED_THINKING_MESSAGE)
        if kind == "adaptive":
            raise invalid(ADAPTIVE_THINKING_MESSAGE)
        raise invalid(f'thinking.type: "{kind}" is not supported for this model.')  # invented
    display = thinking.get("display")
    if display is not None and display not in ("summarized", "omitted"):
        raise invalid(f"thinking.{kind}.display: Input should be 'summarized' or 'omitted'")
    if kind == "enabled":
        budget = thinking.get("budget_tokens")
        if not isinstance(budget, int) or isinstance(budget, bool):
            raise invalid("thinking.enabled.budget_tokens: Field required")
        if budget < 1024:
            raise invalid(
                "thinking.enabled.budget_tokens: Input should be greater than or equal to 1024"
            )
        interleaved = INTERLEAVED_BETA in betas and bool(body.get("tools"))
        if not count_only and budget >= body["max_tokens"] and not interleaved:
            raise invalid(BUDGET_MESSAGE)
    on = kind in ("enabled", "adaptive")
    if on and forced_tool(body):
        raise invalid(FORCED_TOOL_THINKING_MESSAGE)
    return on


def _effort_and_format(body: Mapping[str, Any], info: ModelInfo) -> None:
    if "output_config" not in body or body["output_config"] is None:
        return
    config = body["output_config"]
    if not isinstance(config, dict):
        raise invalid("output_config: Input should be a valid dictionary")
    for name in config:
        if name not in OUTPUT_CONFIG_FIELDS:
            raise invalid(f"output_config.{name}: Extra inputs are not permitted")
    effort = config.get("effort")
    if effort is not None:
        if effort not in EFFORT_LEVELS:
            raise invalid(
                "output_config.effort: Input should be 'low', 'medium', 'high', 'xhigh' or 'max'"
            )
        if not info.efforts:
            raise invalid(NO_EFFORT_MESSAGE)
        if effort not in info.efforts:
            raise invalid(  # invented wording
                f'output_config.effort: "{effort}" is not supported by {info.model}; '
                f"supported values: {', '.join(info.efforts)}"
            )
    fmt = config.get("format")
    if fmt is not None and not (
        isinstance(fmt, dict)
        and fmt.get("type") == "json_schema"
        and isinstance(fmt.get("schema"), dict)
    ):
        raise invalid("output_config.format: expected {'type': 'json_schema', 'schema': {...}}")


def _sampling(body: Mapping[str, Any], info: ModelInfo, version: str, thinking_on: bool) -> None:
    """Sampling on API version 2023-06-01 (2026-10-21 refused them as extra inputs)."""
    present = {k: body[k] for k in SAMPLING_PARAMS if body.get(k) is not None}
    if not present or version == STRICT_VERSION:
        return
    for name, value in present.items():
        if name != "top_k" and (not isinstance(value, int | float) or isinstance(value, bool)):
            raise invalid(f"{name}: Input should be a valid number")
        if not info.accepts_sampling and (name == "top_k" or value != 1):
            # invented wording: Opus 4.7+ and Sonnet 5+ refuse non-default values (§1 item 3)
            raise invalid(f"{name}: only the default value is supported for {info.model}")
    if info.exclusive_sampling and "temperature" in present and "top_p" in present:
        raise invalid(EXCLUSIVE_SAMPLING_MESSAGE)
    if thinking_on:
        if present.get("temperature", 1) != 1:
            raise invalid(THINKING_TEMPERATURE_MESSAGE)
        if "top_k" in present:
            raise invalid("`top_k` cannot be set when thinking is enabled")  # invented
        if not 0.95 <= present.get("top_p", 1) <= 1:
            raise invalid("`top_p` must be between 0.95 and 1 when thinking is enabled")  # invented


def _cache_control(value: Any, where: str) -> str:
    """The ttl of a cache_control value (raises on a malformed one)."""
    if not isinstance(value, dict) or value.get("type") != "ephemeral":
        raise invalid(f"{where}.type: Input should be 'ephemeral'")
    ttl = value.get("ttl", "5m")
    if ttl not in CACHE_TTLS:
        raise invalid(f"{where}.ttl: Input should be '5m' or '1h'")
    return str(ttl)


def cache_breakpoints(body: Mapping[str, Any]) -> list[tuple[int, str]]:
    """(index in :func:`prompt_blocks`, ttl) of every cache breakpoint, in prompt order,
    including the automatic one that a top-level ``cache_control`` puts on the last cacheable
    block. A breakpoint inside a tool_result's content counts at the tool_result."""
    points: dict[int, str] = {}
    blocks = prompt_blocks(body)
    for index, (_role, block) in enumerate(blocks):
        if not isinstance(block, dict):
            continue
        if "cache_control" in block and block["cache_control"] is not None:
            points[index] = _cache_control(block["cache_control"], f"{_role}.cache_control")
        inner = block.get("content") if block.get("type") == "tool_result" else None
        for nested in inner if isinstance(inner, list) else []:
            if isinstance(nested, dict) and nested.get("cache_control") is not None:
                points.setdefault(index, _cache_control(nested["cache_control"], "cache_control"))
    auto = body.get("cache_control")
    if auto is not None:
        ttl = _cache_control(auto, "cache_control")
        thinking = ("thinking", "redacted_thinking")
        cacheable = [
            i
            for i, (_role, block) in enumerate(blocks)
            if not (isinstance(block, dict) and block.get("type") in thinking)
        ]
        if cacheable:
            points.setdefault(cacheable[-1], ttl)
    return sorted(points.items())


def _cache_breakpoints(body: Mapping[str, Any]) -> None:
    points = cache_breakpoints(body)
    if len(points) > MAX_CACHE_BREAKPOINTS:
        raise invalid(
            f"A maximum of {MAX_CACHE_BREAKPOINTS} blocks with cache_control may be provided. "
            f"Found {len(points)}."
        )
    ttls = [ttl for _i, ttl in points]
    if "5m" in ttls and "1h" in ttls[ttls.index("5m") :]:
        raise invalid(  # invented wording; the prompt-caching page requires 1h entries first
            "cache_control: a ttl='1h' cache_control block must not come after a ttl='5m' "
            "cache_control block"
        )


def _prefill(body: Mapping[str, Any], info: ModelInfo) -> None:
    messages = body["messages"]
    final = messages[-1]
    if final["role"] != "assistant":
        return
    if not info.accepts_prefill:
        raise invalid(PREFILL_MESSAGE)
    if thinking_type(body) not in ("enabled", "adaptive") and isinstance(final["content"], list):
        for j, block in enumerate(final["content"]):
            if block["type"] in ("thinking", "redacted_thinking"):
                raise invalid(
                    f"messages.{len(messages) - 1}.content.{j}: When thinking is disabled, an "
                    "`assistant` message in the final position cannot contain `thinking`. To "
                    "use thinking blocks, enable `thinking` in your request."
                )


def _thinking_blocks(body: Mapping[str, Any], info: ModelInfo) -> None:
    """Thinking blocks must come back unchanged and only to the model that wrote them."""
    messages = body["messages"]
    assistants = [i for i, m in enumerate(messages) if m["role"] == "assistant"]
    latest = assistants[-1] if assistants else None
    for i in assistants:
        content = messages[i]["content"]
        if not isinstance(content, list):
            continue
        if content and content[-1]["type"] == "thinking":
            raise invalid(
                f"messages.{i}: The final block in an assistant message cannot be `thinking`."
            )
        for j, block in enumerate(content):
            if block["type"] != "thinking":
                continue
            where = f"messages.{i}.content.{j}"
            signature = block.get("signature")
            if not isinstance(signature, str):
                raise invalid(f"{where}.thinking.signature: Field required")
            owner = signature_model(signature)
            if owner is None or owner not in info.names():
                raise invalid(f"{where}: {INVALID_SIGNATURE_MESSAGE}")
            if signature != sign_thinking(str(block.get("thinking", "")), owner):
                message = THINKING_MODIFIED_MESSAGE if i == latest else INVALID_SIGNATURE_MESSAGE
                raise invalid(f"{where}: {message}")
    if thinking_type(body) != "enabled" or latest is None:
        return
    content = messages[latest]["content"]
    if not isinstance(content, list) or "tool_use" not in [b["type"] for b in content]:
        return
    if content[0]["type"] not in ("thinking", "redacted_thinking"):
        raise invalid(
            f"messages.{latest}.content.0.type: Expected `thinking` or `redacted_thinking`, "
            f"but found `{content[0]['type']}`. {THINKING_FIRST_MESSAGE}"
        )

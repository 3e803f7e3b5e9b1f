"""Make a Messages request valid for the model it is sent to, and say what was changed.

After routing picked a model, :func:`adapt` turns the client's body into the body for *that*
model: it adds the tier's defaults where they fit (auto and forced tiers only) and translates or
drops what the model does not accept. It is pure and cheap (it runs on every request and on every
fallback): it never mutates its input, copies only the containers it changes, and leaves every
other value as the client sent it.

The principle: tierwise fixes what would fail *because of the model tierwise chose* (or because
of a default tierwise adds); a request that the API refuses on every model (e.g. a forced
``tool_choice`` together with the caller's own thinking) is forwarded unchanged, so the client
gets the API's own 400. A pinned model (``mode="passthrough"``) gets no tier defaults and only
the model-dependent fixes. docs/adaptation.md has the full table.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol, TypeGuard

from tierwise.pricing import ModelInfo

Mode = Literal["auto", "tier", "passthrough"]

EFFORTS = ("low", "medium", "high", "xhigh", "max")
SAMPLING = ("temperature", "top_p", "top_k")
NO_SAMPLING_VERSION = "2026-10-21"
INTERLEAVED_BETA = "interleaved-thinking-2025-05-14"
MIN_BUDGET = 1024
# budget_tokens used when adaptive thinking becomes enabled thinking, by the request's effort.
BUDGET_FOR_EFFORT = {"low": 1024, "medium": 4096, "high": 8192, "xhigh": 16384, "max": 32000}
_THINKING_BLOCKS = ("thinking", "redacted_thinking")


class TierDefaults(Protocol):
    """What :func:`adapt` reads from a tier (``tierwise.config.TierConfig`` has it)."""

    @property
    def name(self) -> str: ...
    @property
    def thinking(self) -> dict[str, Any] | None: ...
    @property
    def effort(self) -> str | None: ...


@dataclass(frozen=True, slots=True)
class Adapted:
    """The body to send, and what was changed in it (empty when nothing was)."""

    body: dict[str, Any]
    changes: tuple[str, ...]

    @property
    def header(self) -> str:
        """The changes as one header value (``x-tierwise-adapted``); empty when none."""
        return "; ".join(self.changes)


def forces_tool(body: Mapping[str, Any]) -> bool:
    choice = body.get("tool_choice")
    return isinstance(choice, dict) and choice.get("type") in ("any", "tool")


def has_unthought_tool_use(messages: Any) -> bool:
    """True when an assistant turn used a tool without a thinking block before it."""
    for message in messages if isinstance(messages, list) else []:
        if not isinstance(message, dict) or message.get("role") != "assistant":
            continue
        content = message.get("content")
        if not isinstance(content, list):
            continue
        kinds = [b.get("type") for b in content if isinstance(b, dict)]
        if "tool_use" in kinds and not (kinds and kinds[0] in _THINKING_BLOCKS):
            return True
    return False


def _last_turn_unthought(messages: Any) -> bool:
    """True when the latest assistant turn used a tool without a thinking block first."""
    if not isinstance(messages, list):
        return False
    turns = [m for m in messages if isinstance(m, dict) and m.get("role") == "assistant"]
    return bool(turns) and has_unthought_tool_use(turns[-1:])


def unadaptable(body: Mapping[str, Any], info: ModelInfo | None) -> str | None:
    """Why ``info``'s model refuses ``body`` whatever :func:`adapt` does, or None.

    Routing can use it to skip such a target (e.g. a prefill sent to a 4.6+ model)."""
    messages = body.get("messages")
    if info is None or not isinstance(messages, list) or not messages:
        return None
    last = messages[-1]
    if isinstance(last, dict) and last.get("role") == "assistant" and not info.accepts_prefill:
        return f"{info.model} refuses a conversation that ends with an assistant turn (prefill)"
    return None


def adapt(
    body: Mapping[str, Any],
    model: str,
    info: ModelInfo | None,
    *,
    mode: Mode,
    tier: TierDefaults | None = None,
    api_version: str = "2023-06-01",
    sampling: Mapping[str, Any] | None = None,
    betas: Collection[str] = (),
    thinking_origin: Callable[[str], str | None] | None = None,
) -> Adapted:
    """The body for ``model`` (whose catalogue entry is ``info``; None when unknown).

    ``body``: the client's Messages body (not mutated). ``tier``: the tier's defaults (None for a
    pinned model); they are added only in modes "auto" and "tier". ``api_version``: the
    ``anthropic-version`` sent upstream. ``sampling``: OpenAI-dialect temperature/top_p, sent
    only where the model and version accept them. ``betas``: the request's ``anthropic-beta``
    values. ``thinking_origin``: the model that produced a thinking block's signature (or a
    redacted block's data), None when unknown; blocks from another model are dropped, since
    signatures are bound to the model that wrote them.
    """
    out = dict(body)
    out["model"] = model
    changes: list[str] = []
    defaults = tier if mode != "passthrough" else None
    if info is None:
        _unknown_model(out, defaults, changes)
        return Adapted(out, tuple(changes))
    name = model
    original_max = body.get("max_tokens")
    if _is_int(original_max) and original_max > info.max_output_tokens:
        out["max_tokens"] = info.max_output_tokens
        changes.append(f"max_tokens {original_max}→{info.max_output_tokens}: {name}'s output limit")
    foreign_last_turn = False
    if thinking_origin is not None:
        foreign_last_turn = _drop_foreign_thinking(out, info, thinking_origin, changes)
    kept = _sampling(out, info, api_version, sampling or {}, changes)
    _thinking(out, body, info, defaults, kept, foreign_last_turn, betas, changes)
    _effort(out, info, defaults, changes)
    return Adapted(out, tuple(changes))


def _is_int(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _unknown_model(out: dict[str, Any], defaults: TierDefaults | None, changes: list[str]) -> None:
    """A model the catalogue does not know: add the tier's defaults where they cannot clash."""
    if defaults is None:
        return
    if defaults.thinking and "thinking" not in out:
        present = {k: out[k] for k in SAMPLING if out.get(k) is not None}
        reason = _no_tier_thinking_reason(out, present)
        if reason is None:
            out["thinking"] = defaults.thinking
            changes.append(f"thinking: {_describe(defaults.thinking)} added (tier {defaults.name})")
        else:
            changes.append(f"thinking: not added ({reason})")
    config = out.get("output_config")
    if defaults.effort and not (isinstance(config, dict) and config.get("effort")):
        out["output_config"] = {
            **(config if isinstance(config, dict) else {}),
            "effort": defaults.effort,
        }
        changes.append(f"output_config.effort: {defaults.effort} added (tier {defaults.name})")


def _describe(thinking: Mapping[str, Any]) -> str:
    kind = str(thinking.get("type"))
    if kind == "enabled":
        return f"enabled budget {thinking.get('budget_tokens')}"
    return kind


# --- thinking blocks from another model ---------------------------------------------------------


def _block_key(block: Mapping[str, Any]) -> str | None:
    key = block.get("signature") if block.get("type") == "thinking" else block.get("data")
    return key if isinstance(key, str) else None


def _drop_foreign_thinking(
    out: dict[str, Any],
    info: ModelInfo,
    origin: Callable[[str], str | None],
    changes: list[str],
) -> bool:
    """Drop thinking blocks another model wrote; True if the last assistant turn lost some."""
    messages = out.get("messages")
    if not isinstance(messages, list):
        return False
    names = info.names()
    assistants = [
        i for i, m in enumerate(messages) if isinstance(m, dict) and m.get("role") == "assistant"
    ]
    new_messages: list[Any] | None = None
    dropped: dict[str, int] = {}
    last_turn = False
    for i in assistants:
        content = messages[i].get("content")
        if not isinstance(content, list):
            continue
        kept = []
        for block in content:
            if isinstance(block, dict) and block.get("type") in _THINKING_BLOCKS:
                key = _block_key(block)
                writer = origin(key) if key is not None else None
                if writer is not None and writer not in names:
                    dropped[writer] = dropped.get(writer, 0) + 1
                    last_turn = last_turn or i == assistants[-1]
                    continue
            kept.append(block)
        if len(kept) != len(content):
            if new_messages is None:
                new_messages = list(messages)
            new_messages[i] = {**messages[i], "content": kept or [{"type": "text", "text": "…"}]}
    if new_messages is not None:
        out["messages"] = new_messages
        for writer, count in dropped.items():
            changes.append(
                f"{count} thinking block(s) from {writer} dropped: signatures are bound to the "
                "model that wrote them"
            )
    return last_turn


# --- sampling -----------------------------------------------------------------------------------


def _sampling(
    out: dict[str, Any],
    info: ModelInfo,
    version: str,
    extra: Mapping[str, Any],
    changes: list[str],
) -> dict[str, Any]:
    """Drop the sampling values the model/version refuse; add accepted OpenAI ones. Returns
    the sampling values that are sent."""
    name = info.model
    sent: dict[str, Any] = {}
    for key in SAMPLING:
        from_body = key in out and out[key] is not None
        value = out[key] if from_body else extra.get(key)
        if value is None:
            continue
        verb = "dropped" if from_body else "not sent"
        if version == NO_SAMPLING_VERSION:
            why = f"API version {version} removed sampling parameters"
        elif not info.accepts_sampling and (key == "top_k" or value != 1):
            why = f"{name} accepts no sampling parameters"
        else:
            sent[key] = value
            continue
        if from_body:
            del out[key]
        changes.append(f"{key} {verb}: {why}")
    if info.exclusive_sampling and "temperature" in sent and "top_p" in sent:
        if "top_p" in out:
            del out["top_p"]
            changes.append(f"top_p dropped: {name} accepts temperature or top_p, not both")
        else:
            changes.append(f"top_p not sent: {name} accepts temperature or top_p, not both")
        del sent["top_p"]
    for key, value in sent.items():
        if key not in out:
            out[key] = value
    return sent


def _sampling_blocks_thinking(sent: Mapping[str, Any]) -> str | None:
    if sent.get("temperature", 1) != 1:
        return "temperature set by the caller"
    if "top_k" in sent:
        return "top_k set by the caller"
    top_p = sent.get("top_p", 1)
    if not (isinstance(top_p, int | float) and 0.95 <= top_p <= 1):
        return "top_p set by the caller"
    return None


# --- thinking -----------------------------------------------------------------------------------


def _no_tier_thinking_reason(out: Mapping[str, Any], sent: Mapping[str, Any]) -> str | None:
    if forces_tool(out):
        return "tool_choice forces a tool"
    messages = out.get("messages")
    if has_unthought_tool_use(messages):
        return "an assistant turn used a tool without thinking"
    if isinstance(messages, list) and messages:
        last = messages[-1]
        if isinstance(last, dict) and last.get("role") == "assistant":
            return "the conversation ends with an assistant turn"
    return _sampling_blocks_thinking(sent)


def _budget_for(effort: Any, max_tokens: Any) -> int | None:
    """An enabled-thinking budget for this effort that fits under max_tokens, or None."""
    wanted = BUDGET_FOR_EFFORT.get(str(effort), BUDGET_FOR_EFFORT["high"])
    if not _is_int(max_tokens):
        return None
    budget = min(wanted, max_tokens - 1)
    return budget if budget >= MIN_BUDGET else None


def _translate(
    thinking: Mapping[str, Any], info: ModelInfo, effort: Any, max_tokens: Any, messages: Any
) -> tuple[dict[str, Any] | None, str]:
    """A thinking config the model accepts, in place of one it does not: (config or None to
    leave thinking out, why)."""
    kind = str(thinking.get("type"))
    types = info.thinking_types
    display = {"display": thinking["display"]} if "display" in thinking else {}
    if kind in ("enabled", "between_tools") and "adaptive" in types:
        return {"type": "adaptive", **display}, f"{info.model} accepts no {kind} thinking"
    if kind in ("adaptive", "between_tools") and "enabled" in types:
        return _as_enabled(kind, display, info, effort, max_tokens, messages)
    if not types:
        return None, f"{info.model} has no extended thinking"
    if kind == "disabled":
        return None, f"{info.model} cannot turn thinking off"
    return None, f"{info.model} accepts no {kind} thinking"


def _as_enabled(
    kind: str,
    display: Mapping[str, Any],
    info: ModelInfo,
    effort: Any,
    max_tokens: Any,
    messages: Any,
) -> tuple[dict[str, Any] | None, str]:
    if _last_turn_unthought(messages):
        return None, "the last assistant turn used a tool without thinking"
    budget = _budget_for(effort, max_tokens)
    if budget is None:
        return None, f"max_tokens {max_tokens} leaves no room for a {MIN_BUDGET}-token budget"
    return {"type": "enabled", "budget_tokens": budget, **display}, (
        f"{info.model} accepts no {kind} thinking"
    )


def _thinking(
    out: dict[str, Any],
    body: Mapping[str, Any],
    info: ModelInfo,
    defaults: TierDefaults | None,
    sent: Mapping[str, Any],
    foreign_last_turn: bool,
    betas: Collection[str],
    changes: list[str],
) -> None:
    caller = body.get("thinking")
    if isinstance(caller, dict) and isinstance(caller.get("type"), str):
        _caller_thinking(out, body, caller, info, foreign_last_turn, betas, changes)
    elif "thinking" not in body and defaults is not None and defaults.thinking:
        _tier_thinking(out, body, info, defaults, sent, foreign_last_turn, changes)


def _effort_of(body: Mapping[str, Any]) -> Any:
    config = body.get("output_config")
    return config.get("effort") if isinstance(config, dict) else None


def _caller_thinking(
    out: dict[str, Any],
    body: Mapping[str, Any],
    caller: Mapping[str, Any],
    info: ModelInfo,
    foreign_last_turn: bool,
    betas: Collection[str],
    changes: list[str],
) -> None:
    kind = caller["type"]
    if kind not in info.thinking_types:
        replacement, why = _translate(
            caller, info, _effort_of(body), out.get("max_tokens"), out.get("messages")
        )
        if replacement is None:
            del out["thinking"]
            changes.append(f"thinking {kind} dropped: {why}")
        else:
            out["thinking"] = replacement
            changes.append(f"thinking {kind}→{_describe(replacement)}: {why}")
    elif kind == "enabled":
        _fit_budget(out, caller, body.get("max_tokens"), betas, changes)
    final = out.get("thinking")
    if (
        foreign_last_turn
        and isinstance(final, dict)
        and final.get("type") == "enabled"
        and _last_turn_unthought(out.get("messages"))
    ):
        del out["thinking"]
        changes.append(
            "thinking dropped: the last assistant turn's thinking came from another model"
        )


def _tier_thinking(
    out: dict[str, Any],
    body: Mapping[str, Any],
    info: ModelInfo,
    defaults: TierDefaults,
    sent: Mapping[str, Any],
    foreign_last_turn: bool,
    changes: list[str],
) -> None:
    wanted = defaults.thinking or {}
    kind = str(wanted.get("type"))
    max_tokens = out.get("max_tokens")
    thinks = kind in ("enabled", "adaptive")
    reason = _no_tier_thinking_reason(out, sent) if thinks else None
    if reason is None and foreign_last_turn and thinks:
        reason = "the last assistant turn's thinking came from another model"
    if reason is not None:
        changes.append(f"thinking: not added ({reason})")
        return
    config: dict[str, Any] | None = dict(wanted)
    if kind not in info.thinking_types:
        effort = _effort_of(body) or defaults.effort
        config, why = _translate(wanted, info, effort, max_tokens, out.get("messages"))
        if config is None:
            changes.append(f"thinking: not added ({why})")
            return
    elif kind == "enabled":
        budget = wanted.get("budget_tokens")
        if isinstance(budget, int) and isinstance(max_tokens, int) and budget >= max_tokens:
            if max_tokens - 1 < MIN_BUDGET:
                changes.append(
                    f"thinking: not added (max_tokens {max_tokens} leaves no room for a "
                    f"{MIN_BUDGET}-token budget)"
                )
                return
            config = {**wanted, "budget_tokens": max_tokens - 1}
    out["thinking"] = config
    changes.append(f"thinking: {_describe(config or {})} added (tier {defaults.name} default)")


def _fit_budget(
    out: dict[str, Any],
    caller: Mapping[str, Any],
    original_max: Any,
    betas: Collection[str],
    changes: list[str],
) -> None:
    """After max_tokens was lowered to the model's limit, keep budget_tokens under it."""
    budget = caller.get("budget_tokens")
    max_tokens = out.get("max_tokens")
    if not (
        isinstance(budget, int) and isinstance(max_tokens, int) and isinstance(original_max, int)
    ):
        return
    interleaved = INTERLEAVED_BETA in betas and bool(out.get("tools"))
    if budget < max_tokens or budget >= original_max or interleaved:
        return  # fine, or the caller's own mistake (refused on every model)
    if max_tokens - 1 >= MIN_BUDGET:
        out["thinking"] = {**caller, "budget_tokens": max_tokens - 1}
        changes.append(f"thinking budget_tokens {budget}→{max_tokens - 1}: under max_tokens")
    else:
        del out["thinking"]
        changes.append(f"thinking dropped: max_tokens {max_tokens} leaves no room for a budget")


# --- effort -------------------------------------------------------------------------------------


def _nearest_effort(wanted: str, accepted: tuple[str, ...]) -> str:
    rank = EFFORTS.index(wanted)
    lower = [e for e in accepted if e in EFFORTS and EFFORTS.index(e) < rank]
    if lower:
        return max(lower, key=EFFORTS.index)
    return min((e for e in accepted if e in EFFORTS), key=EFFORTS.index)


def _effort(
    out: dict[str, Any], info: ModelInfo, defaults: TierDefaults | None, changes: list[str]
) -> None:
    name = info.model
    config = out.get("output_config")
    effort = config.get("effort") if isinstance(config, dict) else None
    if isinstance(config, dict) and effort is not None:
        if effort not in EFFORTS:
            return  # refused on every model: the caller gets the API's own error
        if not info.efforts:
            rest = {k: v for k, v in config.items() if k != "effort"}
            if rest:
                out["output_config"] = rest
            else:
                del out["output_config"]
            changes.append(f"output_config.effort dropped: {name} accepts no effort")
        elif effort not in info.efforts:
            nearest = _nearest_effort(effort, info.efforts)
            out["output_config"] = {**config, "effort": nearest}
            changes.append(
                f"output_config.effort {effort}→{nearest}: {name} accepts {', '.join(info.efforts)}"
            )
        return
    if defaults is None or not defaults.effort or not info.efforts:
        return
    wanted = defaults.effort
    chosen = wanted if wanted in info.efforts else _nearest_effort(wanted, info.efforts)
    base = config if isinstance(config, dict) else {}
    out["output_config"] = {**base, "effort": chosen}
    changes.append(f"output_config.effort: {chosen} added (tier {defaults.name} default)")


# --- where thinking blocks came from ------------------------------------------------------------


class ThinkingOrigins:
    """Remembers which model wrote the thinking blocks the gateway relayed (bounded, LRU), so
    :func:`adapt` can drop blocks that another model wrote when a conversation changes model.

    Call :meth:`record` with each answer's content blocks and model; pass the instance as
    ``thinking_origin``. An unknown signature (another gateway replica, or a restart) is left
    alone: the upstream then decides."""

    def __init__(self, capacity: int = 100_000) -> None:
        self.capacity = capacity
        self._models: OrderedDict[str, str] = OrderedDict()

    def record(self, content: Any, model: str) -> None:
        for block in content if isinstance(content, list) else []:
            if isinstance(block, dict) and block.get("type") in _THINKING_BLOCKS:
                key = _block_key(block)
                if key:
                    self._models[key] = model
                    self._models.move_to_end(key)
        while len(self._models) > self.capacity:
            self._models.popitem(last=False)

    def __call__(self, key: str) -> str | None:
        return self._models.get(key)

"""An offline stand-in for the Messages API: deterministic replies, plausible usage.

Used whenever no API key is configured, so the demo and the library work with no network.
Everything it returns says SIMULATED: the reply text starts with a marker and
``Completion.simulated`` is true. Token counts follow the usual ~4 characters per token, and
a call with thinking on spends some of its output on thinking, as the real API does.
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any

from tierwise.providers.base import CallSpec
from tierwise.types import Completion, Usage

SIMULATED_MARKER = "[SIMULATED]"


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for block in content:
            if isinstance(block, dict) and isinstance(block.get("text"), str):
                parts.append(block["text"])
            else:
                parts.append(json.dumps(block, sort_keys=True, default=str))
        return "\n".join(parts)
    return json.dumps(content, default=str)


def estimate_input_tokens(call: CallSpec) -> int:
    """~4 characters a token over system and messages, plus a small per-message overhead."""
    chars = len(call.system or "")
    for message in call.messages:
        chars += len(_text_of(message.get("content", "")))
    return math.ceil(chars / 4) + 4 * len(call.messages) + 3


def _last_user_text(call: CallSpec) -> str:
    for message in reversed(call.messages):
        if message.get("role") == "user":
            return _text_of(message.get("content", ""))
    return ""


class SimulatedProvider:
    """Answers every call locally. Deterministic: the same call gives the same completion."""

    name = "simulated"
    simulated = True

    async def complete(self, call: CallSpec) -> Completion:
        return simulate(call)

    async def aclose(self) -> None:
        return None


def simulate(call: CallSpec) -> Completion:
    prompt = _last_user_text(call)
    digest = hashlib.sha256(f"{call.model}\n{call.system}\n{prompt}".encode()).digest()
    seed = int.from_bytes(digest[:8], "big")
    snippet = " ".join(prompt.split())[:80]
    text = (
        f'{SIMULATED_MARKER} {call.model} would answer here: "{snippet}". '
        "No model was called; set ANTHROPIC_API_KEY to get real answers."
    )
    budget = max(call.max_tokens, 1)
    thinking_on = (call.thinking or {}).get("type") in ("enabled", "adaptive")
    thinking_tokens = 0
    if thinking_on:
        effort = (call.output_config or {}).get("effort", "high")
        scale = {"low": 1, "medium": 2, "high": 4, "xhigh": 6, "max": 8}.get(str(effort), 4)
        thinking_tokens = min(budget // 2, 60 * scale + seed % (120 * scale))
    answer_tokens = min(budget - thinking_tokens, 40 + (seed >> 16) % 360)
    output_tokens = thinking_tokens + max(answer_tokens, 1 if budget - thinking_tokens > 0 else 0)
    stop = "max_tokens" if output_tokens >= budget else "end_turn"
    content: list[dict[str, Any]] = []
    if thinking_on:
        content.append(
            {"type": "thinking", "thinking": f"{SIMULATED_MARKER} reasoning", "signature": "sim"}
        )
    content.append({"type": "text", "text": text})
    return Completion(
        text=text,
        model=call.model,
        usage=Usage(
            input_tokens=estimate_input_tokens(call),
            output_tokens=output_tokens,
            thinking_tokens=thinking_tokens,
        ),
        stop_reason=stop,
        simulated=True,
        request_id=f"sim_{digest.hex()[:24]}",
        content=content,
    )

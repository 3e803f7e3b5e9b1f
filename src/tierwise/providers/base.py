"""The provider protocol and the description of one call."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from tierwise.types import Completion, Usage


@dataclass(frozen=True, slots=True)
class CallSpec:
    """One Messages API call, as the router wants it made."""

    model: str
    messages: list[dict[str, Any]]
    max_tokens: int
    system: str | None = None
    thinking: dict[str, Any] | None = None
    output_config: dict[str, Any] | None = None
    timeout_s: float | None = None

    def body(self) -> dict[str, Any]:
        """The request body as the Messages API takes it (unset fields omitted)."""
        body: dict[str, Any] = {
            "model": self.model,
            "max_tokens": self.max_tokens,
            "messages": self.messages,
        }
        if self.system:
            body["system"] = self.system
        if self.thinking is not None:
            body["thinking"] = self.thinking
        if self.output_config is not None:
            body["output_config"] = self.output_config
        return body


class Provider(Protocol):
    name: str
    simulated: bool

    async def complete(self, call: CallSpec) -> Completion: ...

    async def aclose(self) -> None: ...


def usage_from_api(raw: dict[str, Any]) -> Usage:
    """Read a Messages API ``usage`` object into token classes.

    Cache writes are split by TTL when ``cache_creation`` is present; otherwise the total
    ``cache_creation_input_tokens`` is counted as 5-minute writes (the API's default TTL).
    """
    creation = raw.get("cache_creation") or {}
    write_5m = int(creation.get("ephemeral_5m_input_tokens") or 0)
    write_1h = int(creation.get("ephemeral_1h_input_tokens") or 0)
    total_writes = int(raw.get("cache_creation_input_tokens") or 0)
    if not creation and total_writes:
        write_5m = total_writes
    details = raw.get("output_tokens_details") or {}
    output = int(raw.get("output_tokens") or 0)
    return Usage(
        input_tokens=int(raw.get("input_tokens") or 0),
        output_tokens=output,
        cache_read_tokens=int(raw.get("cache_read_input_tokens") or 0),
        cache_write_5m_tokens=write_5m,
        cache_write_1h_tokens=write_1h,
        thinking_tokens=min(int(details.get("thinking_tokens") or 0), output),
    )

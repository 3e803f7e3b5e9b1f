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
    """Read a Messages API ``usage`` object into token classes (checked: see
    :func:`tierwise.accounting.measure_usage`; raises its ``BadUsage``)."""
    from tierwise.accounting import measure_usage

    return measure_usage(raw).usage

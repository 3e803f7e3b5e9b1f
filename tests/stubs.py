"""In-process providers for unit tests of code above the provider seam.

End-to-end behaviour against the wire is tested with the fake Anthropic server and the official
SDK (see test_anthropic_wire.py); these stubs only stand in where a test needs a reply text or
a delay that a unit test should control directly.
"""

from __future__ import annotations

import asyncio

from tierwise.errors import ProviderError
from tierwise.providers.base import CallSpec
from tierwise.types import Completion, Usage


class ScriptedProvider:
    """Answers every call with ``text`` (after ``delay_s``), or raises ``error``."""

    name = "scripted"
    simulated = True

    def __init__(
        self,
        text: str = "",
        *,
        usage: Usage | None = None,
        delay_s: float = 0.0,
        error: ProviderError | None = None,
    ) -> None:
        self.text = text
        self.usage = usage or Usage(input_tokens=300, output_tokens=30)
        self.delay_s = delay_s
        self.error = error
        self.calls: list[CallSpec] = []

    async def complete(self, call: CallSpec) -> Completion:
        self.calls.append(call)
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if self.error is not None:
            raise self.error
        return Completion(
            text=self.text,
            model=call.model,
            usage=self.usage,
            stop_reason="end_turn",
            simulated=True,
        )

    async def aclose(self) -> None:
        return None

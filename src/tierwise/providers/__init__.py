"""Providers: where a routed request is actually answered.

``AnthropicProvider`` calls the Messages API through the official SDK; ``SimulatedProvider``
answers offline, deterministically, and marks everything it returns as simulated.
"""

from __future__ import annotations

from tierwise.providers.base import CallSpec, Provider
from tierwise.providers.simulated import SimulatedProvider

__all__ = ["CallSpec", "Provider", "SimulatedProvider", "make_provider"]

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tierwise.config import Settings


def make_provider(settings: Settings) -> Provider:
    """The provider the settings ask for: simulated when no API key is configured."""
    if settings.use_simulated_provider():
        return SimulatedProvider()
    from tierwise.providers.anthropic import AnthropicProvider  # imports the SDK lazily

    return AnthropicProvider(settings.provider)

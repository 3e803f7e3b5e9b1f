"""The HTTP gateway: Anthropic ``/v1/messages``, OpenAI ``/v1/chat/completions`` and
``/v1/responses`` in front of the router. ``build_app(settings)`` gives the ASGI app;
``tierwise serve`` runs it.

``build_app`` is imported on first use, so that modules of this package the rest of tierwise
reads (``tierwise.gateway.shape``) do not pull in the whole gateway and its dependencies.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tierwise.gateway.app import build_app

__all__ = ["build_app"]


def __getattr__(name: str) -> Any:
    if name == "build_app":
        from tierwise.gateway.app import build_app

        return build_app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

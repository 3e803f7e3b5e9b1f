"""The HTTP gateway: Anthropic ``/v1/messages`` and OpenAI ``/v1/chat/completions`` in front of
the router. ``build_app(settings)`` gives the ASGI app; ``tierwise serve`` runs it."""

from tierwise.gateway.app import build_app

__all__ = ["build_app"]

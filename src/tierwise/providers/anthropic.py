"""The Anthropic Messages API through the official ``anthropic`` SDK.

Honours ``ANTHROPIC_API_KEY`` and ``ANTHROPIC_BASE_URL`` (via :mod:`tierwise.config`). The SDK
does the retries (``max_retries``, honouring ``retry-after``); this module maps its errors onto
:class:`~tierwise.errors.ProviderError` with ``retryable`` set, and reads usage by price class.
The API key is handed to the SDK and never formatted into a message.
"""

from __future__ import annotations

from typing import Any

import anthropic

from tierwise.config import ProviderConfig
from tierwise.errors import ProviderError
from tierwise.providers.base import CallSpec, usage_from_api
from tierwise.types import Completion

_RETRYABLE_STATUSES = frozenset({408, 409, 429, 500, 502, 503, 504, 529})


class AnthropicProvider:
    name = "anthropic"
    simulated = False

    def __init__(self, config: ProviderConfig, *, client: anthropic.AsyncAnthropic | None = None):
        if client is None:
            if config.api_key is None:
                raise ProviderError("the Anthropic provider needs an API key (ANTHROPIC_API_KEY)")
            client = anthropic.AsyncAnthropic(
                api_key=config.api_key.get_secret_value(),
                base_url=config.base_url,
                max_retries=config.max_retries,
                timeout=config.timeout_s,
            )
        self._client = client
        self._timeout_s = config.timeout_s

    async def complete(self, call: CallSpec) -> Completion:
        body = call.body()
        # Pass an explicit timeout: it is what the SDK wants for large max_tokens without
        # streaming (it refuses max_tokens > 21,333 on the default timeout).
        timeout = call.timeout_s if call.timeout_s is not None else self._timeout_s
        try:
            message = await self._client.messages.create(**body, timeout=timeout)
        except anthropic.APIStatusError as exc:
            raise ProviderError(
                f"{call.model}: upstream returned {exc.status_code} "
                f"{_error_type(exc) or ''}: {_error_message(exc)}".replace("  ", " "),
                retryable=exc.status_code in _RETRYABLE_STATUSES or exc.status_code >= 500,
                status=exc.status_code,
                error_type=_error_type(exc),
            ) from exc
        except anthropic.APITimeoutError as exc:
            raise ProviderError(
                f"{call.model}: upstream timed out after {timeout:g}s",
                retryable=True,
                error_type="timeout_error",
            ) from exc
        except anthropic.APIConnectionError as exc:
            raise ProviderError(
                f"{call.model}: cannot reach upstream ({type(exc.__cause__ or exc).__name__})",
                retryable=True,
                error_type="connection_error",
            ) from exc
        content = [block.model_dump(mode="json", exclude_none=True) for block in message.content]
        text = "".join(block.get("text", "") for block in content if block.get("type") == "text")
        return Completion(
            text=text,
            model=message.model,
            usage=usage_from_api(message.usage.model_dump(mode="json")),
            stop_reason=message.stop_reason,
            simulated=False,
            request_id=getattr(message, "_request_id", None),
            content=content,
        )

    async def aclose(self) -> None:
        await self._client.close()


def _error_body(exc: anthropic.APIStatusError) -> dict[str, Any]:
    body = exc.body
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict):
            return inner
    return {}


def _error_type(exc: anthropic.APIStatusError) -> str | None:
    value = _error_body(exc).get("type")
    return value if isinstance(value, str) else None


def _error_message(exc: anthropic.APIStatusError) -> str:
    value = _error_body(exc).get("message")
    return value if isinstance(value, str) else exc.message

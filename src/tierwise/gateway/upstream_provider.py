"""The gateway's own upstream as a :class:`~tierwise.providers.base.Provider`, so classifiers
that call a model (the lesson's LLM classifier, the cascade) work inside the gateway: the call
goes through the same upstream client, retries, cooldowns and timeouts as the traffic, and its
usage is priced and charged to the request by the router.

Every failure is a :class:`~tierwise.errors.ProviderError` (the LLM classifier then falls back
to the default tier and records why); nothing else escapes.
"""

from __future__ import annotations

import time

import orjson

from tierwise.accounting import BadUsage, measure_usage
from tierwise.errors import ProviderError
from tierwise.gateway.anthropic_api import error_details
from tierwise.gateway.attempts import Caller, Exhausted
from tierwise.gateway.validate import BadUpstreamReply, check_message
from tierwise.lifecycle import Target
from tierwise.providers.base import CallSpec
from tierwise.types import Completion


class UpstreamProvider:
    name = "gateway-upstream"

    def __init__(self, caller: Caller, *, anthropic_version: str, timeout_s: float) -> None:
        self.caller = caller
        self.simulated = caller.upstream.simulated
        self.headers = {"anthropic-version": anthropic_version}
        self.timeout_s = timeout_s

    async def complete(self, call: CallSpec) -> Completion:
        payload = orjson.dumps(call.body())
        timeout_s = call.timeout_s or self.timeout_s
        try:
            attempt = await self.caller.call(
                [Target(None, call.model)],
                lambda _: payload,
                self.headers,
                path="/v1/messages",
                stream=False,
                deadline=time.perf_counter() + timeout_s,
            )
        except Exhausted as exc:
            raise ProviderError(str(exc), retryable=True, error_type=exc.kind) from exc
        reply = attempt.reply
        data = await reply.read()
        if reply.status != 200:
            kind, message, _ = error_details(data)
            raise ProviderError(
                f"{call.model} answered HTTP {reply.status}: {message}",
                status=reply.status,
                error_type=kind,
            )
        try:
            message_obj = check_message(data)
            usage = measure_usage(message_obj.get("usage")).usage
        except (BadUpstreamReply, BadUsage) as exc:
            raise ProviderError(f"{call.model} returned an invalid reply: {exc}") from exc
        content = message_obj["content"]
        text = "".join(b["text"] for b in content if b.get("type") == "text")
        model = message_obj.get("model")
        return Completion(
            text=text,
            model=model if isinstance(model, str) else call.model,
            usage=usage,
            stop_reason=message_obj.get("stop_reason"),
            simulated=self.simulated,
            request_id=reply.headers.get("request-id"),
            content=list(content),
        )

    async def aclose(self) -> None:
        return None

"""Where the gateway sends requests: the Anthropic API over HTTP, or the simulator.

``HttpUpstream`` keeps a pool of keep-alive connections (:mod:`tierwise.gateway.http1`) and
forwards bodies as bytes (never re-encoded here). ``SimulatedUpstream`` answers in the same
wire format (JSON or SSE) from the offline simulator, for laptops with no key. Both raise
:class:`UpstreamError` for failures that happened before a status line arrived (connection
errors, timeouts).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson

from tierwise.gateway.http1 import Pool
from tierwise.gateway.sse import message_to_sse
from tierwise.providers.base import CallSpec
from tierwise.providers.simulated import estimate_input_tokens, simulate


class UpstreamError(Exception):
    """No HTTP answer: ``kind`` is ``connection_error`` or ``timeout_error``."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass
class UpstreamReply:
    status: int
    headers: Mapping[str, str]
    body: bytes | None = None  # the whole body (non-streaming, or any error)
    chunks: AsyncIterator[bytes] | None = None  # the SSE body, as it arrives
    _release: Any = field(default=None, repr=False)

    async def read(self) -> bytes:
        if self.body is None and self.chunks is not None:
            self.body = b"".join([c async for c in self.chunks])
            self.chunks = None
        return self.body or b""

    def close(self) -> None:
        if self._release is not None:
            self._release()
            self._release = None


class Upstream(Protocol):
    simulated: bool

    async def post(
        self,
        path: str,
        body: bytes,
        headers: Mapping[str, str],
        *,
        stream: bool,
        timeout_s: float,
        deadline: float | None = None,
    ) -> UpstreamReply: ...

    async def aclose(self) -> None: ...


class HttpUpstream:
    """The real API (or anything wire-compatible) at ``base_url``, over pooled keep-alive
    connections (:mod:`tierwise.gateway.http1`)."""

    simulated = False

    def __init__(self, base_url: str, api_key: str, *, connect_timeout_s: float = 5.0) -> None:
        self._base = base_url.rstrip("/")
        self._api_key = api_key
        self._connect_timeout_s = connect_timeout_s
        self._pool: Pool | None = None

    def _client(self) -> Pool:
        if self._pool is None:
            self._pool = Pool(self._base, connect_timeout_s=self._connect_timeout_s)
        return self._pool

    async def post(
        self,
        path: str,
        body: bytes,
        headers: Mapping[str, str],
        *,
        stream: bool,
        timeout_s: float,
        deadline: float | None = None,
    ) -> UpstreamReply:
        pool = self._client()
        send_headers = {**headers, "x-api-key": self._api_key, "content-type": "application/json"}
        deadline = time.monotonic() + timeout_s
        try:
            response = await pool.post(path, body, send_headers, timeout_s)
        except TimeoutError as exc:
            raise UpstreamError(
                "timeout_error", f"upstream timed out after {timeout_s:g}s"
            ) from exc
        except OSError as exc:
            raise UpstreamError(
                "connection_error", f"cannot reach upstream: {type(exc).__name__}"
            ) from exc
        if not stream or response.status != 200:
            try:
                # Non-streaming: the whole exchange within timeout_s.
                data = await response.read(max(deadline - time.monotonic(), 0.001))
            except (TimeoutError, OSError) as exc:
                response.close()
                kind = "timeout_error" if isinstance(exc, TimeoutError) else "connection_error"
                raise UpstreamError(
                    kind, f"upstream reply interrupted: {type(exc).__name__}"
                ) from exc
            return UpstreamReply(response.status, response.headers, body=data)

        async def chunks() -> AsyncIterator[bytes]:
            try:
                async for chunk in response.iter(timeout_s):  # each piece within timeout_s
                    yield chunk
            except TimeoutError as exc:
                raise UpstreamError("timeout_error", "upstream stream stalled") from exc
            except OSError as exc:
                raise UpstreamError(
                    "connection_error", f"upstream stream broke: {type(exc).__name__}"
                ) from exc
            finally:
                response.close()

        return UpstreamReply(200, response.headers, chunks=chunks(), _release=response.close)

    async def aclose(self) -> None:
        if self._pool is not None:
            await self._pool.aclose()
            self._pool = None


class SimulatedUpstream:
    """Answers ``/v1/messages`` and ``/v1/messages/count_tokens`` offline, in the wire format."""

    simulated = True

    async def post(
        self,
        path: str,
        body: bytes,
        headers: Mapping[str, str],
        *,
        stream: bool,
        timeout_s: float,
        deadline: float | None = None,
    ) -> UpstreamReply:
        request_id = f"req_sim_{uuid.uuid4().hex[:20]}"
        base_headers = {"content-type": "application/json", "request-id": request_id}
        data = orjson.loads(body)
        thinking, config = data.get("thinking"), data.get("output_config")
        if not isinstance(thinking, dict | None) or not isinstance(config, dict | None):
            problem = "thinking" if not isinstance(thinking, dict | None) else "output_config"
            error = {
                "type": "error",
                "error": {
                    "type": "invalid_request_error",
                    "message": f"{problem}: Input should be an object",
                },
                "request_id": request_id,
            }
            return UpstreamReply(400, base_headers, body=orjson.dumps(error))
        call = CallSpec(
            model=data["model"],
            messages=data["messages"],
            max_tokens=int(data.get("max_tokens") or 1),
            system=_system_text(data.get("system")),
            thinking=thinking,
            output_config=config,
        )
        if path.endswith("/count_tokens"):
            tokens = estimate_input_tokens(call)
            return UpstreamReply(200, base_headers, body=orjson.dumps({"input_tokens": tokens}))
        completion = simulate(call)
        u = completion.usage
        message = {
            "id": f"msg_sim_{uuid.uuid4().hex[:20]}",
            "type": "message",
            "role": "assistant",
            "model": call.model,
            "content": completion.content,
            "stop_reason": completion.stop_reason,
            "stop_sequence": None,
            "usage": {
                "input_tokens": u.input_tokens,
                "output_tokens": u.output_tokens,
                "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": 0,
                "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 0},
                "service_tier": "standard",
                "output_tokens_details": {"thinking_tokens": u.thinking_tokens},
            },
        }
        await asyncio.sleep(0)
        if not stream:
            return UpstreamReply(200, base_headers, body=orjson.dumps(message))
        payload = message_to_sse(message)

        async def chunks() -> AsyncIterator[bytes]:
            yield payload

        return UpstreamReply(
            200, {"content-type": "text/event-stream", "request-id": request_id}, chunks=chunks()
        )

    async def aclose(self) -> None:
        return None


def _system_text(system: Any) -> str | None:
    if isinstance(system, str):
        return system
    if isinstance(system, list):
        return "\n".join(b.get("text", "") for b in system if isinstance(b, dict))
    return None

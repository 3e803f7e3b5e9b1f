"""The fake Anthropic API with answers that depend on the request, for shadow evaluation tests.

:class:`RespondingFake` is :class:`~tests.fakes.anthropic_server.FakeAnthropic` (the same wire
contract, validation, usage and streaming) whose reply *text* comes from ``respond(body)`` when
that returns a string (None: the fake's own reply). The text becomes a per-request script, so
concurrent requests never see each other's answers. ``hold(glob)`` makes requests for matching
models wait until ``release()`` (a slow reference model, without timing anything).

:func:`judge_sections` reads the two answers out of a tierwise judge prompt, so a fake judge
can decide on them.
"""

from __future__ import annotations

import asyncio
import contextvars
import fnmatch
import re
import threading
from collections.abc import Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from tests.fakes.anthropic_server import FakeAnthropic, RecordedRequest, _Script

Responder = Callable[[dict[str, Any]], str | None]
_REPLY: contextvars.ContextVar[str | None] = contextvars.ContextVar("reply", default=None)
_SECTION = re.compile(r"=== ANSWER (A|B) (\w+) ===\n(.*?)\n=== END ANSWER \1 \2 ===", re.S)


def judge_sections(content: str) -> dict[str, str]:
    """``{"A": text, "B": text}`` from a tierwise judge prompt."""
    return {m.group(1): m.group(3) for m in _SECTION.finditer(content)}


def is_judge_call(body: dict[str, Any]) -> bool:
    system = body.get("system")
    return isinstance(system, str) and "VERDICT: TIE" in system


def last_user_text(body: dict[str, Any]) -> str:
    for message in reversed(body.get("messages") or []):
        if message.get("role") != "user":
            continue
        content = message.get("content")
        if isinstance(content, str):
            return content
        return " ".join(
            b.get("text", "") for b in content if isinstance(b, dict) and b.get("type") == "text"
        )
    return ""


class RespondingFake(FakeAnthropic):
    def __init__(self, respond: Responder, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.respond = respond
        self._held: dict[str, threading.Event] = {}

    def hold(self, model_glob: str) -> None:
        """Requests for models matching ``model_glob`` wait until :meth:`release`."""
        self._held[model_glob] = threading.Event()

    def release(self) -> None:
        for event in self._held.values():
            event.set()
        self._held = {}

    async def _messages(self, request: Request, rec: RecordedRequest, request_id: str) -> Response:
        body = rec.json_body if isinstance(rec.json_body, dict) else {}
        model = body.get("model")
        for glob, event in list(self._held.items()):
            if isinstance(model, str) and fnmatch.fnmatchcase(model, glob):
                await asyncio.to_thread(event.wait, 30)
        text = self.respond(body) if body else None
        token = _REPLY.set(text)
        try:
            return await super()._messages(request, rec, request_id)
        finally:
            _REPLY.reset(token)

    def _claim_script(self, model: str, *, stream: bool, valid: bool) -> _Script | None:
        entry = super()._claim_script(model, stream=stream, valid=valid)
        text = _REPLY.get()
        if entry is None and text is not None and valid:
            return _Script(
                status=None,
                error_type=None,
                reply_text=text,
                usage=None,
                retry_after=None,
                stream_error=None,
                model_glob=model,
                headers={},
                remaining=0,
            )
        return entry

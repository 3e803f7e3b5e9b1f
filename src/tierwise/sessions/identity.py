"""Which session, and which conversation thread inside it, a request belongs to.

Sources of the session id, first match wins:

1. the ``x-tierwise-session`` request header (any client can set it);
2. ``metadata.user_id`` when it is a JSON object string holding ``session_id`` (Claude Code
   sends ``{"device_id": …, "account_uuid": …, "session_id": …}``; its earlier versions sent
   ``user_<hash>_account_<uuid>_session_<uuid>``, read too);
3. the ``x-claude-code-session-id`` header (Claude Code sends it too);
4. a fingerprint of the conversation's stable prefix: system prompt, tool names and the first
   user turn's own words. This applies only to requests worth remembering: with a system
   prompt, tools, or more than one message.

The *thread* separates conversations that share a session id. Claude Code's sub-agents run
under the main loop's session id, but each has its own system prompt, first user turn and
prompt cache. The thread is the fingerprint of the system prompt's head and the first user
turn.

Sessions are scoped: the ``scope`` (the gateway key's name) is part of the storage key, so one
key can never read or steer another key's session state. Session ids are bounded: one longer
than 128 characters, or with characters outside printable ASCII, is replaced by its hash.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import orjson

from tierwise.gateway.shape import RequestShape

SESSION_HEADER = "x-tierwise-session"
CLAUDE_CODE_HEADER = "x-claude-code-session-id"
MAX_ID_CHARS = 128
MAX_USER_ID_CHARS = 2_048

Source = Literal["header", "metadata", "agent-header", "fingerprint"]


@dataclass(frozen=True, slots=True)
class SessionKey:
    """A request's session (``session``), its conversation thread, and where the id came
    from. ``storage_key`` is what the store indexes by (scope, session and thread hashed)."""

    session: str
    thread: str
    source: Source
    scope: str = "-"

    @property
    def storage_key(self) -> str:
        raw = f"{self.scope}\x1f{self.session}\x1f{self.thread}".encode()
        return hashlib.blake2b(raw, digest_size=16).hexdigest()


def clean_id(value: str) -> str:
    """A session id safe to store, log and echo in a header (bounded, printable ASCII)."""
    value = value.strip()
    if 0 < len(value) <= MAX_ID_CHARS and value.isascii() and value.isprintable():
        return value
    return "h:" + hashlib.blake2b(value.encode(errors="replace"), digest_size=12).hexdigest()


def _header(headers: Mapping[str, str] | None, name: str) -> str | None:
    if headers is None:
        return None
    value = headers.get(name)
    if value is None:
        value = headers.get(name.title())
    return value if isinstance(value, str) and value.strip() else None


# Claude Code 1.x and early 2.x: "user_<hash>_account_<uuid or empty>_session_<uuid>".
_LEGACY_USER_ID = re.compile(r"_session_([0-9A-Za-z][0-9A-Za-z-]{7,63})$")


def metadata_session(body: Mapping[str, Any]) -> str | None:
    """The ``session_id`` inside a JSON ``metadata.user_id`` (or at the end of Claude Code's
    earlier ``user_…_account_…_session_<id>`` form), if there is one."""
    metadata = body.get("metadata")
    if not isinstance(metadata, dict):
        return None
    user_id = metadata.get("user_id")
    if not isinstance(user_id, str) or len(user_id) > MAX_USER_ID_CHARS:
        return None
    if not user_id.startswith("{"):
        legacy = _LEGACY_USER_ID.search(user_id)
        return legacy.group(1) if legacy else None
    try:
        parsed = orjson.loads(user_id)
    except orjson.JSONDecodeError:
        return None
    session = parsed.get("session_id") if isinstance(parsed, dict) else None
    return session if isinstance(session, str) and session.strip() else None


def identify(
    body: Mapping[str, Any],
    headers: Mapping[str, str] | None,
    shape: RequestShape,
    *,
    scope: str | None = None,
) -> SessionKey | None:
    """The request's session key, or None when it has no session (a lone message)."""
    where = scope or "-"
    explicit = _header(headers, SESSION_HEADER)
    if explicit is not None:
        return SessionKey(clean_id(explicit), shape.thread_fp, "header", where)
    from_metadata = metadata_session(body)
    if from_metadata is not None:
        return SessionKey(clean_id(from_metadata), shape.thread_fp, "metadata", where)
    from_agent = _header(headers, CLAUDE_CODE_HEADER)
    if from_agent is not None:
        return SessionKey(clean_id(from_agent), shape.thread_fp, "agent-header", where)
    has_system = body.get("system") not in (None, "", [])
    if has_system or shape.tools or shape.messages > 1:
        return SessionKey("fp:" + shape.stable_fp, shape.thread_fp, "fingerprint", where)
    return None

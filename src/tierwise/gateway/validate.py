"""Is an upstream reply one a client can use? Checks for non-streaming Messages replies and
error bodies, and the usage checks the stream tracker (:mod:`tierwise.gateway.sse`) shares.

A reply that fails :func:`check_message` must never reach a client as a success: the caller
treats it as an upstream error (retry, fall back, or a well-formed 502). Reasons are short and
never quote the upstream's bytes (they go to logs, the ledger and the client's error message).
"""

from __future__ import annotations

import json
import re
from typing import Any

import orjson

# The documented ``error.type`` values (wire reference §5.1; the SDK's ErrorType literal plus
# request_too_large). Anything else collapses to ``api_error``, so labels stay a bounded set.
ERROR_TYPES = frozenset(
    {
        "invalid_request_error",
        "authentication_error",
        "billing_error",
        "permission_error",
        "not_found_error",
        "conflict_error",
        "request_too_large",
        "rate_limit_error",
        "api_error",
        "timeout_error",
        "overloaded_error",
        "memory_precondition_failed_error",
        "memory_path_conflict_error",
    }
)
MALFORMED_ERROR = "malformed_error"  # an error status whose body is not a documented error
UNEXPECTED_STATUS = "unexpected_status"  # 1xx/2xx/3xx that is not a success, no error body

_TYPE_SHAPE = re.compile(r"[a-z][a-z0-9_]{0,39}")  # a type name worth showing or keeping

USAGE_COUNTERS = (
    "input_tokens",
    "output_tokens",
    "cache_creation_input_tokens",
    "cache_read_input_tokens",
)
USAGE_DETAILS = ("cache_creation", "output_tokens_details", "server_tool_use")


class BadUpstreamReply(ValueError):
    """The upstream answered 200 with a body that is not a usable Messages reply.

    ``reason`` is short and safe to show (it never quotes the body)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _FloatSeen(Exception):
    """A usage counter parsed as a float: maybe an integer literal beyond 64 bits (orjson
    reads those as floats), so the body is parsed again exactly."""


_KINDS = {str: "a string", list: "a list", dict: "an object", type(None): "null"}


def show(value: Any) -> str:
    """A short description of an unexpected value (bounded, for messages)."""
    if isinstance(value, bool):
        return f"a boolean ({str(value).lower()})"
    if isinstance(value, int):
        return str(value) if value.bit_length() < 64 else "a huge integer"
    if isinstance(value, float):
        return f"a number with a fraction ({value!r})"[:60]
    return _KINDS.get(type(value), type(value).__name__)


def _is_count(value: Any) -> bool:
    return type(value) is int and value >= 0


def usage_problem(usage: Any, required: tuple[str, ...] = ()) -> str | None:
    """Why ``usage`` is not a usage object of non-negative integers, or None.

    ``required``: counters that must be present (not null). Counters may be null otherwise;
    the detail objects (``cache_creation``, ``output_tokens_details``, ``server_tool_use``)
    must be objects of non-negative integers (or null). Raises :class:`_FloatSeen` for a
    float, so the caller can re-parse exactly (see :func:`loads_exact`)."""
    if not isinstance(usage, dict):
        return f"usage is {show(usage)}, not an object"
    for key in required:
        if usage.get(key) is None:
            return f"usage.{key} is missing"
    for key in USAGE_COUNTERS:
        value = usage.get(key)
        if value is not None and not _is_count(value):
            if type(value) is float:
                raise _FloatSeen
            return f"usage.{key} is {show(value)}, not a non-negative integer"
    for key in USAGE_DETAILS:
        detail = usage.get(key)
        if detail is None:
            continue
        if not isinstance(detail, dict):
            return f"usage.{key} is {show(detail)}, not an object"
        for name, value in detail.items():
            if value is not None and not _is_count(value):
                if type(value) is float:
                    raise _FloatSeen
                return f"usage.{key}.{str(name)[:40]} is {show(value)}, not a non-negative integer"
    return None


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def loads_exact(data: bytes) -> Any:
    """Parse JSON keeping integer literals of any size as ``int`` (orjson turns those beyond
    64 bits into floats). Used only on the rare path where a counter parsed as a float."""
    return json.loads(data, parse_constant=_reject_constant)


def checked_usage(
    usage: Any, data: bytes, locate: Any, required: tuple[str, ...] = ()
) -> tuple[Any, str | None]:
    """``usage`` (re-read exactly from ``data`` when a counter parsed as a float) and why it
    is not valid (or None). ``locate`` finds the usage in the exactly parsed object."""
    try:
        return usage, usage_problem(usage, required)
    except _FloatSeen:
        pass
    try:
        usage = locate(loads_exact(data))
    except ValueError:  # integers beyond Python's digit limit, and the like
        return usage, "usage holds a number that cannot be read"
    try:
        return usage, usage_problem(usage, required)
    except _FloatSeen:
        return usage, "usage holds a number with a fraction, not a non-negative integer"


def json_problem(data: bytes, exc: orjson.JSONDecodeError) -> str:
    """Why ``data`` is not JSON, in a few words (never quoting it)."""
    if not data.strip():
        return "the body is empty"
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as bad:
        return f"the body is not valid UTF-8 (byte {bad.start})"
    return f"the body is not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})"


def _block_problem(i: int, block: Any) -> str | None:
    where = f"content[{i}]"
    if not isinstance(block, dict):
        return f"{where} is {show(block)}, not an object"
    kind = block.get("type")
    if not isinstance(kind, str):
        return f"{where}.type is {show(kind)}, not a string"
    fields: tuple[tuple[str, type], ...] = ()
    if kind == "text":
        fields = (("text", str),)
        citations = block.get("citations")
        if citations is not None and not isinstance(citations, list):
            return f"{where}.citations is {show(citations)}, not a list"
    elif kind in ("tool_use", "server_tool_use"):
        fields = (("id", str), ("name", str), ("input", dict))
    elif kind == "thinking":
        fields = (("thinking", str), ("signature", str))
    elif kind == "redacted_thinking":
        fields = (("data", str),)
    for name, expected in fields:
        value = block.get(name)
        if not isinstance(value, expected):
            wanted = "a string" if expected is str else "an object"
            return f"{where}.{name} ({kind} block) is {show(value)}, not {wanted}"
    return None


def check_message(data: bytes) -> dict[str, Any]:
    """The Messages reply in ``data`` (a 200's body), checked; raises
    :class:`BadUpstreamReply` with a short reason when a client could not use it.

    Checked: UTF-8 JSON (no NaN/Infinity), an object with ``type == "message"``,
    ``role == "assistant"``, string ``id`` and ``model``, ``content`` a list of objects with a
    string ``type`` (text blocks with string ``text``; ``tool_use`` with string ``id``/``name``
    and object ``input``; ``thinking`` with string ``thinking``/``signature``),
    ``stop_reason`` a string or null, ``usage`` an object with non-negative integer token
    counts (``input_tokens`` and ``output_tokens`` required). Counts beyond 64 bits stay
    integers (clamping them is the accounting's job)."""
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise BadUpstreamReply(json_problem(data, exc)) from exc
    if not isinstance(obj, dict):
        raise BadUpstreamReply(f"the body is {show(obj)}, not a JSON object")
    kind = obj.get("type")
    if kind == "error":
        raise BadUpstreamReply("the body is an error object, sent with a success status")
    if kind != "message":
        shown = repr(kind) if isinstance(kind, str) and _TYPE_SHAPE.fullmatch(kind) else show(kind)
        raise BadUpstreamReply(f"type is {shown}, not 'message'")
    if obj.get("role") != "assistant":
        raise BadUpstreamReply("role is not 'assistant'")
    for name in ("id", "model"):
        if not isinstance(obj.get(name), str):
            raise BadUpstreamReply(f"{name} is {show(obj.get(name))}, not a string")
    content = obj.get("content")
    if not isinstance(content, list):
        raise BadUpstreamReply(f"content is {show(content)}, not a list")
    for i, block in enumerate(content):
        problem = _block_problem(i, block)
        if problem is not None:
            raise BadUpstreamReply(problem)
    stop = obj.get("stop_reason")
    if stop is not None and not isinstance(stop, str):
        raise BadUpstreamReply(f"stop_reason is {show(stop)}, not a string")
    usage, problem = checked_usage(
        obj.get("usage"),
        data,
        lambda exact: exact.get("usage"),
        ("input_tokens", "output_tokens"),
    )
    if problem is not None:
        raise BadUpstreamReply(problem)
    obj["usage"] = usage
    return obj


def error_type_of(status: int, data: bytes) -> str:
    """The ``error.type`` of an upstream reply that is not a success.

    A well-formed error body (``{"type": "error", "error": {"type": …, "message": …}}``, also
    inside a 200) gives its type: one of :data:`ERROR_TYPES`, or ``api_error`` for a type not
    documented there (labels stay a bounded set). Otherwise: :data:`MALFORMED_ERROR` for an
    error status (4xx/5xx) whose body is not such an error, :data:`UNEXPECTED_STATUS` for any
    other status (a 3xx redirect, a 204 …)."""
    fallback = MALFORMED_ERROR if status >= 400 else UNEXPECTED_STATUS
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError:
        return fallback
    if not isinstance(obj, dict) or obj.get("type") != "error":
        return fallback
    error = obj.get("error")
    if not isinstance(error, dict):
        return fallback
    kind = error.get("type")
    if not isinstance(kind, str) or not isinstance(error.get("message", ""), str):
        return fallback
    if kind in ERROR_TYPES:
        return kind
    return "api_error" if _TYPE_SHAPE.fullmatch(kind) else fallback

"""Reading recorded traffic for ``tierwise replay``: files, directories, captured exchanges,
Claude Code's session transcripts.

A trace is JSON lines (optionally gzip-compressed), a JSON document (one object or an array of
objects, e.g. a ``.json`` file), or a directory of such files, read with its subdirectories in
path order. A file of JSON lines that is a Claude Code session transcript
(``~/.claude/projects/…``) is read as a whole by :mod:`tierwise.sessions.transcripts`: its
records are the model calls rebuilt from it. Otherwise each record is one of:

* a Messages request body, ``{"body": …}`` line or compact-trace line (see
  :mod:`tierwise.sessions.replay`);
* a **captured HTTP exchange**, ``{"request": {…}, "response": {…}}``, as capture tools write
  them: claude-trace's ``.claude-trace/log-*.jsonl`` (``request.url``, ``request.timestamp``
  in seconds, ``request.headers`` and parsed ``request.body``; ``response.status_code`` and
  either a JSON ``response.body`` or the raw event stream in ``response.body_raw``) and
  tierwise's own recorder (``tests/clients/record_claude_code.py``: ``request.target``,
  headers as ``[name, value]`` pairs), and the entries of a HAR file (browser devtools,
  mitmproxy, Charles: ``log.entries[].request.postData.text``, ``startedDateTime``,
  ``response.content.text``, base64 or not). :func:`exchange` turns one into a request line: the
  body, its headers, its time, and the usage and stop reason the upstream reported (read from
  the JSON reply, or from the stream's ``message_start`` and final ``message_delta``).

A captured exchange is skipped, and counted with the reason, when it is not a Messages call
(``count_tokens``, telemetry, a ``GET``) or when the upstream refused it (an HTTP error, an
error reply or a stream that ended in an error event): such an attempt was not billed, and
the client's retry is in the trace as its own exchange. An exchange with no reply recorded
(cut off) is replayed with estimated usage.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson

from tierwise.errors import InputError

MAX_LINE_BYTES = 64 * 1024 * 1024
MAX_DOCUMENT_BYTES = 256 * 1024 * 1024
MAX_FILE_BYTES = 2 * 1024 * 1024 * 1024  # one trace file, decompressed
TRACE_SUFFIXES = (".jsonl", ".json", ".har", ".jsonl.gz", ".json.gz", ".har.gz", ".gz")
NOT_TRACES = (".meta.json",)


@dataclass(frozen=True, slots=True)
class Skipped:
    """A record of a trace that is not a billed request, and why (counted, not replayed)."""

    reason: str


def _read(path: Path, limit: int | None = None) -> bytes:
    """The file's bytes, decompressed when gzipped; more than ``limit`` (default
    ``MAX_FILE_BYTES``) either way is an error, so a gzip bomb stops at the limit."""
    limit = MAX_FILE_BYTES if limit is None else limit
    try:
        with path.open("rb") as handle:
            raw = handle.read(limit + 1)
    except OSError as exc:
        raise InputError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    if raw[:2] == b"\x1f\x8b":
        inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)
        try:
            out = inflate.decompress(raw, limit + 1)
            # a file of several gzip members, as `cat a.gz b.gz` writes
            while inflate.eof and inflate.unused_data and len(out) <= limit:
                rest = inflate.unused_data
                inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)
                out += inflate.decompress(rest, limit + 1 - len(out))
        except zlib.error as exc:
            raise InputError(f"{path}: not a valid gzip file: {exc}") from exc
        if len(out) <= limit and not inflate.eof:
            raise InputError(f"{path}: not a valid gzip file: it ends before its end of stream")
        raw = out
    if len(raw) > limit:
        raise InputError(f"{path}: larger than {limit} bytes (decompressed); replay it in parts")
    return raw


def trace_files(path: Path) -> list[Path]:
    """``path`` itself, or the trace files in a directory and its subdirectories (path order;
    Claude Code keeps a sub-agent's transcript in ``<session>/subagents/``, next to a
    ``.meta.json`` that is not a trace)."""
    if not path.is_dir():
        return [path]
    files = sorted(
        p
        for p in path.rglob("*")
        if p.is_file() and p.name.endswith(TRACE_SUFFIXES) and not p.name.endswith(NOT_TRACES)
    )
    if not files:
        raise InputError(f"{path}: a directory with no trace files ({', '.join(TRACE_SUFFIXES)})")
    return files


def records(path: Path) -> Iterator[tuple[str, Any]]:
    """``(where, record)`` for every record of a trace file or directory: the parsed JSON
    value, a captured exchange or a transcript's model call as a request line
    (``{"body", …}``), or :class:`Skipped` for one that is not a billed Messages request."""
    seen: set[str] = set()  # replies rebuilt from transcripts' conversations, by message id
    for file in trace_files(path):
        for where, obj in _file_records(file, seen):
            if isinstance(obj, dict) and is_exchange(obj):
                try:
                    line = exchange(obj)
                except ValueError as exc:
                    raise InputError(f"{where}: {exc}") from exc
                yield where, Skipped(line) if isinstance(line, str) else line
            else:
                yield where, obj


def _file_records(path: Path, seen: set[str]) -> Iterator[tuple[str, Any]]:
    raw = _read(path)
    stripped = raw.lstrip()
    if stripped[:1] == b"[" or (stripped[:1] == b"{" and b"\n" in raw.strip()):
        # A JSON document (an array, one pretty-printed object, a HAR file) unless it turns
        # out to be JSON lines.
        document = _document(path, raw)
        if document is not None:
            yield from document
            return
    lines = list(_json_lines(path, raw))
    from tierwise.sessions import transcripts  # here: it imports this module

    if not transcripts.is_transcript(lines):
        yield from lines
        return
    for where, line in transcripts.requests(lines, seen):
        yield where, Skipped(line) if isinstance(line, str) else line


def _json_lines(path: Path, raw: bytes) -> Iterator[tuple[str, Any]]:
    for number, line in enumerate(raw.split(b"\n"), start=1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        if len(line) > MAX_LINE_BYTES:
            raise InputError(f"{where}: line longer than {MAX_LINE_BYTES} bytes")
        try:
            yield where, orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise InputError(f"{where}: not valid JSON ({exc})") from exc


def _document(path: Path, raw: bytes) -> list[tuple[str, Any]] | None:
    """The records of a whole-file JSON document, or None when the file is not one (then
    it is read as JSON lines). A ``.json`` or ``.har`` file must be one."""
    document = path.name.endswith((".json", ".json.gz", ".har", ".har.gz"))
    if len(raw) > MAX_DOCUMENT_BYTES:
        if document:
            raise InputError(f"{path}: a JSON document larger than {MAX_DOCUMENT_BYTES} bytes")
        return None
    try:
        whole = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        if document:
            raise InputError(f"{path}: not valid JSON ({exc})") from exc
        return None
    if isinstance(whole, list):
        return [(f"{path}[{index}]", item) for index, item in enumerate(whole)]
    if not isinstance(whole, dict):
        return None
    entries = _har_entries(whole)
    if entries is None:
        return [(str(path), whole)]
    return [(f"{path}: log.entries[{index}]", entry) for index, entry in enumerate(entries)]


def _har_entries(doc: dict[str, Any]) -> list[Any] | None:
    """A HAR file's entries (browser devtools, mitmproxy, Charles), as captured exchanges;
    None when ``doc`` is not a HAR document."""
    log = doc.get("log")
    if not isinstance(log, dict) or not isinstance(log.get("entries"), list):
        return None
    return [_har_exchange(e) if isinstance(e, dict) else e for e in log["entries"]]


def _har_exchange(entry: dict[str, Any]) -> dict[str, Any]:
    request = _object(entry.get("request"))
    post = _object(request.get("postData"))
    out: dict[str, Any] = {
        "request": {
            "method": request.get("method"),
            "url": request.get("url"),
            "headers": request.get("headers"),
            "body": post.get("text"),
            "timestamp": entry.get("startedDateTime"),
        }
    }
    response = entry.get("response")
    if isinstance(response, dict):
        content = _object(response.get("content"))
        text = content.get("text")
        if isinstance(text, str) and content.get("encoding") == "base64":
            try:
                text = base64.b64decode(text, validate=True).decode("utf-8", "replace")
            except ValueError:
                text = None
        reply: dict[str, Any] = {"status_code": response.get("status")}
        if isinstance(text, str) and "event:" in text[:4096]:
            reply["body_raw"] = text
        elif isinstance(text, str) and text.strip():
            with contextlib.suppress(orjson.JSONDecodeError):
                reply["body"] = orjson.loads(text)
        out["response"] = reply
    return out


def _object(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


# -- captured exchanges --------------------------------------------------------------------
def is_exchange(obj: dict[str, Any]) -> bool:
    """A captured exchange: a ``request`` object holding the body, no top-level body."""
    request = obj.get("request")
    return isinstance(request, dict) and "body" in request and "messages" not in obj


def exchange(obj: dict[str, Any]) -> dict[str, Any] | str:
    """The request line for a captured exchange, or why it is skipped (a short reason)."""
    request = obj["request"]
    method = request.get("method")
    if isinstance(method, str) and method.upper() != "POST":
        return "not a Messages call"
    target = request.get("url") or request.get("target") or request.get("path")
    if isinstance(target, str) and not urlsplit(target).path.rstrip("/").endswith("/v1/messages"):
        return "not a Messages call"
    body = request.get("body")
    if isinstance(body, str | bytes):
        try:
            body = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise ValueError(f"request.body is not JSON ({exc})") from exc
    if not isinstance(body, dict):
        raise ValueError("request.body is not a JSON object")
    line: dict[str, Any] = {"body": body, "headers": _headers(request.get("headers"))}
    t = seconds(request.get("timestamp"))
    if t is None:
        t = seconds(obj.get("t") if "t" in obj else obj.get("logged_at"))
    if t is not None:
        line["t"] = t
    if obj.get("session") is not None:
        line["session"] = obj["session"]
    response = obj.get("response")
    if response is None:
        return line  # no reply recorded: replayed with estimated usage
    if not isinstance(response, dict):
        raise ValueError("response is not a JSON object")
    outcome = _outcome(response)
    if isinstance(outcome, str):
        return outcome
    if outcome:
        line["response"] = outcome
    return line


def _headers(value: Any) -> dict[str, str]:
    if isinstance(value, dict):
        return {str(k): str(v) for k, v in value.items()}
    out: dict[str, str] = {}
    for item in value if isinstance(value, list) else ():
        if isinstance(item, list | tuple) and len(item) == 2:
            out[str(item[0])] = str(item[1])
        elif isinstance(item, dict) and "name" in item:  # HAR: {"name", "value"}
            out[str(item["name"])] = str(item.get("value", ""))
    return out


def seconds(value: Any) -> float | None:
    """Seconds since the epoch from a number (seconds, or milliseconds when that large) or
    an ISO 8601 string; None when absent or unreadable."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value) / 1000.0 if value > 1e11 else float(value)
    if isinstance(value, str) and value:
        try:
            when = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=dt.UTC)
        return when.timestamp()
    return None


def _outcome(response: dict[str, Any]) -> dict[str, Any] | str:
    """``{"usage", "stop_reason"}`` from a recorded reply, or why the attempt is skipped."""
    status = response.get("status_code", response.get("status"))
    if isinstance(status, int) and not isinstance(status, bool) and status >= 400:
        return f"refused by the upstream (HTTP {status})"
    body = response.get("body")
    if isinstance(body, dict):
        if body.get("type") == "error":
            return "refused by the upstream (error reply)"
        usage = body.get("usage")
        if isinstance(usage, dict):
            return {"usage": usage, "stop_reason": body.get("stop_reason")}
        return {}
    raw = response.get("body_raw")
    if isinstance(raw, str) and "event:" in raw:
        return _stream_outcome(raw.encode("utf-8", "replace"))
    return {}


def _stream_outcome(raw: bytes) -> dict[str, Any] | str:
    """Usage and stop reason of a recorded Messages event stream, read with the gateway's
    strict stream reader. A stream that ended in an error event was not a reply."""
    from tierwise.gateway.sse import EventSplitter, MalformedEvent, StreamTracker

    tracker = StreamTracker()
    splitter = EventSplitter(max_event_bytes=max(len(raw) + 1, 1))
    try:
        for event in [*splitter.feed(raw), *splitter.feed(b"\n\n")]:
            tracker.observe(event.name, event.data)
            if tracker.error is not None:
                return "refused by the upstream (stream error event)"
    except MalformedEvent as exc:
        raise ValueError(f"response.body_raw is not a valid Messages stream: {exc}") from exc
    if not tracker.started:
        return {}
    return {"usage": tracker.usage, "stop_reason": tracker.stop_reason}

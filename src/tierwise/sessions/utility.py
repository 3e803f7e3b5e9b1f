"""Utility side requests: titles, summaries, classifications asked for in structured output.

Agents send small side requests next to their main loop. Claude Code's session title is one:
no tools, ``output_config.format`` set to a JSON schema ``{title}``, the first prompt wrapped
in ``<session>…</session>``, ``max_tokens`` 32000 and effort ``high``. It is sent on the main
model, so an ``auto`` session's title can end up on the top tier with thinking. Whatever the
content, such a request needs only the cheapest tier, without thinking.

A request is a utility request when all of these hold:

- no tools and no forced tool choice;
- structured output (``output_config.format``) with a small flat schema: at most
  ``MAX_PROPERTIES`` top-level properties, none of them an object or an array of objects;
- a short instruction: the user's own words plus the caller's system prompt, not counting
  data wrapped in a tag (``<session>…</session>``), at most ``max_instruction_chars``;
- the schema asks for a title (a ``title`` property), a summary (``summary``, ``tldr``), or a
  label (every property an enum or a boolean, or a property named like one:
  ``category``, ``label``, ``sentiment`` …).

Anything else, including a structured extraction with a larger schema, goes to the classifier
as usual.
"""

from __future__ import annotations

from tierwise.gateway.shape import RequestShape

MAX_PROPERTIES = 4
DEFAULT_MAX_INSTRUCTION_CHARS = 4_000

_SUMMARY = frozenset({"summary", "tldr", "abstract", "gist"})
_LABEL = frozenset(
    {
        "label",
        "labels",
        "category",
        "categories",
        "class",
        "classification",
        "sentiment",
        "topic",
        "intent",
        "tag",
        "tags",
        "is_new_topic",
        "isnewtopic",
        "language",
    }
)


def _small_structured(shape: RequestShape, max_instruction_chars: int) -> bool:
    fmt = shape.output_format
    return (
        not shape.tools
        and not shape.forced_tool
        and fmt is not None
        and 0 < len(fmt.properties) <= MAX_PROPERTIES
        and fmt.flat
        and shape.instruction_chars <= max_instruction_chars
    )


def utility_kind(
    shape: RequestShape, max_instruction_chars: int = DEFAULT_MAX_INSTRUCTION_CHARS
) -> str | None:
    """``"title"``, ``"summary"`` or ``"classification"`` for a utility request, else None."""
    fmt = shape.output_format
    if fmt is None or not _small_structured(shape, max_instruction_chars):
        return None
    names = {p.lower() for p in fmt.properties}
    if "title" in names:
        return "title"
    if names & _SUMMARY:
        return "summary"
    if fmt.enums == len(fmt.properties) or names & _LABEL:
        return "classification"
    return None

"""What the ``tierwise`` commands print, in one place: tables that fit the terminal without
cutting a model id or an amount of money, long text wrapped under its label, and errors as one
line each.

At the terminal's width (80 columns when it is unknown), tables use short headers and a light
frame; identifiers and money are never cut: their columns do not wrap, and the columns that
may wrap (names, reasons) give way first. ``--wide`` prints everything at full width with the
long headers, whatever the terminal is.
"""

from __future__ import annotations

import textwrap
from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

WIDE_COLUMNS = 10_000  # --wide: as wide as the content needs


def console(*, wide: bool = False, stderr: bool = False) -> Console:
    """A console for one command's output (``wide``: no width limit)."""
    return Console(stderr=stderr, width=WIDE_COLUMNS if wide else None, highlight=False)


def table(*, wide: bool) -> Table:
    """An empty table in the house style: framed when wide, light at the terminal's width."""
    if wide:
        return Table(box=box.ROUNDED, header_style="bold")
    return Table(
        box=box.SIMPLE_HEAD,
        show_edge=False,
        pad_edge=False,
        header_style="bold",
        collapse_padding=True,
    )


def add_columns(grid: Table, columns: list[tuple[str, str, dict[str, Any]]]) -> None:
    """``(header, kind, options)`` per column; ``kind`` is ``id`` (never cut, left), ``money``
    and ``number`` (never cut, right), or ``text`` (may wrap, left)."""
    for header, kind, options in columns:
        keep_whole = kind in ("id", "money", "number")
        grid.add_column(
            header,
            justify="right" if kind in ("money", "number") else "left",
            no_wrap=keep_whole,
            overflow="fold",
            **options,
        )


def wrapped(label: str, text: str, *, indent: int, width: int | None) -> str:
    """``label`` then ``text``, wrapped at ``width`` with each further line indented to where
    the text began (``width`` None: one line)."""
    head = " " * indent + label
    if width is None:
        return head + text
    return textwrap.fill(
        text,
        width=max(width, len(head) + 20),
        initial_indent=head,
        subsequent_indent=" " * len(head),
        break_long_words=False,
        break_on_hyphens=False,
    )


def text_width(out: Console, *, wide: bool) -> int | None:
    """The width prose is wrapped at (None with --wide: never wrapped)."""
    return None if wide else out.width


def print_error(message: str, *, hint: str = "") -> None:
    """``error: …`` on stderr: one line per line of ``message``, never wrapped."""
    err = Console(stderr=True, highlight=False)
    lines = [line for line in str(message).splitlines() if line.strip()] or ["(no message)"]
    if hint:
        lines[-1] += f" ({hint})"
    for line in lines:
        err.print(Text.assemble(("error: ", "bold red"), line.strip()), soft_wrap=True)

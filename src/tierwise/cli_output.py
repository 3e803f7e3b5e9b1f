"""What the ``tierwise`` commands print, in one place: tables that fit the terminal without
cutting a model id or an amount of money, long text wrapped under its label, and errors as one
line each.

At the terminal's width (80 columns when it is unknown), tables use short headers, and lose
their frame when that is what makes them fit; no cell is ever wrapped or cut (model ids, key
names, amounts of money). A table that still does not fit (very long ids, very large amounts)
is printed as one block per row instead.
``--wide`` prints every table whole and framed, with the long headers, whatever the terminal
is.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass

from rich import box
from rich.console import Console
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

WIDE_COLUMNS = 10_000  # --wide: as wide as the content needs
NBSP = "\u00a0"  # keeps a header and its value together when a row is wrapped


def console(*, wide: bool = False, stderr: bool = False) -> Console:
    """A console for one command's output (``wide``: no width limit)."""
    return Console(stderr=stderr, width=WIDE_COLUMNS if wide else None, highlight=False)


@dataclass(frozen=True)
class Column:
    """One column: its header, and ``kind``: ``id`` (left) or ``money`` / ``number`` (right).
    No cell is ever wrapped or cut."""

    header: str
    kind: str = "id"


def _table(columns: list[Column], rows: list[list[str]], *, framed: bool, total: bool) -> Table:
    if framed:
        grid = Table(box=box.HEAVY_HEAD, header_style="bold")
    else:
        grid = Table(
            box=box.SIMPLE_HEAD,
            show_edge=False,
            pad_edge=False,
            header_style="bold",
            collapse_padding=True,
        )
    for column in columns:
        grid.add_column(
            column.header,
            justify="right" if column.kind in ("money", "number") else "left",
            no_wrap=True,
            overflow="fold",
        )
    for index, row in enumerate(rows):
        grid.add_row(*row, end_section=total and index == len(rows) - 2)
    return grid


def print_table(
    out: Console,
    columns: list[Column],
    rows: list[list[str]],
    *,
    wide: bool,
    total: bool = False,
) -> None:
    """A framed table when it fits the console (always with ``wide``), else a lighter one
    without the frame, else one block per row: the first cell as a heading, then
    ``header value`` pairs wrapped under it, so that no identifier or amount is ever cut.
    ``total``: the last row is a total (a rule above it)."""
    for framed in (True,) if wide else (True, False):
        grid = _table(columns, rows, framed=framed, total=total)
        width = Measurement.get(out, out.options.update(width=WIDE_COLUMNS), grid).maximum
        if wide or width <= out.width or not rows:
            out.print(grid)
            return
    for row in rows:
        out.print(Text(row[0], style="bold"), soft_wrap=True)
        pairs = [
            f"{column.header.replace(chr(10), ' ')} {cell}".replace(" ", NBSP)
            for column, cell in zip(columns[1:], row[1:], strict=True)
        ]
        body = textwrap.fill(
            "   ".join(pairs),
            width=out.width,
            initial_indent="    ",
            subsequent_indent="    ",
            break_long_words=False,
            break_on_hyphens=False,
        )
        out.print(body.replace(NBSP, " "), soft_wrap=True, markup=False)


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

"""Progress on stderr for long commands (``train``, ``eval``, ``calibrate``): one line per stage
with its bar, count, elapsed time and an estimate of the time left, and a header line saying
which stage of how many is running. Nothing is written to stdout, so ``--json`` stays clean;
on a non-terminal stderr rich prints no live updates.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

Advance = Callable[..., None]


def _columns() -> tuple[object, ...]:
    return (
        TextColumn("{task.description}"),
        BarColumn(bar_width=24),
        MofNCompleteColumn(),
        TextColumn("elapsed"),
        TimeElapsedColumn(),
        TextColumn("left ~"),
        TimeRemainingColumn(),
    )


class Stages:
    """A sequence of named stages, shown as they run (``with Stages(console, names) as s:``
    then ``with s.stage(name, total) as advance: … advance()``)."""

    def __init__(self, console: Console, names: Sequence[str], *, transient: bool = False):
        self.names = list(names)
        self._progress = Progress(*_columns(), console=console, transient=transient)  # type: ignore[arg-type]
        self._done = 0

    def __enter__(self) -> Stages:
        self._progress.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.__exit__(None, None, None)

    @contextlib.contextmanager
    def stage(self, name: str, total: float | None = None) -> Iterator[Advance]:
        """One stage; yields ``advance(n=1)``. ``total`` None shows an indeterminate bar."""
        number = self.names.index(name) + 1 if name in self.names else self._done + 1
        label = f"[{number}/{max(len(self.names), number)}] {name}"
        task: TaskID = self._progress.add_task(label, total=total)
        progress = self._progress

        def advance(n: float = 1.0, *, total: float | None = None) -> None:
            if total is not None:
                progress.update(task, total=total)
            progress.advance(task, n)

        try:
            yield advance
        finally:
            t = progress.tasks[[x.id for x in progress.tasks].index(task)]
            progress.update(task, total=t.total or t.completed or 1, completed=t.total or 1)
            self._done += 1


def unwrap(doc: str | None) -> str:
    """A docstring as command help: each paragraph on one line, so the terminal wraps it (the
    help renderer keeps single newlines, which broke lines mid-sentence)."""
    import inspect

    text = inspect.cleandoc(doc or "")
    return "\n\n".join(" ".join(p.split()) for p in text.split("\n\n"))


@contextlib.contextmanager
def bar(console: Console, label: str, total: int) -> Iterator[Callable[[], None]]:
    """A single progress bar with an estimate of the time left; yields ``tick()``."""
    with Stages(console, [label], transient=True) as stages, stages.stage(label, total) as adv:
        yield adv

"""Rich progress bars for every step that takes more than a moment.

Nothing printed through this console is parsed as rich markup: messages carry user text (paths, data
specs like ``hf:NAME[/CONFIG]``) that would otherwise be read as tags, or crash the printer.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

console = Console(stderr=True, markup=False)


@contextmanager
def progress_bar(description: str, total: int | None, eta: bool = False) -> Iterator[Callable[[int], None]]:
    """Show a bar while the block runs; yields ``advance(n)``. ``eta`` adds the estimated time remaining."""
    columns: list[ProgressColumn] = [TextColumn("{task.description}", style="bold", markup=False), BarColumn(),
                                     MofNCompleteColumn(), TimeElapsedColumn()]
    if eta:
        columns.append(TimeRemainingColumn())
    with Progress(*columns, console=console, transient=False) as bar:
        task = bar.add_task(description, total=total)

        def advance(n: int = 1) -> None:
            bar.advance(task, n)

        yield advance
        if total is None:
            bar.update(task, total=1, completed=1)


@contextmanager
def status(message: str) -> Iterator[None]:
    """A spinner for a single long call without countable progress (e.g. loading a model)."""
    with console.status(Text(message)):  # a str status is always parsed as markup
        yield

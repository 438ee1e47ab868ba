"""The training progress bar: steps done of all, elapsed and remaining time, the last loss and throughput.

Drawn on slimkit's console (:mod:`slimkit.progress`); a resumed run starts the bar at the saved step.
Only one process of a multi-process run draws it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from slimkit.progress import console

#: ``update(loss, samples_per_second)`` after each optimizer step.
Update = Callable[[float, float], None]


@contextmanager
def training_bar(description: str, total: int, start: int, visible: bool = True) -> Iterator[Update]:
    """Show a bar from step ``start`` to ``total`` while the block runs; yields ``update(loss, rate)``."""
    if not visible:
        yield lambda loss, rate: None
        return
    columns = (TextColumn("{task.description}", style="bold", markup=False), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn(), TimeRemainingColumn(), TextColumn("loss {task.fields[loss]}", markup=False),
               TextColumn("{task.fields[rate]} samples/s", markup=False))
    with Progress(*columns, console=console, transient=False) as bar:
        task = bar.add_task(description, total=total, completed=start, loss="-", rate="-")

        def update(loss: float, rate: float) -> None:
            bar.update(task, advance=1, loss=f"{loss:.4f}", rate=f"{rate:.1f}")

        yield update

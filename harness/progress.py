"""Rich progress bars for long work (training, sampling, scoring); quiet when stderr is not a terminal."""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

console = Console(stderr=True)


class _Bar:
    """Updates a rich bar on a terminal; elsewhere (logs, CI) prints a plain line every 5% of the work."""

    def __init__(self, progress: Progress | None, task_id, description: str, total: int, completed: int,
                 quiet: bool = False):
        self._progress, self._task, self.console, self._quiet = progress, task_id, console, quiet
        self._description, self._total, self._done = description, total, completed
        self._every = max(1, total // 20)

    def update(self, advance: int = 1, info: str = "") -> None:
        self._done += advance
        if self._progress is not None:
            self._progress.update(self._task, advance=advance, info=info)
        elif not self._quiet and (self._done % self._every == 0 or self._done == self._total):
            print(f"{self._description} {self._done}/{self._total} {info}", file=sys.stderr, flush=True)


@contextmanager
def progress_bar(description: str, total: int, completed: int = 0, quiet: bool = False):
    """A bar with count, elapsed, ETA and a free-text field (loss, tokens/s); `quiet` (the other
    processes of a multi-process launch, whose main process reports) prints nothing."""
    if quiet:
        yield _Bar(None, None, description, total, completed, quiet=True)
        return
    if os.environ.get("LADIR_NO_PROGRESS") or not sys.stderr.isatty():
        yield _Bar(None, None, description, total, completed)
        return
    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        TextColumn("{task.fields[info]}"),
        console=console,
        transient=False,
    )
    with progress:
        task_id = progress.add_task(description, total=total, completed=completed, info="")
        yield _Bar(progress, task_id, description, total, completed)

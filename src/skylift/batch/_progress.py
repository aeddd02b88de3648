"""Prediction progress in the terminal: one bar with rows, rows/s and time left (drawn by the writer rank)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
)
from rich.text import Text


class PredictObserver(Protocol):
    """What the writer rank reports while a job runs."""

    def start(self, total: int | None, done: int) -> None:
        """`total` rows (None when unknown; an estimate is fine); `done` finished by an earlier run."""

    def advance(self, rows: int) -> None:
        """`rows` more rows are finished."""

    def finish(self) -> None:
        """Every row is done: an estimated total becomes the exact count."""

    def close(self) -> None:
        """The job is over (finished or failed); safe to call twice."""


class _Rows(ProgressColumn):
    def render(self, task: Task) -> Text:
        total = f"{int(task.total):,}" if task.total is not None else "?"
        return Text(f"{int(task.completed):,}/{total} rows")


def _rate(task: Task) -> float | None:
    """Rows/s computed by this run since the bar started (rows finished by an earlier run excluded).

    Not rich's `task.speed`: that needs two samples and is wiped whenever the total changes (an
    estimated row count corrected), which left the bar at "- rows/s" and no ETA.
    """
    rows = task.completed - task.fields.get("resumed", 0)
    elapsed = task.elapsed
    return rows / elapsed if elapsed and rows > 0 else None


class _Rate(ProgressColumn):
    def render(self, task: Task) -> Text:
        rate = _rate(task)
        return Text(f"{rate:,.0f} rows/s" if rate else "- rows/s")


class _Eta(ProgressColumn):
    def render(self, task: Task) -> Text:
        rate = _rate(task)
        if task.finished:
            left: float | None = 0.0
        elif task.total is None or not rate:
            left = None
        else:
            left = max(0.0, task.total - task.completed) / rate
        if left is None:
            return Text("eta -:--:--")
        minutes, seconds = divmod(int(left), 60)
        return Text(f"eta {minutes // 60:d}:{minutes % 60:02d}:{seconds:02d}")


class PredictDisplay:
    """A PredictObserver drawing a rich progress bar: rows, rows/s, elapsed and ETA.

    `clock`: monotonic seconds (default: rich's, time.monotonic); tests pass their own.
    """

    def __init__(
        self,
        console: Console | None = None,
        description: str = "predict",
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.console = console or Console()
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            _Rows(),
            _Rate(),
            TimeElapsedColumn(),
            _Eta(),
            console=self.console,
            get_time=clock,
        )
        self.description = description
        self.task: Any = None

    def start(self, total: int | None, done: int) -> None:
        self.task = self.progress.add_task(
            self.description, total=total or None, completed=done, resumed=done
        )
        self.progress.start()

    def advance(self, rows: int) -> None:
        task = self.progress.tasks[0]
        if task.total is not None and task.completed + rows > task.total:  # the estimate was low
            self.progress.update(self.task, total=task.completed + rows)
        self.progress.advance(self.task, rows)

    def finish(self) -> None:
        if self.task is not None:
            self.progress.update(self.task, total=self.progress.tasks[0].completed)

    def close(self) -> None:
        if self.task is not None:
            self.progress.stop()
            self.task = None

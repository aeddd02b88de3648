"""Prediction progress in the terminal: one bar with rows, rows/s and time left (drawn by the writer rank)."""

from __future__ import annotations

from typing import Any, Protocol

from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
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


class _Rate(ProgressColumn):
    def render(self, task: Task) -> Text:
        return Text(f"{task.speed:,.0f} rows/s" if task.speed else "- rows/s")


class PredictDisplay:
    """A PredictObserver drawing a rich progress bar: rows, rows/s, elapsed and ETA."""

    def __init__(self, console: Console | None = None, description: str = "predict") -> None:
        self.console = console or Console()
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            _Rows(),
            _Rate(),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            console=self.console,
            speed_estimate_period=10.0,
        )
        self.description = description
        self.task: Any = None

    def start(self, total: int | None, done: int) -> None:
        self.task = self.progress.add_task(self.description, total=total or None, completed=done)
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

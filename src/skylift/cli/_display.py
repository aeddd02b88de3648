"""Terminal output: a live progress bar with an epoch table, and metric tables."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rich import box
from rich.console import Console, Group
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from skylift.metrics import ClassificationReport

EPOCH_COLUMNS = (
    "epoch",
    "loss",
    "val_loss",
    "val_accuracy",
    "val_precision",
    "val_recall",
    "val_f1",
    "samples_per_s",
)
_HEADERS = {"samples_per_s": "samples/s"}  # fits an 80-column terminal


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.1f}" if value >= 1000 else f"{value:.4f}"
    return str(value)


class TrainDisplay:
    """A TrainObserver drawing a progress bar (samples this epoch, samples/s) over a growing epoch table."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.table = Table(
            *(_HEADERS.get(c, c) for c in EPOCH_COLUMNS), box=box.SIMPLE_HEAD, padding=(0, 1), pad_edge=False
        )
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"),
            TimeElapsedColumn(),
            console=console,
        )
        self.live = Live(Group(self.table, self.progress), console=console, refresh_per_second=8)
        self.task: Any = None
        self.epochs = 0

    def start(self, run_id: str, first_epoch: int, epochs: int, samples_per_epoch: int) -> None:
        self.console.print(
            f"run [bold]{run_id}[/]" + (f" (resuming at epoch {first_epoch})" if first_epoch > 1 else "")
        )
        self.epochs = epochs
        self.task = self.progress.add_task(f"epoch {first_epoch}/{epochs}", total=samples_per_epoch, rate="")
        self.live.start()

    def step(self, samples: int) -> None:
        self.progress.advance(self.task, samples)

    def epoch(self, row: dict[str, Any]) -> None:
        self.table.add_row(*(_fmt(row[c]) for c in EPOCH_COLUMNS))
        nxt = min(row["epoch"] + 1, self.epochs)
        self.progress.reset(
            self.task, description=f"epoch {nxt}/{self.epochs}", rate=f"{row['samples_per_s']:,.0f} samples/s"
        )

    def close(self) -> None:
        self.live.update(self.table)  # leave the finished table, not a stale bar
        self.live.stop()


def metrics_table(title: str, rows: Sequence[tuple[str, float]]) -> Table:
    table = Table("metric", "value", title=title, title_justify="left")
    for name, value in rows:
        table.add_row(name, f"{value:.4f}")
    return table


def report_tables(rep: ClassificationReport, classes: Sequence[str]) -> list[Table]:
    """Overall metrics, per-class precision/recall/F1/support, and the confusion matrix."""
    macro, weighted = rep.macro(), rep.weighted()
    overall = metrics_table(
        "overall",
        [
            ("accuracy", rep.accuracy),
            ("precision (macro)", macro["precision"]),
            ("recall (macro)", macro["recall"]),
            ("f1 (macro)", macro["f1"]),
            ("f1 (weighted)", weighted["f1"]),
        ],
    )
    per_class = Table(
        "class", "precision", "recall", "f1", "support", title="per class", title_justify="left"
    )
    for i, name in enumerate(classes):
        per_class.add_row(
            name,
            f"{rep.precision[i]:.4f}",
            f"{rep.recall[i]:.4f}",
            f"{rep.f1[i]:.4f}",
            str(int(rep.support[i])),
        )
    cm = Table("true \\ pred", *classes, title="confusion matrix", title_justify="left")
    for i, name in enumerate(classes):
        cm.add_row(name, *(str(int(c)) for c in rep.confusion[i]))
    return [overall, per_class, cm]

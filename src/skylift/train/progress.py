"""Training progress in the terminal: a live progress bar over a growing per-epoch table (rank 0)."""

from __future__ import annotations

from typing import Any

from rich import box
from rich.console import Console, Group
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table


def _fmt(column: str, value: Any) -> str:
    # A rate reads in whole samples (one decimal as measured); losses and scores need four.
    if isinstance(value, float):
        if column == "peak_mb":
            return f"{value:,.0f}"
        return f"{value:,.1f}" if column.endswith("_per_s") or value >= 1000 else f"{value:.4f}"
    return str(value)


# fits an 80-column terminal; peak MB: the largest rank's peak memory (every rank's in metrics.jsonl)
_HEADERS = {"samples_per_s": "samples/s", "tokens_per_s": "tokens/s", "peak_mb": "peak MB"}


class TrainDisplay:
    """A TrainObserver drawing a progress bar (samples this epoch, samples/s) over a growing epoch table."""

    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console()
        self.columns: tuple[str, ...] = ()
        self.table = Table()
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"),
            TimeElapsedColumn(),
            console=self.console,
        )
        self.live = Live(Group(self.table, self.progress), console=self.console, refresh_per_second=8)
        self.task: Any = None
        self.epochs = 0

    def start(
        self,
        run_id: str,
        first_epoch: int,
        epochs: int,
        samples_per_epoch: int,
        metrics: tuple[str, ...] = ("val_accuracy", "val_precision", "val_recall", "val_f1"),
    ) -> None:
        """`metrics`: the task's validation columns, between the losses and the rate."""
        self.console.print(
            f"run [bold]{run_id}[/]" + (f" (resuming at epoch {first_epoch})" if first_epoch > 1 else "")
        )
        self.columns = ("epoch", "loss", "val_loss", *metrics, "samples_per_s", "peak_mb")
        self.table = Table(
            *(_HEADERS.get(c, c) for c in self.columns),
            box=box.SIMPLE_HEAD,
            padding=0,
            pad_edge=False,
            show_edge=False,
        )
        self.live.update(Group(self.table, self.progress))
        self.epochs = epochs
        self.task = self.progress.add_task(f"epoch {first_epoch}/{epochs}", total=samples_per_epoch, rate="")
        self.live.start()

    def step(self, samples: int) -> None:
        self.progress.advance(self.task, samples)

    def epoch(self, row: dict[str, Any]) -> None:
        self.table.add_row(*(_fmt(c, row[c]) if c in row else "" for c in self.columns))
        nxt = min(row["epoch"] + 1, self.epochs)
        rate = f"{row['samples_per_s']:,.0f} samples/s"
        if "tokens_per_s" in row:
            rate += f", {row['tokens_per_s']:,.0f} tokens/s"
        self.progress.reset(self.task, description=f"epoch {nxt}/{self.epochs}", rate=rate)

    def note(self, line: str) -> None:
        """A line printed above the live table (e.g. a language model's sampled text)."""
        self.console.print(line, markup=False, highlight=False)

    def close(self) -> None:
        self.live.update(self.table)  # leave the finished table, not a stale bar
        self.live.stop()
        self.console.line()

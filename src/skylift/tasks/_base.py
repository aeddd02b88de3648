"""The task contract: what a kind of model learns (its data, loss, validation metrics and outputs).

A task is one module with one `Task` subclass, found through `skylift.tasks.TASKS` by the spec's
`task:` name; the training step calls only this interface, so a new task never edits the loop.

Shape legend: b batch rows, S... per-row input shape, K per-row target shape, O model outputs.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    import torch

    from skylift.data._augment import BatchAugment
    from skylift.data._rows import Rows
    from skylift.spec import JobSpec, ModelSpec, TrainSpec

EVAL_BATCH_ROWS = 1024  # no gradients: memory is activations only


@dataclass(frozen=True)
class TaskData:
    """A job's data made ready for its task: rows to train on, and what the model must know."""

    train: Rows
    val: Rows
    test: Rows | None
    input_shape: tuple[int, ...]
    """Per-row model input shape: features, or (tokens,) for text."""
    n_outputs: int
    """Model outputs per row (or per token): classes, targets, or the vocabulary."""
    terms_per_row: int
    """Loss terms in one row's target: 1 (a class), K (targets) or the block size (next tokens)."""
    meta: dict[str, Any]
    """Recorded in checkpoints and the registry: task, classes or targets, tokenizer, vocab size."""
    fingerprint: str
    """SHA-256 of the training data (the data hash in a model's lineage)."""
    extras: dict[str, Any] = field(default_factory=dict)
    """Task-private facts for the run (e.g. text bytes per token for bits per byte)."""
    augment: BatchAugment | None = None
    """Training-time change of a training batch (rows idx_b in epoch e): media augmentation; None: none."""


class Task(ABC):
    """One kind of model. Stateless: every method gets what it needs; safe to share between threads.

    Contract: `eval_sums` returns float64 sums only, so summing them over ranks (all_reduce) gives
    exactly what one process computes on all the rows; `summarize` turns such sums into metrics.
    """

    name: ClassVar[str]
    columns: ClassVar[tuple[str, ...]]
    """The validation metrics shown in the per-epoch table (every metric is in metrics.jsonl)."""
    unit_rate: ClassVar[str | None] = None
    """A per-epoch rate of loss terms besides samples/s (e.g. tokens_per_s), or None."""

    @abstractmethod
    def load(self, spec: JobSpec, cache: Path | None = None) -> TaskData:
        """Read, split and prepare the spec's data; DataError/SpecError (one line) on bad input.
        `cache`: a folder for derived files worth keeping between runs (token files)."""

    def build(
        self, model: ModelSpec, data_meta: dict[str, Any], input_shape: tuple[int, ...], n_outputs: int
    ) -> torch.nn.Module:
        """The model for this task from its spec and the data's recorded facts (also on reload)."""
        from skylift.models import build_model

        vocab = data_meta.get("vocab_size")
        if vocab is None:
            return build_model(model, input_shape, n_outputs)
        return build_model(model, input_shape, n_outputs, vocab_size=vocab)

    @abstractmethod
    def loss_sum(self, out: torch.Tensor, y: torch.Tensor, t: TrainSpec, data: TaskData) -> torch.Tensor:
        """The training loss summed over every loss term of the batch (the loop takes the mean)."""

    @abstractmethod
    def eval_sums(self, model: torch.nn.Module, rows: Rows, data: TaskData) -> torch.Tensor:
        """float64 sums over `rows` of everything the metrics need, the model in eval mode."""

    @abstractmethod
    def summarize(
        self, sums: torch.Tensor, data: TaskData, prefix: str = "val_"
    ) -> tuple[float, dict[str, float]]:
        """(mean loss, metrics named `prefix` + metric) from `eval_sums`, possibly summed over ranks."""

    def epoch_end(self, model: torch.nn.Module, data: TaskData, run: Path, epoch: int) -> list[str]:
        """Rank 0's side work after an epoch (e.g. sampled text, saved in `run`); lines to show."""
        return []

    def finish(self, model: torch.nn.Module, data: TaskData, run: Path) -> dict[str, Any]:
        """At the end, with the best model: task plots in `run`; facts to add to the test summary."""
        return {}

    def test_summary(self, model: torch.nn.Module, data: TaskData) -> dict[str, Any] | None:
        """The best model's metrics on the test rows (None without a test set)."""
        if data.test is None:
            return None
        loss, metrics = self.summarize(self.eval_sums(model, data.test, data), data, prefix="")
        return {"loss": loss, **metrics, "n": len(data.test)}

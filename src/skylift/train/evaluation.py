"""Evaluation: a model (or a run's best checkpoint) on a data source -> loss and a metrics report.

Shape legend: N samples, B batch rows, C classes, S... per-sample input shape.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from skylift.errors import DataError, ModelNotFound, SpecError
from skylift.home import skylift_home
from skylift.metrics import ClassificationReport, report
from skylift.train import checkpoint
from skylift.train.run import RunDir

if TYPE_CHECKING:
    import torch

    from skylift.data import Dataset

EVAL_BATCH_ROWS = 4096  # big batches: no gradients, so memory is activations only


def as_input(ds: Dataset, input_shape: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """The dataset as tensors x (N, *input_shape) float32 and y (N,) int64, sharing numpy memory."""
    import torch

    per_sample = int(ds.x[0].size) if len(ds) else 0
    if per_sample != int(torch.Size(input_shape).numel()):
        raise DataError(
            f"data samples have shape {list(ds.sample_shape)} ({per_sample} values) but the model takes "
            f"input_shape {list(input_shape)}"
        )
    x_NS = torch.from_numpy(ds.x).reshape(len(ds), *input_shape)
    return x_NS, torch.from_numpy(ds.y)


def eval_sums(model: torch.nn.Module, x_NS: torch.Tensor, y_N: torch.Tensor, n_classes: int) -> torch.Tensor:
    """float64 [loss sum, confusion counts C*C...] of `model` in eval mode: sums, so ranks add up exactly."""
    import torch
    import torch.nn.functional as F

    model.eval()
    sums = torch.zeros(1 + n_classes * n_classes, dtype=torch.float64, device=x_NS.device)
    with torch.no_grad():
        for lo in range(0, len(y_N), EVAL_BATCH_ROWS):
            y_B = y_N[lo : lo + EVAL_BATCH_ROWS]
            logits_BC = model(x_NS[lo : lo + EVAL_BATCH_ROWS])
            sums[0] += F.cross_entropy(logits_BC, y_B, reduction="sum").double()
            cells_B = y_B * n_classes + logits_BC.argmax(1)
            sums[1:] += torch.bincount(cells_B, minlength=n_classes * n_classes).double()
    return sums


def sums_to_report(sums: torch.Tensor, n_classes: int) -> tuple[float, ClassificationReport]:
    """(mean loss, report) from `eval_sums` output, possibly summed over ranks."""
    cm_CC = sums[1:].round().long().reshape(n_classes, n_classes).cpu().numpy()
    return float(sums[0]) / max(int(cm_CC.sum()), 1), report(cm_CC)


def evaluate_tensors(
    model: torch.nn.Module, x_NS: torch.Tensor, y_N: torch.Tensor, n_classes: int
) -> tuple[float, ClassificationReport]:
    """Mean cross-entropy and the confusion-matrix report of `model` in eval mode."""
    return sums_to_report(eval_sums(model, x_NS, y_N, n_classes), n_classes)


def model_from_checkpoint(state: dict[str, Any]) -> torch.nn.Module:
    """Rebuild the model from the checkpoint's recorded spec (pure data) and load its weights."""
    from skylift.models import build_model
    from skylift.spec import ModelSpec

    meta = state["meta"]
    model = build_model(
        ModelSpec.model_validate(meta["model"]), tuple(meta["input_shape"]), len(meta["classes"])
    )
    model.load_state_dict(state["model"])
    model.eval()
    return model


def evaluate_checkpoint_on(state: dict[str, Any], ds: Dataset) -> tuple[float, ClassificationReport]:
    model = model_from_checkpoint(state)
    x_NS, y_N = as_input(ds, tuple(state["meta"]["input_shape"]))
    return evaluate_tensors(model, x_NS, y_N, len(state["meta"]["classes"]))


def resolve_checkpoint(target: str, home: Path | str | None = None) -> Path:
    """A checkpoint file path, or a run id meaning that run's best checkpoint."""
    path = Path(target)
    if path.is_file():
        return path
    if path.is_dir() and (path / "checkpoints" / "best.pt").is_file():
        return path / "checkpoints" / "best.pt"
    try:
        run: RunDir | None = RunDir.under(skylift_home(home), target)
    except SpecError:  # not a valid run id either
        run = None
    if run is not None and run.best.is_file():
        return run.best
    raise ModelNotFound(f"{target}: no checkpoint file, run folder or run id with that name")


@dataclass(frozen=True)
class Evaluation:
    checkpoint: Path
    source: str
    classes: tuple[str, ...]
    loss: float
    report: ClassificationReport


def evaluate(
    target: str, source: str, *, label_column: str = "label", home: Path | str | None = None
) -> Evaluation:
    """Evaluate a run's best checkpoint (or a checkpoint file) on every row of a data source."""
    from skylift.data import read_source

    path = resolve_checkpoint(target, home)
    state = checkpoint.load(path)
    classes = tuple(state["meta"]["classes"])
    ds, bundled_test = read_source(source, label_column=label_column, classes=classes)
    # An IDX folder or Keras-style npz holds train + test: evaluation uses the held-out part.
    ds = bundled_test if bundled_test is not None else ds
    loss, rep = evaluate_checkpoint_on(state, ds)
    return Evaluation(path, source, classes, loss, rep)

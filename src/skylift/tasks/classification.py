"""Classification: class logits out, cross-entropy, metrics from one confusion matrix.

Inputs are numeric features (any data source), or text (a `text_column`) tokenized into padded
ids. Shape legend: N rows, b batch rows, C classes, S... per-row input shape, T tokens.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from skylift.data._rows import TensorRows, batches
from skylift.errors import DataError
from skylift.metrics import ClassificationReport, confusion_matrix, report
from skylift.tasks._base import EVAL_BATCH_ROWS, Task, TaskData

if TYPE_CHECKING:
    import torch

    from skylift.data import Dataset
    from skylift.data._rows import Rows
    from skylift.spec import JobSpec, TrainSpec


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


def eval_sums(model: torch.nn.Module, rows: Rows, n_classes: int) -> torch.Tensor:
    """float64 [loss sum, confusion counts C*C...] of `model` in eval mode: sums, so ranks add up exactly.

    Per-sample losses are summed in float64 (float32 sums would differ with the split between
    ranks); the counts come from `skylift.metrics.confusion_matrix`, the one implementation.
    """
    import torch
    import torch.nn.functional as F

    model.eval()
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    loss = torch.zeros((), dtype=torch.float64, device=device)
    preds, truth = [], []
    with torch.no_grad():
        for x_bS, y_b in batches(rows, EVAL_BATCH_ROWS):
            logits_bC = model(x_bS)
            loss += F.cross_entropy(logits_bC.double(), y_b, reduction="sum")
            preds.append(logits_bC.argmax(1).cpu())
            truth.append(y_b.cpu())
    pred_N = torch.cat(preds) if preds else torch.empty(0, dtype=torch.int64)
    true_N = torch.cat(truth) if truth else torch.empty(0, dtype=torch.int64)
    cm_CC = confusion_matrix(true_N.numpy(), pred_N.numpy(), n_classes)
    counts = torch.from_numpy(cm_CC.reshape(-1)).to(device=device, dtype=torch.float64)
    return torch.cat([loss.view(1), counts])


def sums_to_report(sums: torch.Tensor, n_classes: int) -> tuple[float, ClassificationReport]:
    """(mean loss, report) from `eval_sums` output, possibly summed over ranks."""
    cm_CC = sums[1:].round().long().reshape(n_classes, n_classes).cpu().numpy()
    return float(sums[0]) / max(int(cm_CC.sum()), 1), report(cm_CC)


class Classification(Task):
    name = "classification"
    columns = ("val_accuracy", "val_precision", "val_recall", "val_f1")

    def load(self, spec: JobSpec, cache: Path | None = None) -> TaskData:
        if spec.data.text_column is not None:
            from skylift.tasks._text import load_text_classification

            return load_text_classification(spec)
        if spec.data.image is not None or spec.data.audio is not None:
            from skylift.tasks._media import load_media_classification

            return load_media_classification(spec, cache)
        from skylift.data import load_splits

        splits = load_splits(spec.data, seed=spec.train.seed)
        shape = tuple(spec.model.input_shape or splits.train.sample_shape)
        parts = [
            as_input(ds, shape) if ds is not None else None for ds in (splits.train, splits.val, splits.test)
        ]
        train, val, test = (TensorRows(*p) if p is not None else None for p in parts)
        assert train is not None and val is not None
        return TaskData(
            train=train,
            val=val,
            test=test,
            input_shape=shape,
            n_outputs=len(splits.classes),
            terms_per_row=1,
            meta={"task": self.name, "classes": list(splits.classes)},
            fingerprint=splits.train.fingerprint(),
        )

    def loss_sum(self, out: torch.Tensor, y: torch.Tensor, t: TrainSpec, data: TaskData) -> torch.Tensor:
        import torch.nn.functional as F

        return F.cross_entropy(out, y, reduction="sum", label_smoothing=t.label_smoothing)

    def eval_sums(self, model: torch.nn.Module, rows: Rows, data: TaskData) -> torch.Tensor:
        return eval_sums(model, rows, len(data.meta["classes"]))

    def summarize(
        self, sums: torch.Tensor, data: TaskData, prefix: str = "val_"
    ) -> tuple[float, dict[str, float]]:
        loss, rep = sums_to_report(sums, len(data.meta["classes"]))
        return loss, rep.summary(prefix)

    def test_summary(self, model: torch.nn.Module, data: TaskData) -> dict[str, Any] | None:
        if data.test is None:
            return None
        loss, rep = sums_to_report(self.eval_sums(model, data.test, data), len(data.meta["classes"]))
        return {"loss": loss, **rep.summary(), "n": rep.n, "confusion": rep.confusion.tolist()}

"""Evaluation: a model (or a run's best checkpoint) on a data source -> loss and a metrics report.

Shape legend: N samples, B batch rows, C classes, S... per-sample input shape.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from skylift.errors import ModelNotFound, SpecError
from skylift.home import skylift_home
from skylift.metrics import ClassificationReport
from skylift.tasks.classification import as_input as as_input
from skylift.tasks.classification import eval_sums, sums_to_report
from skylift.train import checkpoint
from skylift.train.run import RunDir

if TYPE_CHECKING:
    import torch

    from skylift.data import Dataset
    from skylift.security import MasterKey


def evaluate_tensors(
    model: torch.nn.Module, x_NS: torch.Tensor, y_N: torch.Tensor, n_classes: int
) -> tuple[float, ClassificationReport]:
    """Mean cross-entropy and the confusion-matrix report of `model` in eval mode."""
    from skylift.data._rows import TensorRows

    return sums_to_report(eval_sums(model, TensorRows(x_NS, y_N), n_classes), n_classes)


def model_from_checkpoint(state: dict[str, Any]) -> torch.nn.Module:
    """Rebuild the model from the checkpoint's recorded spec (pure data) and load its weights."""
    from skylift.spec import ModelSpec
    from skylift.tasks import task_of

    meta = state["meta"]
    outputs = meta.get("n_outputs", len(meta.get("classes", ())))
    model = task_of(meta).build(
        ModelSpec.model_validate(meta["model"]), meta, tuple(meta["input_shape"]), outputs
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
    model: str
    """What was evaluated: `checkpoint PATH` or `model NAME:VERSION`."""
    source: str
    classes: tuple[str, ...]
    loss: float
    report: ClassificationReport


def _load_target(
    target: str, home: Path | str | None, master_key: MasterKey | None
) -> tuple[torch.nn.Module, tuple[str, ...], tuple[int, ...], str]:
    """(model, classes, input_shape, description) of a checkpoint, run or registered model reference.

    A checkpoint file, run folder or run id is looked for first, then the model registry.
    """
    from skylift.registry import Registry, parse_ref

    try:
        path = resolve_checkpoint(target, home)
    except ModelNotFound:
        try:
            ref = parse_ref(target)
        except SpecError:
            raise ModelNotFound(
                f"{target}: no checkpoint file, run or registered model (NAME, NAME:VERSION, NAME@ALIAS)"
            ) from None
        try:
            loaded = Registry(skylift_home(home), master_key).load(ref)
        except ModelNotFound as exc:
            raise ModelNotFound(f"{target}: not a checkpoint file, run folder or run id, and {exc}") from None
        return loaded.module, tuple(loaded.classes), loaded.input_shape, f"model {loaded.ref}"
    state = checkpoint.load(path)
    meta = state["meta"]
    return (
        model_from_checkpoint(state),
        tuple(meta["classes"]),
        tuple(meta["input_shape"]),
        f"checkpoint {path}",
    )


def evaluate(
    target: str,
    source: str,
    *,
    label_column: str = "label",
    home: Path | str | None = None,
    master_key: MasterKey | None = None,
) -> Evaluation:
    """Evaluate a checkpoint, a run's best checkpoint or a registered model on a data source.

    `target`: a checkpoint file, run folder, run id, or a model reference (`NAME`, `NAME:VERSION`,
    `NAME@ALIAS`); a registered model is verified against its manifest before it is used.
    """
    from skylift.data import read_source

    model, classes, input_shape, what = _load_target(target, home, master_key)
    ds, bundled_test = read_source(source, label_column=label_column, classes=classes)
    # An IDX folder or Keras-style npz holds train + test: evaluation uses the held-out part.
    ds = bundled_test if bundled_test is not None else ds
    x_NS, y_N = as_input(ds, input_shape)
    loss, rep = evaluate_tensors(model, x_NS, y_N, len(classes))
    return Evaluation(what, source, classes, loss, rep)

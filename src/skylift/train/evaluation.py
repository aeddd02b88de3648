"""Evaluation: a model (or a run's best checkpoint) on a data source -> its task's loss and metrics.

The data is read the way the model's task reads it (`_eval_data`), scored by the task's own
`eval_sums` and `summarize`; a classifier also gets its confusion-matrix report.

Shape legend: N samples, B batch rows, C classes, S... per-sample input shape.
"""

from __future__ import annotations

from dataclasses import dataclass, field
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
    """A classifier's classes; empty for other tasks."""
    loss: float
    """The task's mean loss: cross-entropy per row or token, or MSE on the standardized targets."""
    report: ClassificationReport | None
    """A classifier's confusion-matrix report (per-class table); None for other tasks."""
    task: str = "classification"
    metrics: dict[str, float] = field(default_factory=dict)
    """The task's metrics, unprefixed: accuracy/f1/..., mae/rmse/r2, or perplexity/bits_per_byte."""
    n: int = 0
    """Rows evaluated (language models: blocks of `block_size` tokens)."""
    tokens: int | None = None
    """Language models: tokens scored."""
    _module: Any = field(default=None, repr=False, compare=False)
    _data: Any = field(default=None, repr=False, compare=False)

    def plots(self, folder: Path) -> list[Path]:
        """Write the task's plots into `folder` (classifiers: confusion.png; regressors: scatter.png)."""
        folder.mkdir(parents=True, exist_ok=True)
        if self.report is not None:
            from skylift.train.plots import confusion

            out = folder / "confusion.png"
            confusion(self.report.confusion, self.classes, out, title=self.source)
            return [out]
        if self.task == "regression" and self._module is not None:
            from skylift.tasks import TASKS

            TASKS["regression"].finish(self._module, self._data, folder)
            return [folder / "scatter.png"]
        return []


def _load_target(
    target: str, home: Path | str | None, master_key: MasterKey | None
) -> tuple[torch.nn.Module, dict[str, Any], str | None, str]:
    """(model, metadata, tokenizer JSON or None, description) of a checkpoint, run or registered model.

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
        meta = {**loaded.data, "input_shape": list(loaded.input_shape)}
        if "classes" not in meta and loaded.classes:
            meta["classes"] = list(loaded.classes)
        return loaded.module, meta, loaded.tokenizer, f"model {loaded.ref}"
    state = checkpoint.load(path)
    meta = dict(state["meta"])
    return model_from_checkpoint(state), meta, meta.pop("tokenizer", None), f"checkpoint {path}"


def evaluate(
    target: str,
    source: str,
    *,
    label_column: str = "label",
    text_column: str | None = None,
    home: Path | str | None = None,
    master_key: MasterKey | None = None,
) -> Evaluation:
    """Evaluate a checkpoint, a run's best checkpoint or a registered model on a data source.

    `target`: a checkpoint file, run folder, run id, or a model reference (`NAME`, `NAME:VERSION`,
    `NAME@ALIAS`); a registered model is verified against its manifest before it is used.
    The model's task decides what `source` is: numeric features (any source training reads) or a
    text table's `text_column` (default: "text") with `label_column` labels for a classifier;
    numeric features or a text column with the model's target columns for a regressor; a .txt
    corpus (file, folder or glob) for a language model, tokenized once into the token cache.
    Metrics are the task's own (`Task.eval_sums` then `Task.summarize`).
    """
    from skylift.tasks import task_of
    from skylift.train._eval_data import eval_data

    model, meta, tokenizer_json, what = _load_target(target, home, master_key)
    label = what.split(" ", 1)[1] if what.startswith("model ") else "the model"
    data = eval_data(
        meta,
        tokenizer_json,
        source,
        what=label,
        label_column=label_column,
        text_column=text_column,
        cache=skylift_home(home) / "cache",
    )
    task = task_of(meta)
    assert data.test is not None  # eval_data puts every row there
    sums = task.eval_sums(model, data.test, data)
    if task.name == "classification":
        classes = tuple(str(c) for c in meta["classes"])
        loss, rep = sums_to_report(sums, len(classes))
        metrics = rep.summary("")
        return Evaluation(what, source, classes, loss, rep, task.name, metrics, rep.n, None, model, data)
    loss, metrics = task.summarize(sums, data, prefix="")
    tokens = int(sums[1]) if task.name == "language_modeling" else None
    return Evaluation(what, source, (), loss, None, task.name, metrics, len(data.test), tokens, model, data)

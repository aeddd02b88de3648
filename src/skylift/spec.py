"""The job spec: one YAML file per model, validated whole before any work starts."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any, Literal, get_args

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from skylift._spec_base import Frozen
from skylift._spec_media import AudioSpec, ImageSpec, media_problem
from skylift.errors import SpecError

__all__ = [
    "AudioSpec",
    "CheckpointSpec",
    "DataSpec",
    "DistributedSpec",
    "ImageSpec",
    "JobSpec",
    "ModelSpec",
    "OptimizerSpec",
    "ServeSpec",
    "TrainSpec",
    "TuneSpec",
    "higher_is_better",
    "load_spec",
    "parse_spec",
    "spec_hash",
]

_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")
MAX_SPEC_BYTES = 1 << 20  # 1 MiB: a job spec is a page of YAML, not a data file
_MAX_ERRORS_SHOWN = 10  # every error of a hand-written spec, yet one readable line for a pasted blob


class TokenizerSpec(Frozen):
    train: Literal["bpe"] = "bpe"
    """Train a byte-level BPE tokenizer on the training split."""
    vocab_size: int = Field(default=8192, ge=258, le=1 << 20)
    """Tokens in the vocabulary, special tokens included (at least the 256 bytes + <pad> + <eos>)."""


class DataSpec(Frozen):
    train: str
    """Source of training data: builtin:NAME, .npz, .npy (or "x.npy,y.npy"), .csv, .parquet, IDX."""
    test: str | None = None
    """Optional held-out test source; its metrics go into summary.json."""
    test_split: float = Field(default=0.0, ge=0.0, lt=1.0)
    """Fraction of train held out (stratified) as a test set when `test` is not given."""
    validation_split: float = Field(default=0.1, gt=0.0, lt=1.0)
    """Fraction of train held out (stratified, seeded) for validation and checkpoint selection."""
    label_column: str = "label"
    """Column holding the class label in .csv, .parquet and .jsonl sources."""
    text_column: str | None = None
    """Column holding the text in .csv, .parquet and .jsonl sources: a text model (token ids in)."""
    target_columns: list[str] | None = None
    """Columns holding the numeric targets of a regression task (default: the last column)."""
    tokenizer: TokenizerSpec | str | None = None
    """Text tokenizer: {train: bpe, vocab_size: N} trained on the training split, or a tokenizer.json path."""
    block_size: int | None = Field(default=None, ge=2)
    """Tokens per packed language-modelling block; the max length (truncation) for text classifiers."""
    image: ImageSpec | None = None
    """Image files in: a folder with one sub-folder per class, or a table of paths; see docs/media.md."""
    audio: AudioSpec | None = None
    """Audio files (WAV, FLAC) in, as log-mel spectrograms: class folders or a table of paths."""
    path_column: str | None = None
    """Column holding the file paths of a .csv/.parquet table of image or audio files (default: path)."""
    chat_template: str | None = None
    """Chat prompt format of a language model, recorded with it for /v1/chat/completions: plain
    (`role: content` lines, the default), chatml, or a Jinja2 template of `messages` (Hugging Face's)."""

    @field_validator("target_columns")
    @classmethod
    def _targets_named(cls, v: list[str] | None) -> list[str] | None:
        if v is not None and (not v or len(set(v)) != len(v)):
            raise ValueError(f"must be a non-empty list of distinct column names, got {v}")
        return v

    @field_validator("chat_template")
    @classmethod
    def _template_renders(cls, v: str | None) -> str | None:
        from skylift._chat_template import template_problem

        problem = None if v is None else template_problem(v)
        if problem is not None:
            raise ValueError(problem)
        return v


class ModelSpec(Frozen):
    input_shape: list[int] | None = None
    """Per-sample input shape; data is reshaped to it. Default: the data's own shape."""
    layers: list[dict[str, Any]] | None = None
    """Declarative layers, each `{type: {params}}`; checked when the model is built."""
    factory: str | None = None
    """`package.module:function` returning an nn.Module, called with `kwargs`."""
    kwargs: dict[str, Any] = Field(default_factory=dict)
    """Keyword arguments for `factory`."""
    init: Literal["glorot_uniform", "torch", "gpt2"] = "glorot_uniform"
    """Weight init of dense/conv layers: Keras' Glorot-uniform with zero bias, torch's default, or
    GPT-2's (normal 0.02, residual projections scaled by 1 / sqrt(2 x blocks)) for transformers."""

    @field_validator("input_shape")
    @classmethod
    def _positive_dims(cls, v: list[int] | None) -> list[int] | None:
        if v is not None and (not v or any(d < 1 for d in v)):
            raise ValueError(f"must be a non-empty list of positive sizes, got {v}")
        return v

    @model_validator(mode="after")
    def _one_kind(self) -> ModelSpec:
        if (self.layers is None) == (self.factory is None):
            raise ValueError("give exactly one of model.layers or model.factory")
        if self.layers is not None and not self.layers:
            raise ValueError("model.layers must hold at least one layer")
        if self.factory is not None and (":" not in self.factory or self.factory.count(":") != 1):
            raise ValueError(f"model.factory must look like 'package.module:function', got {self.factory!r}")
        if self.kwargs and self.factory is None:
            raise ValueError("model.kwargs only applies with model.factory")
        return self


class OptimizerSpec(Frozen):
    name: Literal["adam", "adamw", "sgd"] = "adam"
    """Optimizer; adam/adamw use PyTorch's fused CPU/GPU kernels."""
    lr: float = Field(default=0.001, gt=0.0)
    """Learning rate."""
    weight_decay: float = Field(default=0.0, ge=0.0)
    """L2 penalty (decoupled for adamw)."""
    momentum: float = Field(default=0.0, ge=0.0, lt=1.0)
    """SGD momentum."""
    eps: float = Field(default=1e-7, gt=0.0)
    """Adam epsilon; 1e-7 as in Keras (torch's default is 1e-8)."""


TaskName = Literal["classification", "regression", "language_modeling"]
# Each task's validation metrics (the contract with skylift.tasks, which computes them): the
# monitor and tune metric must be one of its task's.
TASK_METRICS: dict[str, tuple[str, ...]] = {
    "classification": ("val_loss", "val_accuracy", "val_f1", "val_precision", "val_recall"),
    "regression": ("val_loss", "val_mae", "val_rmse", "val_r2"),
    "language_modeling": ("val_loss", "val_perplexity", "val_bits_per_byte"),
}
_MONITORS = Literal[
    "val_loss",
    "val_accuracy",
    "val_f1",
    "val_precision",
    "val_recall",
    "val_mae",
    "val_rmse",
    "val_r2",
    "val_perplexity",
    "val_bits_per_byte",
]
_LOWER_IS_BETTER = {"val_loss", "val_mae", "val_rmse", "val_perplexity", "val_bits_per_byte"}
_HIGHER_IS_BETTER: dict[str, bool] = {m: m not in _LOWER_IS_BETTER for m in get_args(_MONITORS)}
_TASK_LOSSES: dict[str, tuple[str, ...]] = {
    "classification": ("cross_entropy",),
    "regression": ("mse", "huber"),
    "language_modeling": ("cross_entropy",),
}


def higher_is_better(metric: str) -> bool:
    """Whether a higher value of validation `metric` is better (a loss is better lower)."""
    known = _HIGHER_IS_BETTER.get(metric)
    return not metric.endswith("loss") if known is None else known


def _fill_in(data: Any, metric: str, field: str, higher: str, lower: str) -> Any:
    """`data` with `field` (left out or null) set from its metric: `higher` if higher values are better."""
    if isinstance(data, dict) and data.get(field) is None and data.get(metric) in _HIGHER_IS_BETTER:
        return {**data, field: higher if _HIGHER_IS_BETTER[data[metric]] else lower}
    return data


def _contradiction(metric: str, field: str, given: str, want: str, effect: str) -> str:
    better = "higher" if _HIGHER_IS_BETTER[metric] else "lower"
    return f"{field} {given} {effect} {metric} ({better} is better); set {field}: {want} or leave {field} out"


class CheckpointSpec(Frozen):
    monitor: _MONITORS = "val_loss"
    """Validation metric that picks best.pt."""
    mode: Literal["min", "max"] = "min"
    """Whether a lower or a higher `monitor` is better; left out, it follows `monitor`."""
    every_steps: int | None = Field(default=None, ge=1)
    """Also save last.pt every N optimizer steps inside an epoch (long epochs); null: at epoch ends only."""

    @model_validator(mode="before")
    @classmethod
    def _infer_mode(cls, data: Any) -> Any:
        return _fill_in(data, "monitor", "mode", "max", "min")

    @model_validator(mode="after")
    def _mode_fits_monitor(self) -> CheckpointSpec:
        # A mode against the metric silently keeps the worst epoch as best.pt: refuse it.
        want = "max" if _HIGHER_IS_BETTER[self.monitor] else "min"
        if self.mode != want:
            raise ValueError(
                _contradiction(self.monitor, "mode", self.mode, want, "keeps the worst epoch of")
            )
        return self


class ScheduleSpec(Frozen):
    warmup_steps: int = Field(default=0, ge=0)
    """Optimizer steps of linear warm-up from 0 to the learning rate."""
    decay: Literal["none", "cosine", "linear"] = "none"
    """After warm-up: keep the rate, or decay it (cosine or linear) to `min_lr_ratio` x lr at the end."""
    min_lr_ratio: float = Field(default=0.0, ge=0.0, le=1.0)
    """The decayed rate at the end, as a fraction of `optimizer.lr`."""


class TrainSpec(Frozen):
    epochs: int = Field(default=10, ge=1)
    """Passes over the training data."""
    batch_size: int = Field(default=64, ge=1)
    """Global batch size (split over data-parallel workers)."""
    optimizer: OptimizerSpec = Field(default_factory=OptimizerSpec)
    loss: Literal["cross_entropy", "mse", "huber"] | None = None
    """Training loss: cross_entropy (classification, language modelling), mse or huber (regression);
    left out, the task's default (cross_entropy; mse for regression)."""
    huber_delta: float = Field(default=1.0, gt=0.0)
    """Where the huber loss turns from quadratic to linear."""
    schedule: ScheduleSpec = Field(default_factory=ScheduleSpec)
    clip_grad_norm: float | None = Field(default=None, gt=0.0)
    """Clip the gradients' global L2 norm to this before each optimizer step; null: no clipping."""
    accumulate: int = Field(default=1, ge=1)
    """Optimizer step every K batches (gradients summed): the same update as a K-times bigger batch."""
    label_smoothing: float = Field(default=0.0, ge=0.0, lt=1.0)
    """Cross-entropy label smoothing."""
    checkpoint: CheckpointSpec = Field(default_factory=CheckpointSpec)
    seed: int = Field(default=0, ge=0)
    """Seed of weights init, shuffling, dropout and the validation split."""
    threads: int | None = Field(default=None, ge=1)
    """Torch intra-op threads per worker; default: cores / workers."""
    register_best: bool = True
    """Register the best checkpoint as the next version of `name` in the model registry."""
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    """Compute precision: fp32, or bf16/fp16 autocast (fp16 with a gradient scaler); weights stay fp32."""
    force_precision: bool = False
    """Train in bf16/fp16 on a CPU without fast kernels for it (refused otherwise: ~33x slower here)."""
    activation_checkpointing: bool = False
    """Recompute each transformer block's activations in backward instead of keeping them (less memory)."""


class DistributedSpec(Frozen):
    workers: int | Literal["auto"] = "auto"
    """Data-parallel processes on this node; "auto" decides from a step's counted FLOPs (one per GPU)."""
    nnodes: int = Field(default=1, ge=1)
    """Machines taking part."""
    rdzv_endpoint: str | None = None
    """HOST:PORT of the c10d rendezvous for multi-node jobs."""
    max_restarts: int = Field(default=3, ge=0)
    """Times the elastic agent restarts dead workers before giving up."""
    backend: Literal["auto", "gloo", "nccl"] = "auto"
    """Collective backend: auto = NCCL when CUDA is present, else gloo."""
    sync_batchnorm: bool = False
    """Batch norm statistics over the global batch (SyncBatchNorm; CUDA only). Default: per rank."""
    strategy: Literal["ddp", "fsdp", "auto"] = "ddp"
    """ddp: a full copy per worker; fsdp: FSDP2, parameters, gradients and optimizer state sharded
    per transformer block, sharded checkpoints; auto: fsdp when DDP would not fit memory_budget_gb."""
    memory_budget_gb: float | None = Field(default=None, gt=0.0)
    """Memory one worker may use, for strategy auto; default: machine (or GPU) memory / workers."""
    gradient_compression: Literal["none", "fp16", "bf16"] = "none"
    """DDP only: all-reduce gradients cast to fp16 or bf16 (half the bytes; lossy); none: fp32, exact."""
    bucket_mb: float | Literal["auto"] = "auto"
    """DDP only: MiB of gradients per all_reduce (DDP's bucket_cap_mb); auto: one bucket, the whole model."""

    @field_validator("workers", mode="before")
    @classmethod
    def _workers_positive(cls, v: Any) -> Any:
        if v == "auto" or (isinstance(v, int) and not isinstance(v, bool) and v >= 1):
            return v
        raise ValueError(f"must be a number of processes >= 1 or 'auto', got {v!r}")

    @field_validator("bucket_mb", mode="before")
    @classmethod
    def _bucket_positive(cls, v: Any) -> Any:
        if v == "auto" or (isinstance(v, int | float) and not isinstance(v, bool) and 0 < v <= 1024):
            return v
        raise ValueError(f"must be MiB per gradient bucket in (0, 1024] or 'auto', got {v!r}")

    @model_validator(mode="after")
    def _sync_settings_fit(self) -> DistributedSpec:
        # FSDP reduce-scatters each block's gradients itself: a DDP setting would be silently
        # ignored there, and a user who asked for compression would believe they had it.
        if self.strategy == "fsdp":
            for field, default in (("gradient_compression", "none"), ("bucket_mb", "auto")):
                if (value := getattr(self, field)) != default:
                    raise ValueError(
                        f"{field} {value} applies to DDP, not strategy fsdp (FSDP reduces each "
                        f"block's gradients itself): remove it, or use strategy ddp"
                    )
        return self


_KINDS = ("uniform", "log_uniform", "int", "choice")


def _check_param(path: str, entry: Any) -> None:
    """ValueError naming `path` unless `entry` is {KIND: [low, high]} or {choice: [...]}."""
    if not isinstance(entry, dict) or len(entry) != 1 or next(iter(entry)) not in _KINDS:
        raise ValueError(
            f"{path} must be one of {{uniform|log_uniform|int: [low, high]}} or {{choice: [...]}}"
        )
    kind, value = next(iter(entry.items()))
    if kind == "choice":
        ok = (
            isinstance(value, list)
            and value
            and all(v is None or isinstance(v, str | int | float) for v in value)
        )
        if not ok:
            raise ValueError(f"{path}: choice must be a non-empty list of numbers/strings, got {value!r}")
        return
    number = int if kind == "int" else int | float
    if (
        not isinstance(value, list)
        or len(value) != 2
        or not all(isinstance(v, number) and not isinstance(v, bool) for v in value)
    ):
        what = "whole numbers" if kind == "int" else "numbers"
        raise ValueError(f"{path}: {kind} must be [low, high] with two {what}, got {value!r}")
    low, high = value
    if low > high:
        raise ValueError(f"{path}: {kind} low must be <= high, got [{low}, {high}]")
    if kind == "log_uniform" and low <= 0:
        raise ValueError(f"{path}: log_uniform needs low > 0 (a log scale), got [{low}, {high}]")


def _lookup(raw: Any, path: str) -> tuple[bool, Any]:
    """(found, value) of dotted `path` in plain spec data; a numeric part indexes a list."""
    node = raw
    for part in path.split("."):
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return False, None
    return True, node


def _layer_param(raw: Any, path: str) -> bool:
    """Whether `path` is `model.layers.N.TYPE.PARAM` for a layer the spec has: a parameter the spec
    may leave at its default (layers are checked by the model build, which knows their names)."""
    parts = path.split(".")
    if len(parts) != 5 or parts[:2] != ["model", "layers"]:
        return False
    found, params = _lookup(raw, ".".join(parts[:4]))
    return found and isinstance(params, dict)


class TuneSpec(Frozen):
    trials: int = Field(default=20, ge=1)
    """Trials the study runs in total (a re-run resumes up to this count)."""
    parallel: int = Field(default=2, ge=1)
    """Trials running at once, each a separate process."""
    sampler: Literal["tpe", "random", "grid", "gp", "cmaes"] = "tpe"
    """Optuna sampler: tpe (Bayesian), random, grid (int/choice only), gp (Gaussian process), cmaes."""
    pruner: Literal["hyperband", "median", "none"] = "hyperband"
    """Stops unpromising trials after an epoch."""
    metric: _MONITORS = "val_accuracy"
    """Validation metric a trial reports each epoch; its best epoch's value is the trial's value."""
    direction: Literal["maximize", "minimize"] = "maximize"
    """Whether a higher or a lower `metric` is better; left out, it follows `metric`."""
    storage: str | None = None
    """Optuna storage URL (postgresql://...), or null: a journal file in SKYLIFT_HOME/studies/<study>/."""
    seed: int | None = Field(default=None, ge=0)
    """Sampler seed; null: a fresh random search each study."""
    space: dict[str, dict[str, Any]] = Field(default_factory=dict)
    """Dotted spec path -> {uniform|log_uniform|int: [low, high]} or {choice: [...]}."""

    @model_validator(mode="before")
    @classmethod
    def _infer_direction(cls, data: Any) -> Any:
        return _fill_in(data, "metric", "direction", "maximize", "minimize")

    @model_validator(mode="after")
    def _direction_fits_metric(self) -> TuneSpec:
        want = "maximize" if _HIGHER_IS_BETTER[self.metric] else "minimize"
        if self.direction != want:
            raise ValueError(
                _contradiction(self.metric, "direction", self.direction, want, "picks the worst trials by")
            )
        return self

    @field_validator("space", mode="before")
    @classmethod
    def _valid_space(cls, v: Any) -> Any:
        if not isinstance(v, dict):
            raise ValueError(f"must map dotted spec paths to ranges, got {v!r}")
        for path, entry in v.items():
            if not isinstance(path, str) or not path or path == "name" or path.startswith("tune."):
                raise ValueError(f"{path!r} cannot be searched (use a dotted path outside name and tune)")
            _check_param(path, entry)
        return v


class ServeSpec(Frozen):
    max_batch_rows: int = Field(default=64, ge=1)
    max_delay_ms: float = Field(default=2.0, ge=0.0)
    replicas: int = Field(default=2, ge=1)
    cache_mb: int = Field(default=64, ge=0)


class JobSpec(Frozen):
    name: str
    """Model name in the registry: lowercase letters, digits, '.', '_', '-'."""
    task: TaskName = "classification"
    """What the model learns: classification, regression or language_modeling (loss, metrics, outputs)."""
    data: DataSpec
    model: ModelSpec
    train: TrainSpec = Field(default_factory=TrainSpec)
    distributed: DistributedSpec = Field(default_factory=DistributedSpec)
    tune: TuneSpec = Field(default_factory=TuneSpec)
    serve: ServeSpec = Field(default_factory=ServeSpec)

    @field_validator("name")
    @classmethod
    def _name_pattern(cls, v: str) -> str:
        if not _NAME.match(v) or ".." in v:
            raise ValueError(
                "must be 1-63 lowercase letters, digits, '.', '_' or '-', "
                f"starting with a letter or digit, got {v!r}"
            )
        return v

    @model_validator(mode="before")
    @classmethod
    def _task_defaults(cls, data: Any) -> Any:
        """A task other than classification monitors and tunes its val_loss unless told otherwise."""
        if not isinstance(data, dict) or data.get("task") in (None, "classification"):
            return data
        tune = data.get("tune")
        if tune is None or (isinstance(tune, dict) and tune.get("metric") is None):
            return {**data, "tune": {**(tune or {}), "metric": "val_loss"}}
        return data

    @model_validator(mode="after")
    def _fits_the_task(self) -> JobSpec:
        allowed = TASK_METRICS[self.task]
        for field, metric in (
            ("train.checkpoint.monitor", self.train.checkpoint.monitor),
            ("tune.metric", self.tune.metric),
        ):
            if metric not in allowed:
                raise ValueError(
                    f"{field} {metric} is not a metric of the {self.task} task: "
                    f"use one of {', '.join(allowed)}"
                )
        loss = self.train.loss
        if loss is not None and loss not in _TASK_LOSSES[self.task]:
            raise ValueError(
                f"train.loss {loss} does not fit the {self.task} task: "
                f"use {' or '.join(_TASK_LOSSES[self.task])}"
            )
        d = self.data
        text = self.task == "language_modeling" or d.text_column is not None
        if text and d.tokenizer is None:
            raise ValueError(
                "data.tokenizer is needed for text: {train: bpe, vocab_size: N} or a tokenizer.json path"
            )
        if not text and d.tokenizer is not None:
            raise ValueError("data.tokenizer applies to text only: set data.text_column, or remove it")
        if self.task == "language_modeling" and d.block_size is None:
            raise ValueError("data.block_size is needed for language_modeling: the tokens per training block")
        if d.target_columns is not None and self.task != "regression":
            raise ValueError(f"data.target_columns applies to regression, not {self.task}")
        if d.chat_template is not None and self.task != "language_modeling":
            raise ValueError(f"data.chat_template applies to language_modeling, not {self.task}")
        problem = media_problem(
            self.task, d.image, d.audio, d.text_column, d.path_column, self.model.input_shape
        )
        if problem is not None:
            raise ValueError(problem)
        return self

    @model_validator(mode="after")
    def _space_paths_exist(self) -> JobSpec:
        raw = self.to_dict()
        for path in self.tune.space:
            found, value = _lookup(raw, path)
            if not found and _layer_param(raw, path):
                continue  # a layer parameter left at its default; the model build checks its name
            if not found:
                raise ValueError(f"tune.space: {path} is not a field of this spec (check the dotted path)")
            if isinstance(value, dict | list):
                raise ValueError(f"tune.space: {path} is a section; name a single value inside it")
        return self

    def to_dict(self) -> dict[str, Any]:
        """The resolved spec as plain data (every default filled in)."""
        return self.model_dump(mode="json")

    def to_yaml(self) -> str:
        text: str = yaml.safe_dump(self.to_dict(), sort_keys=False)
        return text


# Sections that change nothing about what is trained: editing them must not block a resume.
_NOT_HASHED = ("serve",)


def spec_hash(spec: JobSpec) -> str:
    """SHA-256 of the resolved spec's canonical JSON without `serve` (serving defaults): two specs
    that train the same model hash equal."""
    trained = {k: v for k, v in spec.to_dict().items() if k not in _NOT_HASHED}
    canon = json.dumps(trained, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canon.encode()).hexdigest()


def _describe(err: dict[str, Any]) -> str:
    """One line for one pydantic error: dotted field, what is wrong, the value given."""
    # repr() a key with control characters: the message must stay one line whatever the YAML held
    parts = [str(p) if str(p).isprintable() else repr(str(p)) for p in err["loc"]]
    loc = ".".join(p for p in parts if not p.startswith("function-after"))
    kind, msg = err["type"], err["msg"]
    if kind == "extra_forbidden":
        return f"{loc}: unknown field (check the spelling; see the spec reference in README.md)"
    if kind == "missing":
        return f"{loc}: required field is missing"
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    msg = msg[0].lower() + msg[1:]
    given = err.get("input")
    if ", got " in msg or isinstance(given, dict):
        return f"{loc}: {msg}" if loc else msg
    shown = repr(given)
    if len(shown) > 60:
        shown = shown[:57] + "..."
    return f"{loc}: {msg}, got {shown}" if loc else f"{msg}, got {shown}"


def _apply_override(raw: dict[str, Any], assignment: str) -> None:
    """Apply one `--set a.b.c=value` (value parsed as YAML) to the raw spec mapping; a numeric
    part indexes a list (`model.layers.0.dense.units=32`), as in tune.space."""
    path, sep, text = assignment.partition("=")
    if not sep or not path:
        raise SpecError(f"--set expects FIELD=VALUE (e.g. train.epochs=3), got {assignment!r}")
    try:
        value = yaml.safe_load(text) if text else None
    except yaml.YAMLError:
        value = text
    keys = path.split(".")
    node: Any = raw
    for i, key in enumerate(keys):
        slot: str | int = key
        if isinstance(node, list):  # a list item by its index: model.layers.0.dense.units
            if not key.isdigit() or int(key) >= len(node):
                where = ".".join(keys[:i])
                raise SpecError(
                    f"--set {path}: {where} is a list of {len(node)}: "
                    f"give an index 0..{len(node) - 1}, got {key!r}"
                )
            slot = int(key)
        elif not isinstance(node, dict):
            raise SpecError(f"--set {path}: {'.'.join(keys[:i])} is not a section")
        if i == len(keys) - 1:
            node[slot] = value
        elif isinstance(node, dict) and node.get(key) is None:
            child: dict[str, Any] = {}
            node[key] = child
            node = child
        else:
            node = node[slot]


def parse_spec(raw: Any, overrides: list[str] | tuple[str, ...] = (), source: str = "spec") -> JobSpec:
    """Validate a spec mapping (plus `--set` overrides); raise SpecError naming each bad field."""
    if not isinstance(raw, dict):
        raise SpecError(f"{source}: a job spec must be a YAML mapping, got {type(raw).__name__}")
    raw = json.loads(json.dumps(raw, default=str))  # deep copy; overrides must not leak back
    for assignment in overrides:
        _apply_override(raw, assignment)
    try:
        return JobSpec.model_validate(raw)
    except ValidationError as exc:
        errors = [_describe(dict(e)) for e in exc.errors()]
        shown = "; ".join(errors[:_MAX_ERRORS_SHOWN])
        more = f" (and {len(errors) - _MAX_ERRORS_SHOWN} more)" if len(errors) > _MAX_ERRORS_SHOWN else ""
        raise SpecError(f"{source}: {shown}{more}") from None


def load_spec(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> JobSpec:
    """Read and validate a YAML job spec file."""
    p = Path(path)
    try:
        if p.stat().st_size > MAX_SPEC_BYTES:
            raise SpecError(f"{p}: spec file is larger than {MAX_SPEC_BYTES // 1024} KiB")
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError(f"{p}: spec file not found") from None
    except IsADirectoryError:
        raise SpecError(f"{p}: is a folder, expected a YAML spec file") from None
    except UnicodeDecodeError:
        raise SpecError(f"{p}: spec file is not UTF-8 text") from None
    except OSError as exc:
        raise SpecError(f"{p}: cannot read spec file ({exc.strerror})") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise SpecError(f"{p}: invalid YAML{where}: {problem}") from None
    return parse_spec(raw, overrides, source=str(p))

"""A prediction job: its options (checked before any work), the key of its chunks, its model and input."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from skylift.errors import SpecError

if TYPE_CHECKING:
    from skylift.batch._text_source import TextSource
    from skylift.data import FeatureSource
    from skylift.registry import LoadedModel
    from skylift.security import MasterKey

FORMATS = ("npz", "npy", "csv", "parquet", "jsonl")
_EXTENSIONS = {
    ".npz": "npz",
    ".npy": "npy",
    ".csv": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
}
_KEY_VERSION = "skylift-predict-v1"  # bump when chunk results or output bytes change meaning


@dataclass(frozen=True)
class PredictJob:
    """A checked prediction job, identical on every worker (plain data: it crosses process boundaries)."""

    model: str
    """The resolved model version, NAME:VERSION (an alias is resolved once, before workers start)."""
    input: str
    """The input source string, as `skylift.data.open_features` takes it."""
    output: str
    """Absolute path of the output file."""
    output_format: str
    """One of FORMATS."""
    home: str
    """SKYLIFT_HOME holding the registry."""
    proba: bool = False
    """Each row also carries every class probability."""
    top_k: int | None = None
    """Each row also carries the k most likely classes and their probabilities."""
    batch_rows: int = 4096
    """Rows per forward pass."""
    chunk_rows: int = 16384
    """Rows per chunk: the unit spread over workers and recorded as finished for resuming."""
    label_column: str = "label"
    """csv/parquet column that is not a feature (ignored when present)."""
    text_column: str = "text"
    """A text model's input column (.csv, .parquet, .jsonl)."""
    overwrite: bool = False
    """Replace an existing output file."""

    @property
    def output_path(self) -> Path:
        return Path(self.output)

    def options(self) -> dict[str, Any]:
        """The options that change the output's bytes (workers and threads do not)."""
        keep = ("output_format", "proba", "top_k", "batch_rows", "chunk_rows", "label_column", "text_column")
        return {k: v for k, v in asdict(self).items() if k in keep}


def output_format(output: Path, explicit: str | None) -> str:
    """The format named by --output-format, else by the output's extension."""
    if explicit is not None:
        if explicit not in FORMATS:
            raise SpecError(f"--output-format must be one of {', '.join(FORMATS)}, got {explicit!r}")
        return explicit
    fmt = _EXTENSIONS.get(output.suffix.lower())
    if fmt is None:
        raise SpecError(
            f"{output}: cannot tell the output format from the extension {output.suffix or '(none)'!r}; "
            f"use .npz, .npy, .csv, .parquet or .jsonl, or pass --output-format"
        )
    return fmt


def check_options(
    fmt: str,
    proba: bool,
    top_k: int | None,
    batch_rows: int | None,
    chunk_rows: int | None,
    n_classes: int | None = None,
) -> None:
    """SpecError naming the option and the fix for any inconsistent choice (None: the default)."""
    for name, value in (("--batch-rows", batch_rows), ("--chunk-rows", chunk_rows)):
        if value is not None and value < 1:
            raise SpecError(f"{name} must be >= 1, got {value}")
    if proba and top_k is not None:
        raise SpecError("give --proba or --top-k, not both")
    if top_k is not None:
        if top_k < 1:
            raise SpecError(f"--top-k must be >= 1, got {top_k}")
        if n_classes is not None and top_k > n_classes:
            raise SpecError(f"--top-k {top_k} exceeds the model's {n_classes} classes")
    for flag, given in (("--proba", proba), ("--top-k", top_k is not None)):
        if given and fmt == "npy":  # it would hold the probabilities and lose the predicted class
            raise SpecError(f"an .npy output holds one array: use .npz, .parquet, .csv or .jsonl with {flag}")


def check_output(output: Path, overwrite: bool) -> None:
    """Refuse an output that exists (unless overwrite), is a folder, or sits where nothing can be written."""
    if output.is_dir():
        raise SpecError(f"{output} is a folder; give the output file's path")
    if output.exists() and not overwrite:
        raise SpecError(f"{output} already exists; pass --overwrite to replace it")
    parent = output.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SpecError(f"cannot create the output folder {parent}: {exc.strerror or exc}") from None
    # Create a file to find out: os.access says yes to root even where nothing can be written
    # (/proc, /sys, a read-only bind mount).
    try:
        fd, probe = tempfile.mkstemp(dir=parent, prefix=f".{output.name}.", suffix=".probe")
    except OSError as exc:
        raise SpecError(
            f"cannot write the output {output}: folder {parent} is not writable ({exc.strerror or exc})"
        ) from None
    os.close(fd)
    os.unlink(probe)


def job_key(job: PredictJob, model_sha256: str, input_identity: list[dict[str, Any]]) -> str:
    """SHA-256 naming a job's finished chunks: model weights, input files (path, size, mtime), options.

    Files are named by size and mtime, not by hashing their bytes (which would cost a full read
    of a large input); editing an input changes its mtime and so starts over.
    """
    identity = {
        "version": _KEY_VERSION,
        "model": job.model,
        "weights_sha256": model_sha256,
        "input": input_identity,
        "options": job.options(),
        "output": job.output,
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True)
class Opened:
    """A job's verified model and its open input, checked against each other."""

    model: LoadedModel
    source: FeatureSource | TextSource
    weights: str
    """SHA-256 of the model's manifest entries: names the exact weights in the job key."""


def open_job(
    job: PredictJob,
    master_key: MasterKey | None,
    arrow_threads: bool = True,
    model: LoadedModel | None = None,
) -> Opened:
    """Load the verified model (unless given) and open the input as the model's kind reads it (numeric
    features, or a text column); DataError when they do not fit."""
    from skylift.batch._kinds import kind_of
    from skylift.registry import Registry

    model = model if model is not None else Registry(job.home, master_key).load(job.model)
    weights = hashlib.sha256(json.dumps(model.files, sort_keys=True).encode()).hexdigest()
    return Opened(model, kind_of(model).open(job, model, arrow_threads), weights)

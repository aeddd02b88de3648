"""Where a run's weights and resume state go: last.pt and best.pt written by rank 0 (DDP, one
process), or sharded checkpoints every rank writes (FSDP, see train.sharded), and back."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from skylift.dist import DistInfo
from skylift.spec import JobSpec
from skylift.tasks import TASKS
from skylift.train import checkpoint, sharded
from skylift.train.run import RunDir

if TYPE_CHECKING:
    import torch


def save_last(
    run: RunDir,
    net: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    extras: dict[str, Any],
    dist: DistInfo,
    shards: bool,
) -> None:
    """last.pt (rank 0: weights, optimizer and `extras`), or a sharded last checkpoint (every rank)."""
    if shards:
        sharded.save(run.checkpoints, "last", net, optimizer, extras, dist)
    elif dist.is_main:
        checkpoint.save(run.last, {"model": net.state_dict(), "optimizer": optimizer.state_dict(), **extras})


def save_best(run: RunDir, net: torch.nn.Module, meta: dict[str, Any], dist: DistInfo, shards: bool) -> None:
    """best.pt (rank 0), or sharded best weights (every rank; `consolidate_best` makes best.pt)."""
    if shards:
        sharded.save(run.checkpoints, "best", net, None, {"meta": meta}, dist)
    elif dist.is_main:
        checkpoint.save(run.best, {"model": net.state_dict(), "meta": meta})


def consolidate_best(run: RunDir, spec: JobSpec) -> None:
    """best.pt from the sharded best checkpoint, read whole by this one process: the single file the
    registry, evaluation and serving take, so none of them needs FSDP or the training topology."""
    path = sharded.latest(run.checkpoints, "best")
    if path is None:
        return
    meta = sharded.read_extras(path)["meta"]
    task = TASKS[spec.task]
    net = task.build(spec.model, meta, tuple(meta["input_shape"]), meta["n_outputs"])
    sharded.load(path, net, None, DistInfo(), no_dist=True)
    checkpoint.save(run.best, {"model": net.state_dict(), "meta": meta})


def load_last(run: RunDir, shards: bool) -> dict[str, Any] | None:
    """Rank 0: the resume state of `run` (None for a new run); sharded, the weights stay on disk
    (every rank reads its part in `restore`) and "dir" names their folder."""
    if not shards:
        return checkpoint.load(run.last) if run.last.exists() else None
    path = sharded.latest(run.checkpoints, "last")
    return None if path is None else {**sharded.read_extras(path), "dir": str(path)}


def restore(
    state: dict[str, Any], net: torch.nn.Module, optimizer: torch.optim.Optimizer, run: RunDir, dist: DistInfo
) -> None:
    """Weights and optimizer state of a resumed run, refused (SpecError) when another model wrote them."""
    if "dir" in state:
        sharded.load(Path(state["dir"]), net, optimizer, dist)
        return
    mine = {k: list(v.shape) for k, v in net.state_dict().items()}
    found = {k: list(v.shape) for k, v in state["model"].items()}
    checkpoint.check_same_model(found, mine, run.last)
    net.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])


def check_model(run: RunDir, net: torch.nn.Module, shards: bool) -> None:
    """Raise SpecError when `run`'s last checkpoint holds another model than `net` (names the first
    difference); read before any process starts, so a refused resume writes nothing."""
    import torch

    mine = {k: list(v.shape) for k, v in net.state_dict().items()}
    if shards:
        path = sharded.latest(run.checkpoints, "last")
        if path is not None:
            checkpoint.check_same_model(sharded.shapes(path), mine, path)
    elif run.last.is_file():
        try:  # mmap: the shapes are read, not the weights
            state = torch.load(run.last, map_location="cpu", weights_only=True, mmap=True)
            found = {k: list(v.shape) for k, v in state["model"].items()}
        except Exception:  # a damaged file: fit's load says so in its own words
            return
        checkpoint.check_same_model(found, mine, run.last)

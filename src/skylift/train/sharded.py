"""Sharded checkpoints (torch.distributed.checkpoint): every rank writes its own shard, a checkpoint
becomes visible only when whole, and it loads on any worker count (resharded as it is read).

In runs/<id>/checkpoints/, for NAME last (weights, optimizer, resume state) or best (weights):

    NAME.json      {"dir": "NAME-<16 hex>"}: the pointer, replaced atomically once the folder is whole
    NAME-<hex>/    .metadata, __<rank>_0.distcp (one shard per rank), extras.pt (rank 0's resume state)

A save writes into `.NAME-<hex>.tmp/`, renames it, then replaces the pointer: a process killed at
any moment leaves the pointer naming the previous, complete checkpoint. Nothing is unpickled:
DCP reads tensors, extras.pt is read with weights_only=True.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import secrets
import shutil
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from skylift import _atomic
from skylift.dist import DistInfo
from skylift.errors import SkyliftError
from skylift.train.checkpoint import check_same_model

if TYPE_CHECKING:
    import torch

EXTRAS = "extras.pt"


@contextlib.contextmanager
def _single_process_is_meant() -> Iterator[None]:
    """Silence DCP's warning that it "assumes" one process: one process is what no_dist asks for."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is disabled", category=UserWarning)
        yield


def _token(dist: DistInfo) -> str:
    """A fresh folder name part, the same on every rank (rank 0's, broadcast)."""
    import torch

    token = torch.tensor([secrets.randbits(62)], dtype=torch.int64, device=dist.device)
    if dist.distributed:
        import torch.distributed

        torch.distributed.broadcast(token, src=0)
    return f"{int(token):016x}"


def _state(net: torch.nn.Module, optimizer: torch.optim.Optimizer | None) -> dict[str, Any]:
    """The model's (and optimizer's) state keyed by parameter names: sharded tensors under FSDP, full
    ones otherwise; the same names either way, which is what lets a checkpoint change worker count."""
    from torch.distributed.checkpoint.state_dict import get_model_state_dict, get_state_dict

    if optimizer is None:
        return {"model": get_model_state_dict(net)}
    model, optim = get_state_dict(net, optimizer)
    return {"model": model, "optim": optim}


def save(
    folder: Path,
    name: str,
    net: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None,
    extras: dict[str, Any],
    dist: DistInfo,
) -> Path:
    """Every rank writes its shard of `net` (and `optimizer`), rank 0 adds `extras` and publishes
    the checkpoint; a collective: every rank calls it. Returns the published folder."""
    import torch
    from torch.distributed.checkpoint.state_dict_saver import save as dcp_save

    token = _token(dist)
    tmp, final = folder / f".{name}-{token}.tmp", folder / f"{name}-{token}"
    # DCP writes each file and fsyncs it; its last step (rank 0's .metadata) follows every rank's writes
    with _single_process_is_meant():
        dcp_save(_state(net, optimizer), checkpoint_id=tmp, no_dist=not dist.distributed)
    if dist.is_main:
        buf = io.BytesIO()
        torch.save(extras, buf)
        _atomic.write_bytes(tmp / EXTRAS, buf.getvalue())
        os.replace(tmp, final)
        _atomic.write_json(folder / f"{name}.json", {"dir": final.name})
        for old in [*folder.glob(f"{name}-*"), *folder.glob(f".{name}-*.tmp")]:
            if old.name != final.name:
                shutil.rmtree(old, ignore_errors=True)
    return final


def latest(folder: Path, name: str) -> Path | None:
    """The folder NAME.json points to, or None when no checkpoint NAME was ever published."""
    pointer = folder / f"{name}.json"
    if not pointer.is_file():
        return None
    try:
        target = folder / str(json.loads(pointer.read_text())["dir"])
    except (ValueError, KeyError, TypeError):
        raise SkyliftError(f"{pointer}: not a skylift checkpoint pointer") from None
    if target.parent != folder or not (target / ".metadata").is_file():
        raise SkyliftError(f"{pointer}: names {target.name}, which is not a complete checkpoint")
    return target


def read_extras(path: Path) -> dict[str, Any]:
    """The resume state rank 0 stored beside the shards (history, RNG, position, meta)."""
    import torch

    try:
        extras: dict[str, Any] = torch.load(path / EXTRAS, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a damaged or foreign file
        raise SkyliftError(
            f"{path / EXTRAS}: not a readable skylift checkpoint ({type(exc).__name__})"
        ) from None
    return extras


def shapes(path: Path, prefix: str = "model.") -> dict[str, list[int]]:
    """Every tensor's global shape in the checkpoint at `path`, by name (without `prefix`)."""
    from torch.distributed.checkpoint.filesystem import FileSystemReader
    from torch.distributed.checkpoint.metadata import TensorStorageMetadata

    meta = FileSystemReader(str(path)).read_metadata()
    return {
        key[len(prefix) :]: list(m.size)
        for key, m in meta.state_dict_metadata.items()
        if key.startswith(prefix) and isinstance(m, TensorStorageMetadata)
    }


def load(
    path: Path,
    net: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None,
    dist: DistInfo,
    no_dist: bool = False,
) -> None:
    """Read the checkpoint at `path` into `net` (and `optimizer`), whatever worker count wrote it.

    Raises SpecError naming the first difference when it holds another model. A collective unless
    `no_dist` (one process reading on its own, e.g. rank 0 consolidating the best weights).
    """
    from torch.distributed.checkpoint.state_dict import set_model_state_dict, set_state_dict
    from torch.distributed.checkpoint.state_dict_loader import load as dcp_load

    state = _state(net, optimizer)
    check_same_model(shapes(path), {k: list(v.shape) for k, v in state["model"].items()}, path)
    with _single_process_is_meant():
        dcp_load(state, checkpoint_id=path, no_dist=no_dist or not dist.distributed)
    if optimizer is None:
        set_model_state_dict(net, state["model"])
    else:
        set_state_dict(net, optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"])

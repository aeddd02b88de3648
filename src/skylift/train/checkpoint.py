"""Checkpoints: atomic writes, safe loads (weights_only), and the metadata to rebuild a model."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from skylift import _atomic
from skylift.errors import ModelNotFound, SkyliftError, SpecError


def save(path: Path, state: dict[str, Any]) -> None:
    """Write `state` with torch.save to a temp file, fsync, rename over `path`."""
    import torch

    buf = io.BytesIO()
    torch.save(state, buf)
    _atomic.write_bytes(path, buf.getvalue())


def load(path: Path) -> dict[str, Any]:
    """Load one of our own checkpoints; weights_only=True so nothing is unpickled."""
    import torch

    if not path.is_file():
        raise ModelNotFound(f"{path}: checkpoint not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a damaged or foreign file
        raise SkyliftError(f"{path}: not a readable skylift checkpoint ({type(exc).__name__})") from None
    if not isinstance(state, dict) or "model" not in state or "meta" not in state:
        raise SkyliftError(f"{path}: not a skylift checkpoint (missing model weights or metadata)")
    return state


def check_same_model(found: dict[str, list[int]], expected: dict[str, list[int]], path: Path) -> None:
    """Raise SpecError naming the first difference when a checkpoint's tensors (name -> shape) are
    not the model's: a checkpoint written by another model is refused, never half loaded."""
    for key, shape in expected.items():
        if key not in found:
            raise SpecError(f"{path} was written by another model: it has no {key} (this model's {shape})")
        if found[key] != shape:
            raise SpecError(
                f"{path} was written by another model: {key} is {found[key]} there, {shape} in this model"
            )
    extra = sorted(set(found) - set(expected))
    if extra:
        raise SpecError(f"{path} was written by another model: it has {extra[0]}, which this model lacks")

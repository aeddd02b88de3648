"""Parameter counts and a per-layer summary table of a built model (data only, no printing)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from skylift.models._layers import fmt
from skylift.models._probe import run_dummy
from skylift.models._stack import takes_token_ids


def count_parameters(model: nn.Module) -> int:
    """Number of parameter values (trainable or frozen; buffers such as BN running stats excluded)."""
    return sum(p.numel() for p in model.parameters())


def _shape_of(out: Any) -> str:
    """Per-sample shape of a layer's output as a string: [256]; tuples as [a], [b]; '?' otherwise."""
    if isinstance(out, torch.Tensor):
        return fmt(tuple(out.shape[1:]))
    if isinstance(out, tuple | list):
        return ", ".join(_shape_of(o) for o in out)
    return "?"


def describe_model(model: nn.Module, input_shape: tuple[int, ...]) -> list[tuple[str, str, int]]:
    """Rows (layer name, per-sample output shape, parameter count), one per top-level child.

    Shapes come from a dummy batch run in eval mode (modes are restored): token ids for a model
    that starts with token_embedding, zeros otherwise. A child that the
    forward pass never calls shows '-'; a model without children is one row of its class name.
    Raises whatever the model raises on that batch.
    """
    children = list(model.named_children()) or [(type(model).__name__, model)]
    shapes: dict[str, str] = {}
    handles: list[RemovableHandle] = []
    for name, child in children:

        def hook(_mod: nn.Module, _inp: Any, out: Any, name: str = name) -> None:
            shapes[name] = _shape_of(out)

        handles.append(child.register_forward_hook(hook))
    try:
        run_dummy(model, tuple(input_shape), token_ids=takes_token_ids(model))
    finally:
        for handle in handles:
            handle.remove()
    return [(name, shapes.get(name, "-"), count_parameters(child)) for name, child in children]

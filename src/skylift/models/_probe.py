"""Running a zero dummy batch through a module to learn its output shape at build time.

Shape legend: B batch (2 here), S the per-sample input dims, K classes.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from skylift.errors import SpecError
from skylift.models._layers import fmt

PROBE_BATCH = 2  # rows in the dummy batch: more than 1, so no op can confuse batch and sample


def first_line(exc: BaseException, limit: int = 200) -> str:
    """`Type: message` of an exception, on one line and at most `limit` characters."""
    lines = str(exc).strip().splitlines()
    text = f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def run_dummy(module: nn.Module, input_shape: tuple[int, ...]) -> Any:
    """Output of `module` on a float32 zero batch, in eval mode under no_grad.

    Every submodule's train/eval mode is restored afterwards, so a caller's choices survive.
    Zeros are valid token ids too, so embeddings run. Exceptions from the module propagate.
    """
    param = next(module.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    x_BS = torch.zeros((PROBE_BATCH, *input_shape), dtype=torch.float32, device=device)
    modes = [(sub, sub.training) for sub in module.modules()]
    module.eval()
    try:
        with torch.no_grad():
            return module(x_BS)
    finally:
        for sub, training in modes:
            sub.training = training


def check_logits(out: Any, n_classes: int) -> None:
    """Raise SpecError unless `out` (a model's output on the dummy batch) is logits (B, n_classes)."""
    if not isinstance(out, torch.Tensor):
        raise SpecError(
            f"model output is a {type(out).__name__}, expected one logits tensor of shape "
            f"[batch, {n_classes}]"
        )
    logits_BK = out
    if logits_BK.dim() < 1 or logits_BK.shape[0] != PROBE_BATCH:
        raise SpecError(
            f"model output has shape {fmt(tuple(logits_BK.shape))} for a batch of {PROBE_BATCH}: "
            "the first dim must stay the batch dim"
        )
    check_output_shape(tuple(logits_BK.shape[1:]), n_classes)


def check_output_shape(per_sample: tuple[int, ...], n_classes: int) -> None:
    """Raise SpecError unless a per-sample output shape is (n_classes,), with the fix."""
    if per_sample == (n_classes,):
        return
    hint = f"dense: {{units: {n_classes}}}"
    if len(per_sample) == 1:
        fix = f"last layer should be {hint}"
    else:
        fix = f"flatten or pool to one dim, then end with {hint}"
    raise SpecError(f"model output has shape {fmt(per_sample)} but the data has {n_classes} classes ({fix})")

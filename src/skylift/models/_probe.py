"""Running a zero dummy batch through a module to learn its output shape at build time.

Shape legend: B batch (2 here), S the per-sample input dims, T tokens, K outputs (classes, targets or
the vocabulary size V of a language model).
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


def run_dummy(module: nn.Module, input_shape: tuple[int, ...], *, token_ids: bool = False) -> Any:
    """Output of `module` on a dummy batch, in eval mode under no_grad.

    The batch is float32 zeros (valid ids for `embedding` too), or with `token_ids` int64 ones:
    id 0 is padding, and a batch of padding alone would not exercise the real-token path. Every
    submodule's train/eval mode is restored afterwards, so a caller's choices survive. Exceptions
    from the module propagate.
    """
    param = next(module.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    if token_ids:
        x_BS = torch.ones((PROBE_BATCH, *input_shape), dtype=torch.int64, device=device)
    else:
        x_BS = torch.zeros((PROBE_BATCH, *input_shape), dtype=torch.float32, device=device)
    modes = [(sub, sub.training) for sub in module.modules()]
    module.eval()
    try:
        with torch.no_grad():
            return module(x_BS)
    finally:
        for sub, training in modes:
            sub.training = training


def check_logits(out: Any, n_outputs: int, per_token: int | None = None) -> None:
    """Raise SpecError unless `out` (a model's output on the dummy batch) is (B, n_outputs).

    With `per_token` = T (a language model) the output must be (B, T, n_outputs) instead.
    """
    if not isinstance(out, torch.Tensor):
        wanted = f"[batch, {per_token}, {n_outputs}]" if per_token else f"[batch, {n_outputs}]"
        raise SpecError(
            f"model output is a {type(out).__name__}, expected one logits tensor of shape {wanted}"
        )
    logits_BK = out
    if logits_BK.dim() < 1 or logits_BK.shape[0] != PROBE_BATCH:
        raise SpecError(
            f"model output has shape {fmt(tuple(logits_BK.shape))} for a batch of {PROBE_BATCH}: "
            "the first dim must stay the batch dim"
        )
    check_output_shape(tuple(logits_BK.shape[1:]), n_outputs, per_token)


def check_output_shape(per_sample: tuple[int, ...], n_outputs: int, per_token: int | None = None) -> None:
    """Raise SpecError unless a per-sample output shape is (n_outputs,), with the fix.

    With `per_token` = T (a language model over T tokens) the shape must be (T, n_outputs).
    """
    if per_token is not None:
        if per_sample == (per_token, n_outputs):
            return
        raise SpecError(
            f"model output has shape {fmt(per_sample)} but a language model over {per_token} tokens "
            f"with a vocabulary of {n_outputs} must output {fmt((per_token, n_outputs))} "
            "(end with lm_head: {})"
        )
    if per_sample == (n_outputs,):
        return
    hint = f"dense: {{units: {n_outputs}}}"
    if len(per_sample) == 1:
        fix = f"last layer should be {hint}"
    else:
        fix = f"flatten or pool to one dim, then end with {hint}"
    raise SpecError(f"model output has shape {fmt(per_sample)} but the data has {n_outputs} classes ({fix})")

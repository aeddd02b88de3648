"""Factory models: `package.module:function` imported and called with the spec's kwargs."""

from __future__ import annotations

import importlib
from typing import Any

from torch import nn

from skylift.errors import SpecError
from skylift.models._layers import fmt
from skylift.models._probe import check_logits, first_line, run_dummy


def build_factory(
    ref: str,
    kwargs: dict[str, Any],
    input_shape: tuple[int, ...],
    n_outputs: int,
    *,
    vocab_size: int | None = None,
) -> nn.Module:
    """Import only `ref`'s module, call its function with `kwargs`, check the output on a dummy batch.

    The factory owns its weight init (model.init does not apply). With `vocab_size` the dummy
    batch is int64 token ids, and when n_outputs == vocab_size the output must be per-token
    logits (B, T, V). Every failure is one SpecError line naming the factory: bad reference,
    import error, missing attribute, an exception in the call, a result that is not an
    nn.Module, or a model whose output is not (B, n_outputs).
    """
    where = f"model.factory {ref!r}"
    module_path, _, func_name = ref.partition(":")
    if not func_name.isidentifier() or not all(p.isidentifier() for p in module_path.split(".")):
        raise SpecError(f"{where}: must look like 'package.module:function'")
    try:
        module = importlib.import_module(module_path)
    except Exception as exc:  # the module's own import-time code may raise anything
        raise SpecError(f"{where}: cannot import module {module_path!r} ({first_line(exc)})") from None
    if not hasattr(module, func_name):
        raise SpecError(f"{where}: module {module_path!r} has no attribute {func_name!r}")
    func = getattr(module, func_name)
    if not callable(func):
        raise SpecError(f"{where}: {func_name!r} is not callable (it is a {type(func).__name__} value)")
    try:
        model = func(**kwargs)
    except Exception as exc:
        raise SpecError(f"{where}: calling it with model.kwargs raised {first_line(exc)}") from None
    if not isinstance(model, nn.Module):
        raise SpecError(f"{where}: returned a {type(model).__name__} value, expected a torch.nn.Module")
    try:
        out = run_dummy(model, input_shape, token_ids=vocab_size is not None)
    except Exception as exc:
        raise SpecError(
            f"{where}: the model fails on a dummy batch of input {fmt(input_shape)}: {first_line(exc)}"
        ) from None
    per_token = input_shape[0] if vocab_size is not None and n_outputs == vocab_size else None
    check_logits(out, n_outputs, per_token)
    return model

"""Building a model from a ModelSpec: the declarative layer list checked layer by layer, or a factory."""

from __future__ import annotations

import difflib
import operator
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import BaseModel, ValidationError
from torch import nn

from skylift.errors import SpecError
from skylift.models._factory import build_factory
from skylift.models._layers import LAYERS, LayerProblem, fmt
from skylift.models._probe import check_output_shape, first_line, run_dummy
from skylift.spec import ModelSpec


def build_model(spec: ModelSpec, input_shape: tuple[int, ...], n_classes: int) -> nn.Module:
    """Build the model for per-sample `input_shape` with `n_classes` output logits.

    `input_shape` is already resolved (spec.input_shape, or the data's shape). The model takes
    float32 x of shape (B, *input_shape) and returns logits (B, n_classes); it comes back in
    training mode, on the CPU. Every layer's output shape is checked at build time by running a
    zero batch of 2 through it in eval mode under no_grad. Raises SpecError naming the layer.
    """
    try:
        shape = tuple(operator.index(d) for d in input_shape)  # numpy ints welcome, floats not
    except TypeError:
        shape = ()
    if not shape or min(shape) < 1:
        raise SpecError(
            f"model.input_shape must be a non-empty list of positive sizes, got {list(input_shape)}"
        )
    if n_classes < 1:
        raise SpecError(f"the data must have at least 1 class, got n_classes={n_classes}")
    if spec.factory is not None:
        return build_factory(spec.factory, spec.kwargs, shape, n_classes)
    if not spec.layers:
        raise SpecError("model.layers must hold at least one layer")
    model = build_layers(spec.layers, shape, n_classes)
    if spec.init == "glorot_uniform":
        glorot_init(model)
    return model


def build_layers(layers: Sequence[Any], input_shape: tuple[int, ...], n_classes: int) -> nn.Sequential:
    """An nn.Sequential of the declarative layers, children named `{type}_{index}` (dense_0, ...)."""
    children: OrderedDict[str, nn.Module] = OrderedDict()
    shape = input_shape
    for i, entry in enumerate(layers):
        kind, raw = _split_entry(i, entry)
        where = f"model.layers[{i}] ({kind})"
        params = _validate(where, LAYERS[kind].params, raw)
        try:
            module = LAYERS[kind].build(params, shape)
        except LayerProblem as exc:
            field = f".{exc.field}" if exc.field else ""
            raise SpecError(f"{where}{field}: {exc}") from None
        try:
            out = run_dummy(module, shape)
        except Exception as exc:  # torch's own shape checks: kernel larger than input, ...
            raise SpecError(f"{where}: cannot run on input {fmt(shape)}: {first_line(exc)}") from None
        out_shape = tuple(out.shape[1:])
        if 0 in out_shape:
            raise SpecError(f"{where}: output shape {fmt(out_shape)} on input {fmt(shape)} is empty")
        children[f"{kind}_{i}"] = module
        shape = out_shape
    check_output_shape(shape, n_classes)
    return nn.Sequential(children)


def _split_entry(i: int, entry: Any) -> tuple[str, Any]:
    """(type, raw params) of one `{type: {params}}` entry; SpecError if it is not one."""
    example = "like `- dense: {units: 10}`"
    if not isinstance(entry, Mapping):
        shown = repr(entry) if len(repr(entry)) <= 60 else repr(entry)[:57] + "..."
        raise SpecError(f"model.layers[{i}]: each layer must be a one-key mapping {example}, got {shown}")
    if len(entry) != 1:
        keys = ", ".join(str(k) for k in entry)
        raise SpecError(
            f"model.layers[{i}]: each layer must be a one-key mapping {example}, got {len(entry)} keys "
            f"({keys}); start each layer with its own '-'"
        )
    ((kind, raw),) = entry.items()
    if kind not in LAYERS:
        close = difflib.get_close_matches(str(kind), LAYERS, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise SpecError(
            f"model.layers[{i}]: unknown layer type {kind!r} ({hint}known: {', '.join(sorted(LAYERS))})"
        )
    return str(kind), raw


def _validate(where: str, params_model: type[BaseModel], raw: Any) -> BaseModel:
    """The layer's params validated by its pydantic model; SpecError naming the first bad field."""
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise SpecError(f"{where}: parameters must be a mapping like {{name: value}} or {{}}, got {raw!r}")
    try:
        return params_model.model_validate(dict(raw))
    except ValidationError as exc:
        # an unknown (misspelt) parameter first: it explains the "missing" error that follows
        errors = sorted(exc.errors(), key=lambda e: e["type"] != "extra_forbidden")
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise SpecError(_describe(where, params_model, dict(errors[0])) + more) from None


def _describe(where: str, params_model: type[BaseModel], err: dict[str, Any]) -> str:
    """One line for one pydantic error: layer, parameter, what is wrong, the value given."""
    loc = ".".join(str(p) for p in err["loc"] if isinstance(p, str))
    field = f"{where}.{loc}" if loc else where
    if err["type"] == "extra_forbidden":
        allowed = ", ".join(params_model.model_fields)
        return f"{field}: unknown parameter ({f'allowed: {allowed}' if allowed else 'takes no parameters'})"
    if err["type"] == "missing":
        return f"{field}: required parameter is missing"
    msg = str(err["msg"]).removeprefix("Value error, ")
    given = repr(err.get("input"))
    given = given if len(given) <= 60 else given[:57] + "..."
    return f"{field}: {msg[0].lower() + msg[1:]}, got {given}"


def glorot_init(model: nn.Module) -> None:
    """Keras' default init: Glorot-uniform weights and zero bias on every Linear and Conv.

    Why not torch's default (Kaiming-uniform with a=sqrt(5), nonzero bias): the seed MNIST MLP
    reaches Keras-level accuracy with Keras' defaults, and users port models from Keras. Linear
    layers inside transformer blocks are included; recurrent and embedding weights keep torch's
    init.
    """
    for module in model.modules():
        if isinstance(module, nn.Linear | nn.Conv1d | nn.Conv2d):
            nn.init.xavier_uniform_(module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)

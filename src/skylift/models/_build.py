"""Building a model from a ModelSpec: the declarative layer list checked layer by layer, or a factory."""

from __future__ import annotations

import difflib
import math
import operator
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from pydantic import BaseModel, ValidationError
from torch import nn

from skylift.errors import SpecError
from skylift.models._factory import build_factory
from skylift.models._layers import LAYERS, Context, LayerProblem, fmt
from skylift.models._probe import check_output_shape, first_line, run_dummy
from skylift.models._stack import LayerStack
from skylift.models._tokens import INIT_STD, TokenEmbedding
from skylift.models._transformer import transformer_blocks
from skylift.spec import ModelSpec


def build_model(
    spec: ModelSpec, input_shape: tuple[int, ...], n_outputs: int, *, vocab_size: int | None = None
) -> nn.Module:
    """Build the model for per-sample `input_shape` with `n_outputs` outputs.

    `input_shape` is already resolved (spec.input_shape, or the data's shape; (T,) for token ids:
    the block size or max length). `n_outputs` counts classes, regression targets, or, for a
    language model, the vocabulary. `vocab_size` is the tokenizer's, given when the input is token
    ids; token_embedding and lm_head take it from here. The model maps x of shape
    (B, *input_shape), float32 or int64 token ids, to (B, n_outputs), or to per-token logits
    (B, T, V) when n_outputs == vocab_size (a language model). It comes back in training mode,
    on the CPU. Every layer's output shape is checked at build time by running a dummy batch of 2
    through it in eval mode under no_grad. Raises SpecError naming the layer.
    """
    try:
        shape = tuple(operator.index(d) for d in input_shape)  # numpy ints welcome, floats not
    except TypeError:
        shape = ()
    if not shape or min(shape) < 1:
        raise SpecError(
            f"model.input_shape must be a non-empty list of positive sizes, got {list(input_shape)}"
        )
    if n_outputs < 1:
        raise SpecError(f"the data must have at least 1 class or target, got n_outputs={n_outputs}")
    if vocab_size is not None and vocab_size < 2:
        raise SpecError(f"the tokenizer's vocab_size must be >= 2 (id 0 is padding), got {vocab_size}")
    # per-token logits are wanted exactly when the outputs are the vocabulary: a language model
    per_token = shape[0] if vocab_size is not None and n_outputs == vocab_size else None
    if spec.factory is not None:
        return build_factory(spec.factory, spec.kwargs, shape, n_outputs, vocab_size=vocab_size)
    if not spec.layers:
        raise SpecError("model.layers must hold at least one layer")
    model = build_layers(spec.layers, shape, n_outputs, vocab_size=vocab_size, per_token=per_token)
    if spec.init == "glorot_uniform":
        glorot_init(model)
    elif spec.init == "gpt2":
        gpt2_init(model)
    return model


def build_layers(
    layers: Sequence[Any],
    input_shape: tuple[int, ...],
    n_outputs: int,
    *,
    vocab_size: int | None = None,
    per_token: int | None = None,
) -> LayerStack:
    """A LayerStack (an nn.Sequential) of the declarative layers, children named `{type}_{index}`.

    Children are named dense_0, token_embedding_0, ... The stack reads token ids when the first
    layer is a token_embedding, and then hands the padding mask to the layers that take it.
    """
    children: OrderedDict[str, nn.Module] = OrderedDict()
    shape = input_shape
    ctx = Context(index=0, vocab_size=vocab_size)
    for i, entry in enumerate(layers):
        kind, raw = _split_entry(i, entry)
        where = f"model.layers[{i}] ({kind})"
        params = _validate(where, LAYERS[kind].params, raw)
        ctx = replace(ctx, index=i)
        try:
            module = LAYERS[kind].build(params, shape, ctx)
        except LayerProblem as exc:
            field = f".{exc.field}" if exc.field else ""
            raise SpecError(f"{where}{field}: {exc}") from None
        if isinstance(module, TokenEmbedding):  # always layer 0: its builder checks
            ctx = replace(ctx, embedding=module)
        try:
            out = run_dummy(module, shape, token_ids=module is ctx.embedding)
        except Exception as exc:  # torch's own shape checks: kernel larger than input, ...
            raise SpecError(f"{where}: cannot run on input {fmt(shape)}: {first_line(exc)}") from None
        out_shape = tuple(out.shape[1:])
        if 0 in out_shape:
            raise SpecError(f"{where}: output shape {fmt(out_shape)} on input {fmt(shape)} is empty")
        children[f"{kind}_{i}"] = module
        shape = out_shape
    check_output_shape(shape, n_outputs, per_token)
    return LayerStack(children, token_ids=ctx.embedding is not None)


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


def gpt2_init(model: nn.Module) -> None:
    """GPT-2's init: normal(0, 0.02) weights and zero bias on every Linear and Conv, and the
    projections that write into the residual stream (attention's `proj`, the MLP's `down`) scaled
    by 1 / sqrt(2 x blocks), so the stream's variance does not grow with depth (Radford et al. 2019)."""
    for module in model.modules():
        if isinstance(module, nn.Linear | nn.Conv1d | nn.Conv2d):
            nn.init.normal_(module.weight, std=INIT_STD)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
    blocks = transformer_blocks(model)
    for block in blocks:
        for name, param in block.named_parameters():
            if name in ("attn.proj.weight", "mlp.down.weight"):
                nn.init.normal_(param, std=INIT_STD / math.sqrt(2 * len(blocks)))


def glorot_init(model: nn.Module) -> None:
    """Keras' default init: Glorot-uniform weights and zero bias on every Linear and Conv.

    Why not torch's default (Kaiming-uniform with a=sqrt(5), nonzero bias): the seed MNIST MLP
    reaches Keras-level accuracy with Keras' defaults, and users port models from Keras. Linear
    layers inside transformer and decoder blocks are included; recurrent and `embedding` weights
    keep torch's init, token_embedding and untied lm_head weights their GPT-2 init (normal, std 0.02).
    """
    for module in model.modules():
        if isinstance(module, nn.Linear | nn.Conv1d | nn.Conv2d):
            nn.init.xavier_uniform_(module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)

"""One builder per declarative layer type, and the registry that maps type names to them.

A builder gets the layer's validated parameters, the per-sample input shape (batch dim left
out) and the build Context, and returns the module; it raises LayerProblem when the input shape
or a parameter cannot work. Output shapes are not computed here: the caller runs a dummy batch
through the module.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel
from torch import nn

from skylift.models import _modules as m
from skylift.models import _residual as res
from skylift.models import _tokens as tok
from skylift.models import _transformer as tf
from skylift.models._params import (
    ActivationParams,
    BatchNormParams,
    ConvParams,
    DecoderBlockParams,
    DenseParams,
    DropoutParams,
    EmbeddingParams,
    FlattenParams,
    GlobalAvgPoolParams,
    LayerNormParams,
    LMHeadParams,
    NormParams,
    PoolParams,
    PositionEmbeddingParams,
    RecurrentParams,
    ReshapeParams,
    ResidualParams,
    SequencePoolParams,
    TokenEmbeddingParams,
    TransformerEncoderParams,
)

Shape = tuple[int, ...]


class LayerProblem(Exception):
    """A layer cannot be built on its input; `field` names the parameter at fault, if one is."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class Context:
    """What a builder may need beyond its parameters and input shape."""

    index: int
    """Position of the layer in model.layers."""
    vocab_size: int | None = None
    """The tokenizer's vocabulary size; None when the input is not token ids."""
    embedding: tok.TokenEmbedding | None = field(default=None, repr=False)
    """The model's token embedding, once built: what a tied lm_head shares its weight with."""


def fmt(shape: Shape | list[int]) -> str:
    """A shape as users write it in a spec: [28, 28]."""
    return "[" + ", ".join(str(d) for d in shape) + "]"


def _need_rank(shape: Shape, ranks: tuple[int, ...], described: str) -> None:
    if len(shape) not in ranks:
        raise LayerProblem(f"needs input {described}, got {fmt(shape)}")


def _per_dim(value: int | tuple[int, ...], dims: int, field: str) -> tuple[int, ...]:
    """Expand a kernel size or stride to one int per spatial dim."""
    if isinstance(value, int):
        return (value,) * dims
    if len(value) != dims:
        wanted = "1 size" if dims == 1 else f"1 or {dims} sizes"
        raise LayerProblem(f"needs {wanted} for this input, got {len(value)}", field)
    return value


def _dense(p: DenseParams, shape: Shape, ctx: Context) -> nn.Module:
    return m.Dense(shape[-1], p.units, p.bias, m.make_activation(p.activation))


def _dropout(p: DropoutParams, shape: Shape, ctx: Context) -> nn.Module:
    return nn.Dropout(p.rate)


def _batchnorm(p: BatchNormParams, shape: Shape, ctx: Context) -> nn.Module:
    _need_rank(shape, (1, 2, 3), "[features], [channels, length] or [channels, height, width]")
    cls = nn.BatchNorm2d if len(shape) == 3 else nn.BatchNorm1d
    return cls(shape[0], eps=p.eps, momentum=p.momentum)


def _layernorm(p: LayerNormParams, shape: Shape, ctx: Context) -> nn.Module:
    return nn.LayerNorm(shape[-1], eps=p.eps)


def _activation(p: ActivationParams, shape: Shape, ctx: Context) -> nn.Module:
    return m.make_activation(p.name)


def _flatten(p: FlattenParams, shape: Shape, ctx: Context) -> nn.Module:
    return nn.Flatten()


def _reshape(p: ReshapeParams, shape: Shape, ctx: Context) -> nn.Module:
    count = math.prod(shape)
    known = math.prod(d for d in p.shape if d != -1)
    target = list(p.shape)
    if -1 in target:
        if count % known:
            raise LayerProblem(
                f"cannot reshape {fmt(shape)} ({count} values) to {fmt(p.shape)}: "
                f"{count} is not a multiple of {known}",
                "shape",
            )
        target[target.index(-1)] = count // known
    elif known != count:
        raise LayerProblem(
            f"cannot reshape {fmt(shape)} ({count} values) to {fmt(p.shape)} ({known} values)", "shape"
        )
    return m.Reshape(tuple(target))


def _same_padding(sizes: Shape, kernel: Shape, stride: Shape) -> list[tuple[int, int]]:
    """Keras 'same': output = ceil(size / stride), the odd pixel of padding goes after."""
    pads = []
    for n, k, s in zip(sizes, kernel, stride, strict=True):
        total = max((math.ceil(n / s) - 1) * s + k - n, 0)
        pads.append((total // 2, total - total // 2))
    return pads


def _conv(p: ConvParams, shape: Shape, dims: int) -> nn.Module:
    if dims == 1:
        _need_rank(shape, (2,), "[channels, length]")
    else:
        _need_rank(shape, (3,), "[channels, height, width]")
    kernel = _per_dim(p.kernel_size, dims, "kernel_size")
    stride = _per_dim(p.stride, dims, "stride")
    padding: tuple[int, ...] = (0,) * dims
    pad: tuple[int, ...] = ()
    if p.padding == "same":
        pads = _same_padding(shape[1:], kernel, stride)
        if all(lo == hi for lo, hi in pads):
            padding = tuple(lo for lo, _ in pads)
        else:  # F.pad lists the last dim first
            pad = tuple(x for lo_hi in reversed(pads) for x in lo_hi)
    elif isinstance(p.padding, int):
        padding = (p.padding,) * dims
    cls = m.Conv1d if dims == 1 else m.Conv2d
    # softmax over the channel dim, the features of a channels-first conv output
    act = m.make_activation(p.activation, dim=1)
    return cls(shape[0], p.filters, kernel, stride, padding, pad, act)


def _conv1d(p: ConvParams, shape: Shape, ctx: Context) -> nn.Module:
    return _conv(p, shape, 1)


def _conv2d(p: ConvParams, shape: Shape, ctx: Context) -> nn.Module:
    return _conv(p, shape, 2)


def _residual(p: ResidualParams, shape: Shape, ctx: Context) -> nn.Module:
    _need_rank(shape, (2, 3), "[channels, length] or [channels, height, width]")
    dims = len(shape) - 1
    kernel = _per_dim(p.kernel_size, dims, "kernel_size")
    if any(k % 2 == 0 for k in kernel):
        raise LayerProblem(f"must be odd, so each block keeps the size; got {list(kernel)}", "kernel_size")
    stride = _per_dim(p.stride, dims, "stride")
    blocks = [
        res.ResidualBlock(
            dims,
            shape[0] if i == 0 else p.filters,
            p.filters,
            kernel,
            stride if i == 0 else (1,) * dims,
            m.make_activation(p.activation),
        )
        for i in range(p.repeat)
    ]
    return nn.Sequential(*blocks)


def _pool(p: PoolParams, shape: Shape, average: bool) -> nn.Module:
    _need_rank(shape, (2, 3), "[channels, length] or [channels, height, width]")
    dims = len(shape) - 1
    size = _per_dim(p.size, dims, "size")
    stride = size if p.stride is None else _per_dim(p.stride, dims, "stride")
    if dims == 1:
        return nn.AvgPool1d(size[0], stride[0]) if average else nn.MaxPool1d(size[0], stride[0])
    size2, stride2 = (size[0], size[1]), (stride[0], stride[1])
    return nn.AvgPool2d(size2, stride2) if average else nn.MaxPool2d(size2, stride2)


def _maxpool(p: PoolParams, shape: Shape, ctx: Context) -> nn.Module:
    return _pool(p, shape, average=False)


def _avgpool(p: PoolParams, shape: Shape, ctx: Context) -> nn.Module:
    return _pool(p, shape, average=True)


def _global_avgpool(p: GlobalAvgPoolParams, shape: Shape, ctx: Context) -> nn.Module:
    _need_rank(shape, (2, 3), "[channels, length] or [channels, height, width]")
    return m.GlobalAvgPool()


def _embedding(p: EmbeddingParams, shape: Shape, ctx: Context) -> nn.Module:
    return m.IdEmbedding(p.vocab_size, p.dim)


def _position_embedding(p: PositionEmbeddingParams, shape: Shape, ctx: Context) -> nn.Module:
    _need_rank(shape, (2,), "[length, dim]")
    return m.PositionEmbedding(shape[0], shape[1])


def _recurrent(p: RecurrentParams, shape: Shape, kind: Literal["lstm", "gru"]) -> nn.Module:
    _need_rank(shape, (2,), "[length, features]")
    if p.dropout and p.num_layers == 1:
        raise LayerProblem(
            f"applies between stacked layers, so it needs num_layers > 1, got {p.dropout} "
            "(add a dropout layer after this one instead)",
            "dropout",
        )
    return m.Recurrent(kind, shape[1], p.units, p.num_layers, p.bidirectional, p.return_sequences, p.dropout)


def _lstm(p: RecurrentParams, shape: Shape, ctx: Context) -> nn.Module:
    return _recurrent(p, shape, "lstm")


def _gru(p: RecurrentParams, shape: Shape, ctx: Context) -> nn.Module:
    return _recurrent(p, shape, "gru")


def _transformer_encoder(p: TransformerEncoderParams, shape: Shape, ctx: Context) -> nn.Module:
    _need_rank(shape, (2,), "[length, dim]")
    d_model = shape[1]
    if d_model % p.heads:
        raise LayerProblem(
            f"{p.heads} does not divide the input's last dim {d_model} (d_model); use a divisor of {d_model}",
            "heads",
        )
    return m.TransformerEncoder(d_model, p.heads, p.ff_dim, p.num_layers, p.dropout, p.pool)


def _norm(p: NormParams, shape: Shape, ctx: Context) -> nn.Module:
    return tf.make_norm(p.kind, shape[-1], p.eps)


def _need_vocab(ctx: Context) -> int:
    if ctx.vocab_size is None:
        raise LayerProblem(
            "needs the vocabulary size, which comes from the tokenizer (data.tokenizer), "
            "but the data gives none: use it with a text dataset and a tokenizer"
        )
    return ctx.vocab_size


def _token_embedding(p: TokenEmbeddingParams, shape: Shape, ctx: Context) -> nn.Module:
    if ctx.index != 0:
        raise LayerProblem("must be the first layer: it reads the token ids")
    _need_rank(shape, (1,), "[length] (token ids)")
    return tok.TokenEmbedding(_need_vocab(ctx), p.dim)


def _decoder_block(p: DecoderBlockParams, shape: Shape, ctx: Context) -> nn.Module:
    _need_rank(shape, (2,), "[length, dim] (e.g. after token_embedding)")
    length, dim = shape
    if dim % p.heads:
        raise LayerProblem(
            f"{p.heads} does not divide the input's last dim {dim}; use a divisor of {dim}", "heads"
        )
    if p.positions == "rope" and (dim // p.heads) % 2:
        raise LayerProblem(
            f"rope rotates pairs of dims, so the head dim {dim} / {p.heads} = {dim // p.heads} must be even; "
            "pick other heads or positions: learned",
            "positions",
        )
    if p.max_positions is not None and p.positions != "learned":
        raise LayerProblem("only applies with positions: learned", "max_positions")
    blocks = [
        tf.DecoderBlock(dim, p.heads, p.mlp, p.norm, p.mlp_ratio, p.positions == "rope", p.causal, p.dropout)
        for _ in range(p.repeat)
    ]
    max_positions = (p.max_positions or length) if p.positions == "learned" else None
    return tf.DecoderStack(blocks, dim, max_positions)


def _sequence_pool(p: SequencePoolParams, shape: Shape, ctx: Context) -> nn.Module:
    _need_rank(shape, (2,), "[length, dim]")
    return tok.SequencePool(p.mode)


def _lm_head(p: LMHeadParams, shape: Shape, ctx: Context) -> nn.Module:
    _need_rank(shape, (2,), "[length, dim]")
    vocab_size = _need_vocab(ctx)
    if not p.tie_embedding:
        return tok.LMHead(shape[1], vocab_size, p.bias, None)
    if ctx.embedding is None:
        raise LayerProblem(
            "needs a token_embedding as the first layer to share its weight; or set tie_embedding: false",
            "tie_embedding",
        )
    if ctx.embedding.embedding_dim != shape[1]:
        raise LayerProblem(
            f"the input's last dim {shape[1]} differs from the token embedding's dim "
            f"{ctx.embedding.embedding_dim}, so the weight cannot be shared; set tie_embedding: false",
            "tie_embedding",
        )
    return tok.LMHead(shape[1], vocab_size, p.bias, ctx.embedding)


@dataclass(frozen=True)
class LayerType:
    """A declarative layer type: its parameter model and its builder."""

    params: type[BaseModel]
    build: Callable[[Any, Shape, Context], nn.Module]


LAYERS: dict[str, LayerType] = {
    "dense": LayerType(DenseParams, _dense),
    "dropout": LayerType(DropoutParams, _dropout),
    "batchnorm": LayerType(BatchNormParams, _batchnorm),
    "layernorm": LayerType(LayerNormParams, _layernorm),
    "activation": LayerType(ActivationParams, _activation),
    "flatten": LayerType(FlattenParams, _flatten),
    "reshape": LayerType(ReshapeParams, _reshape),
    "conv1d": LayerType(ConvParams, _conv1d),
    "conv2d": LayerType(ConvParams, _conv2d),
    "residual": LayerType(ResidualParams, _residual),
    "maxpool": LayerType(PoolParams, _maxpool),
    "avgpool": LayerType(PoolParams, _avgpool),
    "global_avgpool": LayerType(GlobalAvgPoolParams, _global_avgpool),
    "embedding": LayerType(EmbeddingParams, _embedding),
    "position_embedding": LayerType(PositionEmbeddingParams, _position_embedding),
    "lstm": LayerType(RecurrentParams, _lstm),
    "gru": LayerType(RecurrentParams, _gru),
    "transformer_encoder": LayerType(TransformerEncoderParams, _transformer_encoder),
    "norm": LayerType(NormParams, _norm),
    "token_embedding": LayerType(TokenEmbeddingParams, _token_embedding),
    "decoder_block": LayerType(DecoderBlockParams, _decoder_block),
    "pool": LayerType(SequencePoolParams, _sequence_pool),
    "lm_head": LayerType(LMHeadParams, _lm_head),
}
"""Every declarative layer type by the name used in `model.layers`."""

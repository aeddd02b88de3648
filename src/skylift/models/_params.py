"""The parameters of each declarative layer type: one frozen pydantic model per type."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator

ActivationName = Literal[
    "relu", "gelu", "tanh", "sigmoid", "silu", "elu", "leaky_relu", "softmax", "log_softmax"
]
"""Names accepted by the `activation` layer and by the `activation` parameter of dense/conv."""


def _size(value: Any) -> int | tuple[int, ...]:
    """Accept a positive int or a list of positive ints (one per spatial dim)."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return value
    if (
        isinstance(value, list | tuple)
        and value
        and all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in value)
    ):
        return tuple(value)
    raise ValueError("must be a positive int or a list of positive ints")


Size = Annotated[int | tuple[int, ...], BeforeValidator(_size)]
"""A kernel size or stride: one int for every spatial dim, or one int per dim."""


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DenseParams(_Params):
    units: int = Field(gt=0)
    """Output features; applied to the last dim, so (F,) -> (units,) and (L, F) -> (L, units)."""
    activation: ActivationName | None = None
    """Activation after the linear map; None leaves the output linear (logits)."""
    bias: bool = True
    """Whether the layer adds a learned bias."""


class DropoutParams(_Params):
    rate: float = Field(ge=0.0, lt=1.0)
    """Fraction of inputs zeroed during training."""


class BatchNormParams(_Params):
    momentum: float = Field(default=0.01, gt=0.0, le=1.0)
    """Torch momentum of the running stats; 0.01 is Keras' default momentum 0.99 (1 - 0.99)."""
    eps: float = Field(default=1e-3, gt=0.0)
    """Added to the variance; 1e-3 is Keras' default (torch's is 1e-5)."""


class LayerNormParams(_Params):
    eps: float = Field(default=1e-5, gt=0.0)
    """Added to the variance of the last dim."""


class ActivationParams(_Params):
    name: ActivationName
    """Elementwise activation; softmax and log_softmax act over the last dim."""


class FlattenParams(_Params):
    """Flatten every dim after the batch dim; no parameters."""


class ReshapeParams(_Params):
    shape: list[int] = Field(min_length=1)
    """Per-sample target shape; one entry may be -1 (inferred from the element count)."""

    @field_validator("shape")
    @classmethod
    def _one_unknown(cls, v: list[int]) -> list[int]:
        if v.count(-1) > 1 or any(d == 0 or d < -1 for d in v):
            raise ValueError("must hold positive sizes and at most one -1")
        return v


class ConvParams(_Params):
    filters: int = Field(gt=0)
    """Output channels."""
    kernel_size: Size
    """Kernel size: one int, or one int per spatial dim."""
    stride: Size = 1
    """Stride: one int, or one int per spatial dim."""
    padding: Literal["same", "valid"] | int = "valid"
    """'valid' (no padding), 'same' (output size = ceil(input / stride), as Keras), or an int per side."""
    activation: ActivationName | None = None
    """Activation after the convolution; softmax acts over the channel dim."""

    @field_validator("padding", mode="before")
    @classmethod
    def _padding(cls, v: Any) -> Any:
        if v in ("same", "valid") or (isinstance(v, int) and not isinstance(v, bool) and v >= 0):
            return v
        raise ValueError("must be 'same', 'valid' or an int >= 0")


class PoolParams(_Params):
    size: Size = 2
    """Pooling window: one int, or one int per spatial dim."""
    stride: Size | None = None
    """Step between windows; default: the window size."""


class ResidualParams(_Params):
    filters: int = Field(gt=0)
    """Output channels of every block."""
    kernel_size: Size = 3
    """Kernel size (odd, so the blocks pad to keep the size): one int, or one per spatial dim."""
    stride: Size = 1
    """Stride of the first block (2 halves each spatial dim); the others use 1."""
    repeat: int = Field(default=1, gt=0)
    """Blocks stacked, each a separate module."""
    activation: Literal["relu", "gelu", "silu", "elu", "leaky_relu", "tanh"] = "relu"
    """Activation inside each block and after the addition."""


class GlobalAvgPoolParams(_Params):
    """Mean over every dim after the channel dim; no parameters."""


class EmbeddingParams(_Params):
    vocab_size: int = Field(gt=0)
    """Number of token ids; valid ids are 0 .. vocab_size - 1."""
    dim: int = Field(gt=0)
    """Size of each token's vector."""


class PositionEmbeddingParams(_Params):
    """Add a learned vector per position to an (L, D) input; no parameters."""


class RecurrentParams(_Params):
    units: int = Field(gt=0)
    """Hidden size per direction."""
    num_layers: int = Field(default=1, gt=0)
    """Stacked recurrent layers."""
    bidirectional: bool = False
    """Also run the sequence backwards and concatenate both directions."""
    return_sequences: bool = False
    """Return every step (L, units*dirs) instead of the final state (units*dirs,)."""
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0)
    """Dropout between stacked layers (needs num_layers > 1)."""


class TransformerEncoderParams(_Params):
    heads: int = Field(gt=0)
    """Attention heads; must divide the input's last dim (d_model)."""
    ff_dim: int = Field(gt=0)
    """Hidden size of each block's feed-forward network."""
    num_layers: int = Field(default=1, gt=0)
    """Stacked encoder blocks."""
    dropout: float = Field(default=0.1, ge=0.0, lt=1.0)
    """Dropout inside each block."""
    pool: Literal["mean", "first", "none"] = "mean"
    """How (L, D) becomes the output: mean over L, the first step, or none (keep (L, D))."""


class NormParams(_Params):
    kind: Literal["layer", "rms"] = "layer"
    """LayerNorm (centre and scale) or RMSNorm (scale only, as Llama's final norm) over the last dim."""
    eps: float = Field(default=1e-5, gt=0.0)
    """Added to the variance (or mean square) of the last dim."""


class TokenEmbeddingParams(_Params):
    dim: int = Field(gt=0)
    """Size of each token's vector; the vocabulary size comes from the tokenizer, not the spec."""


class DecoderBlockParams(_Params):
    heads: int = Field(gt=0)
    """Attention heads; must divide the input's last dim (the model dim)."""
    mlp: Literal["gelu", "swiglu"] = "gelu"
    """Feed-forward network: GELU (GPT-2) or SwiGLU (Llama)."""
    norm: Literal["layer", "rms"] = "layer"
    """Pre-norm before attention and MLP: LayerNorm or RMSNorm."""
    positions: Literal["rope", "learned", "none"] = "rope"
    """Rotary embeddings in attention (no parameters, any length), learned vectors added once, or none."""
    max_positions: int | None = Field(default=None, gt=0)
    """Learned positions only: how many; default the input length at build (block size, max length)."""
    repeat: int = Field(default=1, gt=0)
    """Number of blocks stacked, each a separate module."""
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0)
    """Dropout on attention weights and on each residual branch."""
    mlp_ratio: float = Field(default=4.0, gt=0.0)
    """MLP hidden size over the model dim; SwiGLU uses 2/3 of it, so both MLPs have the same size."""
    causal: bool = True
    """Each token attends only to itself and earlier ones (a decoder); false: to every real token."""


class SequencePoolParams(_Params):
    mode: Literal["mean", "first", "last"] = "mean"
    """(T, D) -> (D,) over real tokens (padding ignored): their mean, the first, or the last one."""


class LMHeadParams(_Params):
    tie_embedding: bool = True
    """Share the token embedding's weight (saves V * D parameters); false: a weight of its own."""
    bias: bool = False
    """Whether a learned bias per vocabulary id is added to the logits."""

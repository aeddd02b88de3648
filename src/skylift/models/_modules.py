"""The torch modules that declarative layers build to, beyond those torch already has.

Shape legend (the per-sample shapes follow the batch dim B):
    B batch   C channels   L length (steps, tokens)   H height   W width
    F features (the last dim)   U units of a dense or recurrent layer   D model / embedding dim
    S any further per-sample dims   R directions of a recurrent layer   N num_layers * R
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from skylift.models._stack import MaskedLayer
from skylift.models._tokens import masked_pool

_ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "silu": nn.SiLU,
    "elu": nn.ELU,
    "leaky_relu": nn.LeakyReLU,
}


def make_activation(name: str | None, dim: int = -1) -> nn.Module:
    """The activation module called `name` (Identity for None); softmax families act over `dim`."""
    if name is None:
        return nn.Identity()
    if name == "softmax":
        return nn.Softmax(dim=dim)
    if name == "log_softmax":
        return nn.LogSoftmax(dim=dim)
    return _ACTIVATIONS[name]()


class Dense(nn.Linear):
    """nn.Linear on the last dim, then an activation: (*, F) -> (*, U)."""

    def __init__(self, in_features: int, units: int, bias: bool, activation: nn.Module) -> None:
        super().__init__(in_features, units, bias=bias)
        self.activation = activation

    def forward(self, x_BSF: torch.Tensor) -> torch.Tensor:
        y_BSU: torch.Tensor = self.activation(super().forward(x_BSF))
        return y_BSU


class Conv1d(nn.Conv1d):
    """nn.Conv1d with optional asymmetric zero padding in front, then an activation."""

    def __init__(
        self,
        in_channels: int,
        filters: int,
        kernel: tuple[int, ...],
        stride: tuple[int, ...],
        padding: tuple[int, ...],
        pad: tuple[int, ...],
        activation: nn.Module,
    ) -> None:
        super().__init__(in_channels, filters, kernel, stride, padding)  # type: ignore[arg-type]
        self.pad = pad  # F.pad's (left, right); () when the conv's symmetric padding suffices
        self.activation = activation

    def forward(self, x_BCL: torch.Tensor) -> torch.Tensor:
        if self.pad:
            x_BCL = F.pad(x_BCL, self.pad)
        y_BCL: torch.Tensor = self.activation(super().forward(x_BCL))
        return y_BCL


class Conv2d(nn.Conv2d):
    """nn.Conv2d with optional asymmetric zero padding in front, then an activation."""

    def __init__(
        self,
        in_channels: int,
        filters: int,
        kernel: tuple[int, ...],
        stride: tuple[int, ...],
        padding: tuple[int, ...],
        pad: tuple[int, ...],
        activation: nn.Module,
    ) -> None:
        super().__init__(in_channels, filters, kernel, stride, padding)  # type: ignore[arg-type]
        self.pad = pad  # F.pad's (left, right, top, bottom); () when the conv's symmetric padding suffices
        self.activation = activation

    def forward(self, x_BCHW: torch.Tensor) -> torch.Tensor:
        if self.pad:
            x_BCHW = F.pad(x_BCHW, self.pad)
        y_BCHW: torch.Tensor = self.activation(super().forward(x_BCHW))
        return y_BCHW


class Reshape(nn.Module):
    """Reshape every sample to a fixed shape (resolved at build time, no -1 left)."""

    def __init__(self, shape: tuple[int, ...]) -> None:
        super().__init__()
        self.shape = shape

    def forward(self, x_BS: torch.Tensor) -> torch.Tensor:
        return x_BS.reshape((x_BS.shape[0], *self.shape))

    def extra_repr(self) -> str:
        return f"shape={list(self.shape)}"


class GlobalAvgPool(nn.Module):
    """Mean over every dim after the channel dim: (C, L) or (C, H, W) -> (C,)."""

    def forward(self, x_BCS: torch.Tensor) -> torch.Tensor:
        return x_BCS.flatten(2).mean(dim=-1)


class IdEmbedding(nn.Embedding):
    """nn.Embedding over integer ids stored as float: (L,) -> (L, D) (the `embedding` layer).

    Ids are truncated to integers; an id outside 0 .. vocab_size - 1 raises IndexError (on CPU).
    """

    def forward(self, ids_BL: torch.Tensor) -> torch.Tensor:
        return super().forward(ids_BL.long())


class PositionEmbedding(nn.Module):
    """Add a learned vector per position: (L, D) -> (L, D)."""

    def __init__(self, length: int, dim: int) -> None:
        super().__init__()
        # std 0.02 as GPT-2: small next to unit-variance token embeddings
        self.weight = nn.Parameter(torch.randn(length, dim) * 0.02)

    def forward(self, x_BLD: torch.Tensor) -> torch.Tensor:
        return x_BLD + self.weight


class Recurrent(nn.Module):
    """A batch-first LSTM or GRU: (L, F) -> (dirs * U,) final state, or (L, dirs * U) every step."""

    def __init__(
        self,
        kind: Literal["lstm", "gru"],
        in_features: int,
        units: int,
        num_layers: int,
        bidirectional: bool,
        return_sequences: bool,
        dropout: float,
    ) -> None:
        super().__init__()
        cls = nn.LSTM if kind == "lstm" else nn.GRU
        self.rnn = cls(
            in_features, units, num_layers, batch_first=True, bidirectional=bidirectional, dropout=dropout
        )
        self.dirs = 2 if bidirectional else 1
        self.return_sequences = return_sequences

    def forward(self, x_BLF: torch.Tensor) -> torch.Tensor:
        out_BLU: torch.Tensor  # U here is dirs * units
        out_BLU, state = self.rnn(x_BLF)
        if self.return_sequences:
            return out_BLU
        # The final hidden state, not out[:, -1]: a backward direction ends at step 0.
        h_NBU: torch.Tensor = state[0] if isinstance(state, tuple) else state
        last_RBU = h_NBU[-self.dirs :]
        return last_RBU.permute(1, 0, 2).reshape(x_BLF.shape[0], -1)


class TransformerEncoder(MaskedLayer):
    """Batch-first transformer encoder blocks over (L, D), pooled to (D,) or kept as (L, D).

    After a token_embedding it gets the padding mask: pad keys are left out of attention and of
    the pooling. After `embedding` (ids that may be 0 for real) it attends to every position.
    """

    def __init__(
        self,
        d_model: int,
        heads: int,
        ff_dim: int,
        num_layers: int,
        dropout: float,
        pool: Literal["mean", "first", "none"],
    ) -> None:
        super().__init__()
        block = nn.TransformerEncoderLayer(d_model, heads, ff_dim, dropout, batch_first=True)
        # Nested tensors would drop pad positions from the output, which `pool: none` keeps.
        self.encoder = nn.TransformerEncoder(block, num_layers, enable_nested_tensor=False)
        self.pool = pool

    def forward(self, x_BLD: torch.Tensor, mask_BL: torch.Tensor | None = None) -> torch.Tensor:
        pad_BL = None if mask_BL is None else ~mask_BL  # torch's key padding mask is True at padding
        h_BLD: torch.Tensor = self.encoder(x_BLD, src_key_padding_mask=pad_BL)
        return h_BLD if self.pool == "none" else masked_pool(h_BLD, mask_BL, self.pool)

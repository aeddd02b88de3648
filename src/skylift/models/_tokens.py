"""Token models at both ends: the token embedding, masked pooling and the language-model head.

Shape legend: B batch   T tokens (positions)   D model dim   V vocabulary size
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from skylift.models._stack import MaskedLayer

PoolMode = Literal["mean", "first", "last"]

INIT_STD = 0.02  # GPT-2's init of embeddings and output weights: small next to unit-norm activations


class TokenEmbedding(nn.Embedding):
    """Token ids (B, T) int64 -> vectors (B, T, D); the vocabulary size comes from the tokenizer.

    No padding_idx: the padding mask keeps pad positions out of attention and pooling, and a tied
    lm_head must be free to learn the pad row like any other.
    """

    def __init__(self, vocab_size: int, dim: int) -> None:
        super().__init__(vocab_size, dim)
        nn.init.normal_(self.weight, std=INIT_STD)

    def forward(self, ids_BT: torch.Tensor) -> torch.Tensor:
        # float ids (the tabular path stores every input as float32) are truncated, as `embedding` does
        return super().forward(ids_BT if not ids_BT.is_floating_point() else ids_BT.long())


def masked_pool(x_BTD: torch.Tensor, mask_BT: torch.Tensor | None, mode: PoolMode) -> torch.Tensor:
    """(B, T, D) -> (B, D) over the real tokens only: their mean, the first, or the last one."""
    if mode == "first":
        return x_BTD[:, 0]
    if mask_BT is None:
        return x_BTD.mean(dim=1) if mode == "mean" else x_BTD[:, -1]
    if mode == "mean":
        weight_BT1 = mask_BT.unsqueeze(-1).to(x_BTD.dtype)
        return (x_BTD * weight_BT1).sum(dim=1) / weight_BT1.sum(dim=1)
    # the highest real position, which for right padding is the last real token
    positions_T = torch.arange(x_BTD.shape[1], device=x_BTD.device)
    last_B11 = torch.where(mask_BT, positions_T, 0).amax(dim=1).view(-1, 1, 1)
    # gather, not x[arange(B), last]: advanced indexing exports to ONNX only with a warning
    return x_BTD.gather(1, last_B11.expand(-1, 1, x_BTD.shape[2])).squeeze(1)


class SequencePool(MaskedLayer):
    """(B, T, D) -> (B, D) ignoring padding: `last` is the summary a causal model needs."""

    def __init__(self, mode: PoolMode) -> None:
        super().__init__()
        self.mode: PoolMode = mode

    def forward(self, x_BTD: torch.Tensor, mask_BT: torch.Tensor | None = None) -> torch.Tensor:
        return masked_pool(x_BTD, mask_BT, self.mode)

    def extra_repr(self) -> str:
        return f"mode={self.mode!r}"


class LMHead(nn.Module):
    """(B, T, D) -> logits (B, T, V), with its own weight or the token embedding's (tied).

    A tied head does not register the embedding's weight a second time: it reads it from the
    embedding at every call. So the state dict holds each weight once (safetensors refuses two
    names for one tensor, and the registry loads strictly), and the tie survives anything that
    replaces the embedding's Parameter (FSDP sharding, `to_empty` after meta-device init).
    """

    def __init__(self, dim: int, vocab_size: int, bias: bool, tie_to: TokenEmbedding | None) -> None:
        super().__init__()
        # a tuple, so nn.Module does not register the embedding as a second parent's child
        self._tied: tuple[TokenEmbedding, ...] = (tie_to,) if tie_to is not None else ()
        self.weight = None if tie_to is not None else nn.Parameter(torch.randn(vocab_size, dim) * INIT_STD)
        self.bias = nn.Parameter(torch.zeros(vocab_size)) if bias else None

    @property
    def tied(self) -> bool:
        """Whether the head shares the token embedding's weight."""
        return bool(self._tied)

    @property
    def out_weight(self) -> torch.Tensor:
        """The (V, D) Parameter the logits are computed with: the embedding's own when tied."""
        if self._tied:
            return self._tied[0].weight
        assert self.weight is not None  # set in __init__ whenever the head is not tied
        return self.weight

    def forward(self, x_BTD: torch.Tensor) -> torch.Tensor:
        return F.linear(x_BTD, self.out_weight, self.bias)

    def extra_repr(self) -> str:
        vocab, dim = self.out_weight.shape
        return f"dim={dim}, vocab_size={vocab}, tied={self.tied}, bias={self.bias is not None}"

"""The layer stack: an nn.Sequential that hands the padding mask of token ids to the layers that take it.

A declarative model whose first layer is `token_embedding` reads right-padded token ids with
PAD_ID for padding (the tokenizers reserve it). The stack computes the mask once from the ids and
calls every MaskedLayer child as `layer(x, mask_BT)`; any other child is called as `layer(x)`.
Every other model gets mask None, so the stack behaves exactly as nn.Sequential.

Shape legend: B batch   T tokens (positions)   S any per-sample dims
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

PAD_ID = 0
"""The token id of padding; the tokenizers reserve it, so no real token ever has it."""


def padding_mask(ids_BT: torch.Tensor) -> torch.Tensor:
    """True at real tokens, False at padding: (B, T) bool.

    Position 0 always counts as real: a right-padded text starts with a real token unless it is
    empty, and an empty text then reads as one pad token instead of a row that attends to nothing
    (a softmax over no keys is NaN).
    """
    first_T = torch.arange(ids_BT.shape[1], device=ids_BT.device) == 0
    return (ids_BT != PAD_ID) | first_T


class MaskedLayer(nn.Module):
    """A layer whose forward is `forward(x_BTS, mask_BT=None)`.

    mask_BT is True at real tokens (bool, (B, T)); None means every position is real, as in a
    layer-by-layer shape check or a model that does not read token ids. Padding positions of the
    output may hold anything; a later layer that mixes positions must ignore them again.
    """


class LayerStack(nn.Sequential):
    """nn.Sequential over the declarative layers that passes the padding mask to MaskedLayer children."""

    def __init__(self, children: OrderedDict[str, nn.Module], *, token_ids: bool) -> None:
        super().__init__(children)
        self.token_ids = token_ids  # the input is token ids: the first layer is a token embedding

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mask_BT = padding_mask(x) if self.token_ids else None
        for layer in self:
            x = layer(x, mask_BT) if isinstance(layer, MaskedLayer) else layer(x)
        return x


def takes_token_ids(model: nn.Module) -> bool:
    """Whether `model` reads int64 token ids (a declarative model starting with token_embedding)."""
    return isinstance(model, LayerStack) and model.token_ids

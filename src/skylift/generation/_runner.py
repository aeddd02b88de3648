"""A skylift language model run incrementally: token ids of many sequences in, next-token logits out.

The model must be a declarative language model: token_embedding first, lm_head last, causal
decoder_block stacks between, and otherwise only layers that act on each position alone (norm,
dense, activation, dropout). The stacks' keys and values live in preallocated KVCaches, one slot
per running sequence; the layers after the last stack run only on the rows that get sampled.

Shape legend: N tokens of one step (all sequences)   M rows sampled   D model dim   V vocabulary
    R decode rows (slots [0, R))   L attended positions
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from skylift.errors import SpecError
from skylift.models._stack import LayerStack
from skylift.models._tokens import LMHead, TokenEmbedding
from skylift.models._transformer import CachedStep, DecoderBlock, DecoderStack, KVCache, PromptChunk

_POSITIONWISE = (
    nn.LayerNorm,
    nn.RMSNorm,
    nn.Linear,  # Dense is one
    nn.Dropout,
    nn.Identity,
    nn.ReLU,
    nn.GELU,
    nn.Tanh,
    nn.Sigmoid,
    nn.SiLU,
    nn.ELU,
    nn.LeakyReLU,
)


class CachedLM:
    """`model` (a skylift LM, put in eval mode) with KV caches for `slots` sequences of `context` tokens."""

    def __init__(self, model: nn.Module, slots: int, context: int) -> None:
        layers = list(model) if isinstance(model, LayerStack) and model.token_ids else []
        if len(layers) < 2 or not isinstance(layers[0], TokenEmbedding) or not isinstance(layers[-1], LMHead):
            raise SpecError(
                "this model cannot generate text: a language model starts with token_embedding and "
                "ends with lm_head (task: language_modeling)"
            )
        stacks = [i for i, layer in enumerate(layers) if isinstance(layer, DecoderStack)]
        for i, layer in enumerate(layers[1:-1], start=1):
            if isinstance(layer, DecoderStack):
                _check_stack(i, layer, context)
            elif not isinstance(layer, _POSITIONWISE):
                raise SpecError(
                    f"this model cannot generate text token by token: layer {i} "
                    f"({type(layer).__name__}) mixes positions and is not a causal decoder_block"
                )
        last = stacks[-1] if stacks else 0
        self.model = model.eval()
        self.embedding: TokenEmbedding = layers[0]
        self.body = layers[1 : last + 1]
        self.tail = layers[last + 1 :]
        self.caches = {
            i: KVCache(s, slots, context) for i, s in enumerate(self.body) if isinstance(s, DecoderStack)
        }
        self.vocab_size = self.embedding.num_embeddings
        self.context = context
        self.dtype = self.embedding.weight.dtype

    @property
    def cache_bytes(self) -> int:
        return sum(c.nbytes for c in self.caches.values())

    def forward(self, ids_N: torch.Tensor, step: CachedStep, rows_M: torch.Tensor | None) -> torch.Tensor:
        """Logits (M, V) of rows `rows_M` of the step (all N rows when None), float32."""
        x_ND = self.embedding(ids_N)
        for i, layer in enumerate(self.body):
            if isinstance(layer, DecoderStack):
                x_ND = layer.forward_cached(x_ND, self.caches[i], step)
            else:
                x_ND = layer(x_ND)
        x_MD = x_ND if rows_M is None else x_ND[rows_M]
        for layer in self.tail:
            x_MD = layer(x_MD)
        logits_MV: torch.Tensor = x_MD.float()
        return logits_MV

    def move(self, src: int, dst: int, length: int) -> None:
        for cache in self.caches.values():
            cache.move(src, dst, length)


def _check_stack(i: int, stack: DecoderStack, context: int) -> None:
    if not all(isinstance(b, DecoderBlock) and b.attn.causal for b in stack.blocks):
        raise SpecError(
            f"this model cannot generate text: decoder_block layer {i} is not causal (causal: false)"
        )
    if stack.positions is not None and stack.positions.shape[0] < context:
        raise SpecError(
            f"context {context} exceeds the {stack.positions.shape[0]} learned positions of layer {i}; "
            f"use a context <= {stack.positions.shape[0]}"
        )


def build_step(
    decode: Sequence[tuple[int, int]],
    chunks: Sequence[tuple[int, int, int]],
    running: int,
    dtype: torch.dtype = torch.float32,
) -> CachedStep:
    """The layout of one step: `decode` holds (slot, position) of one new token per decoding
    sequence, ascending by slot; `chunks` (slot, start, count) of prompt tokens; `running` is R,
    the slots in use ([0, R)). Masks come in `dtype`, the model's."""
    pos = [p for _, p in decode]
    slot = [s for s, _ in decode]
    parts = []
    row = len(decode)
    for s, start, count in chunks:
        bias_CL = None
        if start:  # query i sits at position start + i and sees keys [0, start + i]
            keep_CL = torch.ones(count, start + count, dtype=torch.bool).tril(start)
            bias_CL = torch.zeros(keep_CL.shape, dtype=dtype).masked_fill_(~keep_CL, float("-inf"))
        parts.append(PromptChunk(s, start, count, row, bias_CL))
        pos += range(start, start + count)
        slot += [s] * count
        row += count
    bias_R11L = None
    if decode:
        # rows of slots that are not decoding see position 0 only: a finite dummy, never read
        length_R = torch.ones(running, dtype=torch.long)
        length_R[torch.tensor(slot[: len(decode)])] = torch.tensor(pos[: len(decode)]) + 1
        keep_RL = torch.arange(int(length_R.max()))[None] < length_R[:, None]
        bias_RL = torch.zeros(keep_RL.shape, dtype=dtype).masked_fill_(~keep_RL, float("-inf"))
        bias_R11L = bias_RL[:, None, None]
    return CachedStep(
        pos_N=torch.tensor(pos, dtype=torch.long),
        slot_N=torch.tensor(slot, dtype=torch.long),
        decode_rows=len(decode),
        decode_slot_B=torch.tensor(slot[: len(decode)], dtype=torch.long),
        decode_bias_R11L=bias_R11L,
        chunks=tuple(parts),
    )

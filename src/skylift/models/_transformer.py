"""Pre-norm transformer blocks: self-attention (causal or padding-masked), RoPE, GELU or SwiGLU MLPs.

A `decoder_block` layer with `repeat: N` builds one DecoderStack holding N separate DecoderBlock
modules, so distributed code can shard and checkpoint each block on its own (see
transformer_blocks). Linear layers have no bias, as in PaLM and Llama: fewer parameters, same quality.

Incremental decoding (the generation engine's path; training never takes it): `forward_cached`
runs the N new tokens of several sequences at once, flattened to (N, D), over a preallocated
KVCache, as a CachedStep describes. It adds methods only: the training forward is untouched.

Shape legend: B batch   T tokens (positions)   D model dim   H heads   E head dim (D / H)
    K E / 2 rotary frequencies   F MLP hidden size   P max positions
    N tokens of one cached step, all sequences together   S cache slots (one per sequence)
    R decode rows (cache slots [0, R))   L attended positions   C prompt-chunk tokens
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, cast

import torch
import torch.nn.functional as F
from torch import nn

from skylift.models._stack import MaskedLayer
from skylift.models._tokens import INIT_STD

MlpKind = Literal["gelu", "swiglu"]
NormKind = Literal["layer", "rms"]
Positions = Literal["rope", "learned", "none"]

ROPE_BASE = 10_000.0  # RoFormer's wavelength base: the slowest pair turns once per ~63k positions
NORM_EPS = 1e-5  # LayerNorm's default; RMSNorm's (finfo.eps) would be 8e-3 in bfloat16


def make_norm(kind: NormKind, dim: int, eps: float = NORM_EPS) -> nn.Module:
    """LayerNorm or RMSNorm over the last dim, with a learned scale."""
    return nn.LayerNorm(dim, eps=eps) if kind == "layer" else nn.RMSNorm(dim, eps=eps)


def rope_angles(length: int, head_dim: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of the rotation angles t * base^(-2k / E), each (T, K), in float32."""
    freq_K = ROPE_BASE ** (-torch.arange(0, head_dim, 2, device=device, dtype=torch.float32) / head_dim)
    angle_TK = torch.arange(length, device=device, dtype=torch.float32)[:, None] * freq_K
    return angle_TK.cos(), angle_TK.sin()


def apply_rope(x_BHTE: torch.Tensor, cos_TK: torch.Tensor, sin_TK: torch.Tensor) -> torch.Tensor:
    """Rotate each pair (x[k], x[k + E/2]) by angle (t, k): the GPT-NeoX / Llama "rotate half" layout.

    Then q_t . k_s depends on t - s only, which is what makes the positions relative.
    """
    x1_BHTK, x2_BHTK = x_BHTE.float().chunk(2, dim=-1)
    rotated_BHTE = torch.cat([x1_BHTK * cos_TK - x2_BHTK * sin_TK, x1_BHTK * sin_TK + x2_BHTK * cos_TK], -1)
    return rotated_BHTE.to(x_BHTE.dtype)


class SelfAttention(nn.Module):
    """Multi-head self-attention through scaled_dot_product_attention (flash / memory-efficient kernels)."""

    def __init__(self, dim: int, heads: int, causal: bool, rope: bool, dropout: float) -> None:
        super().__init__()
        self.heads, self.causal, self.rope, self.dropout = heads, causal, rope, dropout
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.proj = nn.Linear(dim, dim, bias=False)

    def forward(self, x_BTD: torch.Tensor, mask_BT: torch.Tensor | None = None) -> torch.Tensor:
        B, T, D = x_BTD.shape
        qkv_3BHTE = self.qkv(x_BTD).view(B, T, 3, self.heads, D // self.heads).permute(2, 0, 3, 1, 4)
        q_BHTE, k_BHTE, v_BHTE = qkv_3BHTE.unbind(0)
        if self.rope:
            cos_TK, sin_TK = rope_angles(T, D // self.heads, x_BTD.device)
            q_BHTE, k_BHTE = apply_rope(q_BHTE, cos_TK, sin_TK), apply_rope(k_BHTE, cos_TK, sin_TK)
        # Causal attention ignores the mask: with right padding a real token only ever sees earlier,
        # real tokens, and is_causal keeps the flash kernel. Bidirectional attention masks pad keys.
        keep_B11T = None if self.causal or mask_BT is None else mask_BT[:, None, None, :]
        y_BHTE = F.scaled_dot_product_attention(
            q_BHTE,
            k_BHTE,
            v_BHTE,
            attn_mask=keep_B11T,
            dropout_p=self.dropout if self.training else 0.0,
            is_causal=self.causal,
        )
        out_BTD: torch.Tensor = self.proj(y_BHTE.transpose(1, 2).reshape(B, T, D))
        return out_BTD

    def forward_cached(
        self,
        x_ND: torch.Tensor,
        k_SHPE: torch.Tensor,
        v_SHPE: torch.Tensor,
        step: CachedStep,
        rope: tuple[torch.Tensor, torch.Tensor] | None,
    ) -> torch.Tensor:
        """Causal attention of the step's new tokens over their sequences' cached keys and values.

        Writes the new keys and values into the cache first, so a token attends to itself.
        `rope` is (cos_N1K, sin_N1K) at the tokens' positions when the block uses RoPE.
        """
        N, D = x_ND.shape
        H, E = self.heads, D // self.heads
        q_NHE, k_NHE, v_NHE = self.qkv(x_ND).view(N, 3, H, E).unbind(1)
        if rope is not None:
            q_NHE, k_NHE = apply_rope(q_NHE, *rope), apply_rope(k_NHE, *rope)
        k_SHPE[step.slot_N, :, step.pos_N] = k_NHE
        v_SHPE[step.slot_N, :, step.pos_N] = v_NHE
        y_NHE = torch.empty_like(q_NHE)
        B, bias_R11L = step.decode_rows, step.decode_bias_R11L
        if bias_R11L is not None:
            # One call for every decoding sequence, over the cache's own slots [0, R) read in place
            # (a strided view: gathering B slots' keys each step would copy them per layer).
            R, L = bias_R11L.shape[0], bias_R11L.shape[-1]
            q_RH1E = q_NHE[:B, :, None]
            if B != R:  # slots that are not decoding (prompt chunks) get dummy rows, ignored after
                q_RH1E = q_NHE.new_zeros(R, H, 1, E).index_copy_(0, step.decode_slot_B, q_RH1E)
            y_RH1E = F.scaled_dot_product_attention(
                q_RH1E, k_SHPE[:R, :, :L], v_SHPE[:R, :, :L], attn_mask=bias_R11L
            )
            y_NHE[:B] = (y_RH1E if B == R else y_RH1E[step.decode_slot_B])[:, :, 0]
        for chunk in step.chunks:
            rows, keys = slice(chunk.row, chunk.row + chunk.count), chunk.start + chunk.count
            y_1HCE = F.scaled_dot_product_attention(
                q_NHE[rows].transpose(0, 1)[None],
                k_SHPE[chunk.slot : chunk.slot + 1, :, :keys],
                v_SHPE[chunk.slot : chunk.slot + 1, :, :keys],
                attn_mask=chunk.bias_CL,
                is_causal=chunk.bias_CL is None,
            )
            y_NHE[rows] = y_1HCE[0].transpose(0, 1)
        out_ND: torch.Tensor = self.proj(y_NHE.reshape(N, D))
        return out_ND


class GeluMLP(nn.Module):
    """Linear D -> F, GELU, linear F -> D."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.up = nn.Linear(dim, hidden, bias=False)
        self.down = nn.Linear(hidden, dim, bias=False)

    def forward(self, x_BTD: torch.Tensor) -> torch.Tensor:
        out_BTD: torch.Tensor = self.down(F.gelu(self.up(x_BTD)))
        return out_BTD


class SwiGLU(nn.Module):
    """down(silu(gate(x)) * up(x)) (Shazeer 2020, as in Llama)."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.gate = nn.Linear(dim, hidden, bias=False)
        self.up = nn.Linear(dim, hidden, bias=False)
        self.down = nn.Linear(hidden, dim, bias=False)

    def forward(self, x_BTD: torch.Tensor) -> torch.Tensor:
        out_BTD: torch.Tensor = self.down(F.silu(self.gate(x_BTD)) * self.up(x_BTD))
        return out_BTD


def mlp_hidden(kind: MlpKind, dim: int, ratio: float) -> int:
    """The MLP's hidden size: ratio * D, or 2/3 of it for SwiGLU (three matrices, not two: same size)."""
    scale = 2 / 3 if kind == "swiglu" else 1.0
    return max(1, round(scale * ratio * dim))


class DecoderBlock(nn.Module):
    """x + attn(norm(x)), then x + mlp(norm(x)): (B, T, D) -> (B, T, D)."""

    def __init__(
        self,
        dim: int,
        heads: int,
        mlp: MlpKind,
        norm: NormKind,
        mlp_ratio: float,
        rope: bool,
        causal: bool,
        dropout: float,
    ) -> None:
        super().__init__()
        self.attn_norm = make_norm(norm, dim)
        self.attn = SelfAttention(dim, heads, causal, rope, dropout)
        self.mlp_norm = make_norm(norm, dim)
        hidden = mlp_hidden(mlp, dim, mlp_ratio)
        self.mlp = SwiGLU(dim, hidden) if mlp == "swiglu" else GeluMLP(dim, hidden)
        self.drop = nn.Dropout(dropout)

    def forward(self, x_BTD: torch.Tensor, mask_BT: torch.Tensor | None = None) -> torch.Tensor:
        x_BTD = x_BTD + self.drop(self.attn(self.attn_norm(x_BTD), mask_BT))
        out_BTD: torch.Tensor = x_BTD + self.drop(self.mlp(self.mlp_norm(x_BTD)))
        return out_BTD

    def forward_cached(
        self,
        x_ND: torch.Tensor,
        k_SHPE: torch.Tensor,
        v_SHPE: torch.Tensor,
        step: CachedStep,
        rope: tuple[torch.Tensor, torch.Tensor] | None,
    ) -> torch.Tensor:
        """forward for the step's new tokens (N, D) -> (N, D), in eval mode (no dropout)."""
        x_ND = x_ND + self.attn.forward_cached(self.attn_norm(x_ND), k_SHPE, v_SHPE, step, rope)
        out_ND: torch.Tensor = x_ND + self.mlp(self.mlp_norm(x_ND))
        return out_ND


class DecoderStack(MaskedLayer):
    """Learned positions (if any) added once, then `repeat` separate DecoderBlocks in `blocks`."""

    def __init__(self, blocks: list[DecoderBlock], dim: int, max_positions: int | None) -> None:
        super().__init__()
        self.positions = (
            None if max_positions is None else nn.Parameter(torch.randn(max_positions, dim) * INIT_STD)
        )
        self.blocks = nn.ModuleList(blocks)

    def forward(self, x_BTD: torch.Tensor, mask_BT: torch.Tensor | None = None) -> torch.Tensor:
        if self.positions is not None:
            T, P = x_BTD.shape[1], self.positions.shape[0]
            tracing = torch.jit.is_tracing()  # type: ignore[attr-defined,no-untyped-call]
            if not tracing and T > P:  # a traced size is not a Python bool
                raise ValueError(f"{T} tokens exceed the {P} learned positions (decoder_block.max_positions)")
            x_BTD = x_BTD + self.positions[:T]
        for block in self.blocks:
            x_BTD = block(x_BTD, mask_BT)
        return x_BTD

    def forward_cached(self, x_ND: torch.Tensor, cache: KVCache, step: CachedStep) -> torch.Tensor:
        """forward for the step's new tokens (N, D) -> (N, D), reading and extending `cache`."""
        if self.positions is not None:
            x_ND = x_ND + self.positions[step.pos_N]
        rope = None
        if cache.rope_PK is not None:
            cos_PK, sin_PK = cache.rope_PK
            rope = cos_PK[step.pos_N, None], sin_PK[step.pos_N, None]
        blocks = cast("list[DecoderBlock]", self.blocks)
        for block, k_SHPE, v_SHPE in zip(blocks, cache.k, cache.v, strict=True):
            x_ND = block.forward_cached(x_ND, k_SHPE, v_SHPE, step, rope)
        return x_ND


class KVCache:
    """Keys and values of one DecoderStack for `slots` sequences of up to `positions` tokens each.

    Preallocated at its full size (memory is bounded and known up front: no allocation per step);
    `k` and `v` are (blocks, S, H, P, E). A sequence owns one slot from its first prompt token to
    its last token; `move` copies a sequence to another slot (the engine keeps slots dense).
    """

    def __init__(self, stack: DecoderStack, slots: int, positions: int) -> None:
        first = stack.blocks[0]
        assert isinstance(first, DecoderBlock)
        heads, dim = first.attn.heads, first.attn.qkv.in_features
        weight = first.attn.qkv.weight
        shape = (len(stack.blocks), slots, heads, positions, dim // heads)
        self.k = torch.zeros(shape, dtype=weight.dtype, device=weight.device)
        self.v = torch.zeros_like(self.k)
        self.rope_PK = rope_angles(positions, dim // heads, weight.device) if first.attn.rope else None
        """cos and sin at every position, once (rope_angles' values, so equal to the full forward's)."""

    def move(self, src: int, dst: int, length: int) -> None:
        """Copy the first `length` positions of slot `src` to slot `dst`, in every block."""
        self.k[:, dst, :, :length] = self.k[:, src, :, :length]
        self.v[:, dst, :, :length] = self.v[:, src, :, :length]

    @property
    def nbytes(self) -> int:
        return 2 * self.k.numel() * self.k.element_size()


@dataclass(frozen=True)
class PromptChunk:
    """Prompt tokens of one sequence in a cached step: rows [row, row + count) of the step, at
    positions [start, start + count), in cache slot `slot`."""

    slot: int
    start: int
    count: int
    row: int
    bias_CL: torch.Tensor | None
    """Additive causal mask (0 or -inf) over keys [0, start + count); None when start is 0 (is_causal)."""


@dataclass(frozen=True)
class CachedStep:
    """Where the N new tokens of one incremental step go; built once per step, read by every block.

    Rows [0, decode_rows) are one new token of each decoding sequence, in slot order; the chunks'
    rows follow. Decode attention runs over cache slots [0, R) at once, R = decode_bias_R11L.shape[0].
    """

    pos_N: torch.Tensor
    """int64 position of each new token in its sequence."""
    slot_N: torch.Tensor
    """int64 cache slot of each new token."""
    decode_rows: int
    decode_slot_B: torch.Tensor
    """int64 slots of the decode rows, ascending; all of [0, R) when decode_rows == R."""
    decode_bias_R11L: torch.Tensor | None
    """Additive mask (0 or -inf) of each slot in [0, R) over its first L positions; None: no decode rows."""
    chunks: tuple[PromptChunk, ...]


def transformer_blocks(model: nn.Module) -> list[nn.Module]:
    """Every DecoderBlock in `model`, in forward order: the units to shard and checkpoint one by one.

    A `decoder_block` layer with `repeat: N` contributes N blocks. Empty for models without one.
    """
    return [module for module in model.modules() if isinstance(module, DecoderBlock)]

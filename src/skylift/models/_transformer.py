"""Pre-norm transformer blocks: self-attention (causal or padding-masked), RoPE, GELU or SwiGLU MLPs.

A `decoder_block` layer with `repeat: N` builds one DecoderStack holding N separate DecoderBlock
modules, so distributed code can shard and checkpoint each block on its own (see
transformer_blocks). Linear layers have no bias, as in PaLM and Llama: fewer parameters, same quality.

Shape legend: B batch   T tokens (positions)   D model dim   H heads   E head dim (D / H)
    K E / 2 rotary frequencies   F MLP hidden size   P max positions
"""

from __future__ import annotations

from typing import Literal

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


def transformer_blocks(model: nn.Module) -> list[nn.Module]:
    """Every DecoderBlock in `model`, in forward order: the units to shard and checkpoint one by one.

    A `decoder_block` layer with `repeat: N` contributes N blocks. Empty for models without one.
    """
    return [module for module in model.modules() if isinstance(module, DecoderBlock)]

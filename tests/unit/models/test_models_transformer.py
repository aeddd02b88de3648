"""decoder_block and norm: attention against a reference, causality, RoPE, SwiGLU, RMSNorm, repeat."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from skylift.models import build_model, transformer_blocks
from skylift.models._transformer import DecoderBlock, SelfAttention, SwiGLU, apply_rope, rope_angles
from skylift.spec import ModelSpec

V, T, D = 20, 12, 16  # vocabulary, tokens, model dim: small enough for milliseconds per forward


def _lm(block: dict[str, Any], length: int = T) -> nn.Module:
    layers = [{"token_embedding": {"dim": D}}, {"decoder_block": block}, {"lm_head": {}}]
    return build_model(ModelSpec(layers=layers), (length,), V, vocab_size=V).eval()


def _rope_reference(x_BHTE: torch.Tensor) -> torch.Tensor:
    """RoFormer's rotation as complex multiplication: pair k is x[k] + i x[k + E/2], turned by t * theta_k."""
    T, E = x_BHTE.shape[-2:]
    theta_K = torch.tensor([10_000.0 ** (-2 * k / E) for k in range(E // 2)])
    turn_TK = torch.polar(torch.ones(T, E // 2), torch.arange(T)[:, None] * theta_K)
    z_BHTK = torch.complex(x_BHTE[..., : E // 2], x_BHTE[..., E // 2 :]) * turn_TK
    return torch.cat([z_BHTK.real, z_BHTK.imag], dim=-1)


def test_rope_matches_the_complex_rotation() -> None:
    x_BHTE = torch.randn(2, 3, T, 8)
    cos_TK, sin_TK = rope_angles(T, 8, torch.device("cpu"))
    assert torch.allclose(apply_rope(x_BHTE, cos_TK, sin_TK), _rope_reference(x_BHTE), atol=1e-5)


def test_rope_scores_depend_on_relative_position_only() -> None:
    q_E, k_E = torch.randn(8), torch.randn(8)
    cos_TK, sin_TK = rope_angles(40, 8, torch.device("cpu"))

    def score(t: int, s: int) -> float:
        q = apply_rope(q_E.expand(1, 1, 40, 8), cos_TK, sin_TK)[0, 0, t]
        k = apply_rope(k_E.expand(1, 1, 40, 8), cos_TK, sin_TK)[0, 0, s]
        return float(q @ k)

    assert score(7, 3) == pytest.approx(score(30, 26), abs=1e-4)
    assert score(7, 3) == pytest.approx(score(4, 0), abs=1e-4)
    assert score(7, 3) != pytest.approx(score(7, 5), abs=1e-3)  # but it does depend on the distance


@pytest.mark.parametrize("causal", [True, False])
def test_attention_matches_a_written_out_reference(causal: bool) -> None:
    attn = SelfAttention(D, heads=4, causal=causal, rope=True, dropout=0.0)
    x_BTD = torch.randn(2, T, D)
    mask_BT = torch.ones(2, T, dtype=torch.bool)
    mask_BT[1, 7:] = False  # a padded second row
    q, k, v = (t.view(2, T, 4, 4).transpose(1, 2) for t in attn.qkv(x_BTD).split(D, dim=-1))
    q, k = _rope_reference(q), _rope_reference(k)
    scores_BHTT = q @ k.transpose(-1, -2) / math.sqrt(4)
    if causal:  # the mask is not needed: right padding never comes before a real token
        allowed_BHTT = torch.ones(T, T, dtype=torch.bool).tril().expand(2, 4, T, T)
    else:
        allowed_BHTT = mask_BT[:, None, None, :].expand(2, 4, T, T)
    y_BHTE = scores_BHTT.masked_fill(~allowed_BHTT, float("-inf")).softmax(-1) @ v
    expected_BTD = attn.proj(y_BHTE.transpose(1, 2).reshape(2, T, D))
    assert torch.allclose(attn(x_BTD, mask_BT), expected_BTD, atol=1e-5)


@pytest.mark.parametrize(
    "block",
    [
        {"heads": 4, "mlp": "swiglu", "norm": "rms", "positions": "rope", "repeat": 2},
        {"heads": 2, "mlp": "gelu", "norm": "layer", "positions": "learned"},
        {"heads": 1, "positions": "none"},
    ],
)
def test_changing_a_later_token_leaves_earlier_outputs_alone(block: dict[str, Any]) -> None:
    model = _lm(block)
    ids_BT = torch.randint(1, V, (2, T))
    changed_BT = ids_BT.clone()
    changed_BT[:, 6] = (ids_BT[:, 6] % (V - 1)) + 1  # another real token
    with torch.no_grad():
        before_BTV, after_BTV = model(ids_BT), model(changed_BT)
    assert torch.equal(before_BTV[:, :6], after_BTV[:, :6])
    assert not torch.allclose(before_BTV[:, 6:], after_BTV[:, 6:])


def test_bidirectional_block_sees_later_tokens() -> None:
    model = _lm({"heads": 2, "causal": False})
    ids_BT = torch.randint(1, V, (1, T))
    changed_BT = ids_BT.clone()
    changed_BT[0, -1] = ids_BT[0, -1] % (V - 1) + 1
    with torch.no_grad():
        assert not torch.allclose(model(ids_BT)[:, 0], model(changed_BT)[:, 0])


def test_swiglu_matches_its_formula() -> None:
    mlp = SwiGLU(D, 24)
    x_BTD = torch.randn(2, T, D)
    gate, up, down = mlp.gate.weight, mlp.up.weight, mlp.down.weight
    expected_BTD = (F.silu(x_BTD @ gate.T) * (x_BTD @ up.T)) @ down.T
    assert torch.allclose(mlp(x_BTD), expected_BTD, atol=1e-5)


def test_swiglu_hidden_keeps_the_gelu_mlp_size() -> None:
    swiglu, gelu = (_lm({"heads": 2, "mlp": kind}) for kind in ("swiglu", "gelu"))
    assert transformer_blocks(swiglu)[0].mlp.gate.out_features == round(2 / 3 * 4 * D)  # type: ignore[union-attr]
    sizes = [sum(p.numel() for p in transformer_blocks(m)[0].mlp.parameters()) for m in (swiglu, gelu)]
    assert sizes[0] == pytest.approx(sizes[1], rel=0.05)


@pytest.mark.parametrize("kind", ["rms", "layer"])
def test_norm_layer_matches_its_formula(kind: str) -> None:
    layers = [{"dense": {"units": D}}, {"norm": {"kind": kind, "eps": 1e-6}}, {"flatten": {}}]
    model = build_model(ModelSpec(layers=layers), (3, 5), 3 * D)
    norm = model[1]
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
    x_BLD = torch.randn(2, 3, D)
    if kind == "rms":
        expected = x_BLD / torch.sqrt(x_BLD.pow(2).mean(-1, keepdim=True) + 1e-6) * norm.weight
    else:
        c_BLD = x_BLD - x_BLD.mean(-1, keepdim=True)
        expected = c_BLD / torch.sqrt(c_BLD.pow(2).mean(-1, keepdim=True) + 1e-6) * norm.weight + norm.bias
    assert torch.allclose(norm(x_BLD), expected, atol=1e-5)


def test_decoder_block_norm_kinds() -> None:
    rms, layer = (transformer_blocks(_lm({"heads": 2, "norm": n}))[0] for n in ("rms", "layer"))
    assert isinstance(rms.attn_norm, nn.RMSNorm) and isinstance(rms.mlp_norm, nn.RMSNorm)
    assert isinstance(layer.attn_norm, nn.LayerNorm) and isinstance(layer.mlp_norm, nn.LayerNorm)


def test_repeat_builds_distinct_blocks_found_by_the_helper() -> None:
    layers = [
        {"token_embedding": {"dim": D}},
        {"decoder_block": {"heads": 2, "repeat": 3}},
        {"decoder_block": {"heads": 4, "mlp": "swiglu"}},
        {"lm_head": {}},
    ]
    model = build_model(ModelSpec(layers=layers), (T,), V, vocab_size=V)
    blocks = transformer_blocks(model)
    assert len(blocks) == 4 and all(isinstance(b, DecoderBlock) for b in blocks)
    assert blocks[:3] == list(model[1].blocks) and blocks[3] is model[2].blocks[0]
    qkv = [b.attn.qkv.weight for b in blocks]  # type: ignore[union-attr]
    assert len({id(w) for w in qkv}) == 4
    assert not torch.equal(qkv[0], qkv[1])  # separately initialised, not one block used thrice
    assert transformer_blocks(build_model(ModelSpec(layers=[{"dense": {"units": 2}}]), (3,), 2)) == []


def test_learned_positions_are_added_once_and_cap_the_length() -> None:
    model = _lm({"heads": 2, "positions": "learned", "repeat": 2, "max_positions": 32}, length=T)
    stack = model[1]
    assert stack.positions.shape == (32, D) and stack.positions.requires_grad
    assert all(not hasattr(b, "positions") for b in stack.blocks)
    assert model(torch.ones(1, 32, dtype=torch.int64)).shape == (1, 32, V)
    with pytest.raises(ValueError, match="33 tokens exceed the 32 learned positions"):
        model(torch.ones(1, 33, dtype=torch.int64))


def test_learned_positions_default_to_the_input_length() -> None:
    assert _lm({"heads": 2, "positions": "learned"}, length=T)[1].positions.shape == (T, D)


def test_rope_block_has_no_position_parameters_and_takes_any_length() -> None:
    model = _lm({"heads": 2, "positions": "rope"}, length=T)
    assert model[1].positions is None
    assert model(torch.ones(1, 3 * T, dtype=torch.int64)).shape == (1, 3 * T, V)


def test_dropout_trains_and_backpropagates() -> None:
    model = _lm({"heads": 2, "dropout": 0.2, "repeat": 2}).train()
    logits_BTV = model(torch.randint(1, V, (2, T)))
    logits_BTV.sum().backward()
    assert all(p.grad is not None for p in model.parameters())

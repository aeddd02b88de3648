"""Token-id models: token_embedding, the padding mask, pool, lm_head (tying) and a tiny GPT that learns."""

from __future__ import annotations

from typing import Any

import pytest
import torch
import torch.nn.functional as F
import yaml
from torch import nn

from skylift.models import build_model, count_parameters, describe_model, transformer_blocks
from skylift.spec import ModelSpec

V, D = 30, 16  # vocabulary (id 0 is padding) and model dim

GPT_YAML = """
- token_embedding: {dim: 32}
- decoder_block: {heads: 4, mlp: swiglu, norm: rms, positions: rope, repeat: 2}
- norm: {kind: rms}
- lm_head: {tie_embedding: true}
"""


def _gpt(block_size: int = 16, vocab: int = V) -> nn.Module:
    return build_model(ModelSpec(layers=yaml.safe_load(GPT_YAML)), (block_size,), vocab, vocab_size=vocab)


def _classifier(block: dict[str, Any], mode: str, max_length: int = 16) -> nn.Module:
    layers = [
        {"token_embedding": {"dim": D}},
        {"decoder_block": block},
        {"pool": {"mode": mode}},
        {"dense": {"units": 3}},
    ]
    return build_model(ModelSpec(layers=layers), (max_length,), 3, vocab_size=V).eval()


def _padded(ids: list[int], length: int) -> torch.Tensor:
    return torch.tensor([ids + [0] * (length - len(ids))])


def test_gpt_from_yaml_shapes_and_summary() -> None:
    model = _gpt()
    assert [row[:2] for row in describe_model(model, (16,))] == [
        ("token_embedding_0", "[16, 32]"),
        ("decoder_block_1", "[16, 32]"),
        ("norm_2", "[16, 32]"),
        ("lm_head_3", "[16, 30]"),
    ]
    ids_BT = torch.randint(0, V, (3, 16))
    logits_BTV = model(ids_BT)
    assert logits_BTV.shape == (3, 16, V) and logits_BTV.dtype == torch.float32
    assert model(ids_BT[:, :5]).shape == (3, 5, V)  # rope: shorter sequences work too
    assert len(transformer_blocks(model)) == 2


def test_float_ids_are_read_like_int_ids() -> None:
    model = _gpt().eval()
    ids_BT = torch.randint(0, V, (2, 16))
    with torch.no_grad():
        assert torch.equal(model(ids_BT), model(ids_BT.float()))


@pytest.mark.parametrize("mode", ["mean", "last"])
@pytest.mark.parametrize(
    "block",
    [
        {"heads": 2, "causal": False, "positions": "rope"},
        {"heads": 2, "causal": True, "positions": "learned", "repeat": 2},
        {"heads": 4, "causal": False, "positions": "learned", "mlp": "swiglu", "norm": "rms"},
    ],
)
def test_padding_does_not_change_a_classifier(block: dict[str, Any], mode: str) -> None:
    model = _classifier(block, mode)
    text = [5, 9, 2, 17, 3]
    with torch.no_grad():
        short_BK, long_BK = model(_padded(text, 8)), model(_padded(text, 16))
    assert torch.allclose(short_BK, long_BK, atol=1e-5)


def test_padding_is_what_the_mask_hides() -> None:
    # without the mask the same layers would see the pads: changing the padding length must matter
    model = _classifier({"heads": 2, "causal": False}, "mean")
    text = [5, 9, 2, 17, 3]
    pooled = model[2]
    with torch.no_grad():
        h_short = model[1](model[0](_padded(text, 8)))
        h_long = model[1](model[0](_padded(text, 16)))
    assert not torch.allclose(pooled(h_short), pooled(h_long))


def test_transformer_encoder_after_token_embedding_ignores_padding() -> None:
    layers = [
        {"token_embedding": {"dim": D}},
        {"transformer_encoder": {"heads": 2, "ff_dim": 32, "dropout": 0.0}},
        {"dense": {"units": 3}},
    ]
    model = build_model(ModelSpec(layers=layers), (16,), 3, vocab_size=V).eval()
    with torch.no_grad():
        assert torch.allclose(model(_padded([4, 8, 15], 8)), model(_padded([4, 8, 15], 16)), atol=1e-5)


def test_empty_text_gives_finite_output() -> None:
    model = _classifier({"heads": 2, "causal": False}, "mean")
    assert torch.isfinite(model(torch.zeros(2, 16, dtype=torch.int64))).all()


@pytest.mark.parametrize(("mode", "position"), [("first", 0), ("last", 3), ("mean", None)])
def test_pool_modes_pick_real_tokens(mode: str, position: int | None) -> None:
    layers = [{"token_embedding": {"dim": D}}, {"pool": {"mode": mode}}]
    model = build_model(ModelSpec(layers=layers), (8,), D, vocab_size=V)
    ids_BT = _padded([3, 1, 4, 1], 8)
    vectors_TD = model[0].weight[ids_BT[0, :4]]
    expected_D = vectors_TD.mean(0) if position is None else vectors_TD[position]
    assert torch.allclose(model(ids_BT)[0], expected_D)


def test_tied_head_shares_the_embedding_parameter() -> None:
    model = _gpt()
    embedding, head = model[0], model[3]
    assert head.tied and head.out_weight is embedding.weight
    assert "lm_head_3.weight" not in model.state_dict()  # one key per weight: safetensors-friendly
    assert not [name for name, _ in model.named_parameters() if name.startswith("lm_head")]
    assert describe_model(model, (16,))[3][2] == 0  # counted once, with the embedding
    assert embedding.weight.std().item() == pytest.approx(0.02, rel=0.2)  # glorot init left it alone

    ids_BT = torch.randint(1, V, (2, 16))
    before = embedding.weight.detach().clone()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    loss = F.cross_entropy(model(ids_BT).flatten(0, 1), ids_BT.flatten())
    loss.backward()
    # the embedding lookup touches only the rows of the ids; the head's gradient reaches every row
    assert embedding.weight.grad is not None and torch.count_nonzero(embedding.weight.grad.abs().sum(1)) == V
    optimizer.step()
    assert not torch.equal(before, embedding.weight)
    assert head.out_weight is embedding.weight  # still one tensor after the update


def test_untied_head_has_its_own_weight_and_bias() -> None:
    layers = [{"token_embedding": {"dim": D}}, {"lm_head": {"tie_embedding": False, "bias": True}}]
    model = build_model(ModelSpec(layers=layers), (8,), V, vocab_size=V)
    head = model[1]
    assert not head.tied and head.out_weight is not model[0].weight
    assert head.bias is not None and head.bias.shape == (V,)
    assert count_parameters(model) == 2 * V * D + V


def test_tied_model_survives_a_state_dict_round_trip() -> None:
    model = _gpt().eval()
    torch.manual_seed(1)
    fresh = _gpt().eval()
    fresh.load_state_dict(model.state_dict(), strict=True)
    ids_BT = torch.randint(0, V, (2, 16))
    with torch.no_grad():
        assert torch.equal(fresh(ids_BT), model(ids_BT))
    assert fresh[3].out_weight is fresh[0].weight


def test_tiny_gpt_learns_a_repeated_sequence() -> None:
    torch.manual_seed(0)
    model = _gpt(block_size=16, vocab=12).train()
    pattern = torch.tensor([1, 5, 2, 9, 3, 7, 11, 4])
    stream = pattern.repeat(6)  # 48 tokens: windows of 17 hold the input and the shifted target
    windows_BT = torch.stack([stream[i : i + 17] for i in range(8)])
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(60):
        logits_BTV = model(windows_BT[:, :-1])
        loss = F.cross_entropy(logits_BTV.flatten(0, 1), windows_BT[:, 1:].flatten())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[0] > 2.0  # about ln(12) = 2.5 at the start
    assert losses[-1] < 0.1, losses[::10]

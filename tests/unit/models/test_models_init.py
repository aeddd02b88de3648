"""Weight init: Keras' Glorot-uniform with zero bias by default, or torch's own."""

from __future__ import annotations

import math

import torch
from torch import nn

from skylift.models import build_model
from skylift.spec import ModelSpec

LAYERS = [
    {"conv1d": {"filters": 8, "kernel_size": 3}},
    {"flatten": {}},
    {"dense": {"units": 64, "activation": "relu"}},
    {"dense": {"units": 10}},
]
INPUT = (4, 30)


def _weighted(model: nn.Module) -> list[nn.Linear | nn.Conv1d]:
    return [m for m in model.modules() if isinstance(m, nn.Linear | nn.Conv1d)]


def test_glorot_is_the_default_zero_bias_weights_within_bound() -> None:
    spec = ModelSpec(layers=LAYERS)
    assert spec.init == "glorot_uniform"
    layers = _weighted(build_model(spec, INPUT, 10))
    assert len(layers) == 3
    for layer in layers:
        assert layer.bias is not None and torch.count_nonzero(layer.bias) == 0
        fan_out, fan_in = layer.weight.shape[0], layer.weight[0].numel()
        receptive = layer.weight[0, 0].numel()
        bound = math.sqrt(6.0 / (fan_in + fan_out * receptive))
        assert layer.weight.abs().max() <= bound
        # uniform on [-bound, bound]: the largest draw comes near the bound
        assert layer.weight.abs().max() > 0.9 * bound


def test_glorot_reaches_linears_inside_transformer_blocks() -> None:
    layers = [
        {"embedding": {"vocab_size": 20, "dim": 8}},
        {"transformer_encoder": {"heads": 2, "ff_dim": 16}},
        {"dense": {"units": 3}},
    ]
    model = build_model(ModelSpec(layers=layers), (5,), 3)
    for layer in (m for m in model.modules() if isinstance(m, nn.Linear)):
        assert layer.bias is not None and torch.count_nonzero(layer.bias) == 0


def test_torch_init_differs() -> None:
    torch.manual_seed(0)
    glorot = _weighted(build_model(ModelSpec(layers=LAYERS), INPUT, 10))
    torch.manual_seed(0)
    native = _weighted(build_model(ModelSpec(layers=LAYERS, init="torch"), INPUT, 10))
    for g, t in zip(glorot, native, strict=True):
        assert t.bias is not None and torch.count_nonzero(t.bias) > 0
        assert not torch.equal(g.weight, t.weight)
        # torch's default: U(-1/sqrt(fan_in), 1/sqrt(fan_in))
        assert t.weight.abs().max() <= 1 / math.sqrt(t.weight[0].numel())


def test_same_seed_same_model() -> None:
    torch.manual_seed(7)
    a = build_model(ModelSpec(layers=LAYERS), INPUT, 10).state_dict()
    torch.manual_seed(7)
    b = build_model(ModelSpec(layers=LAYERS), INPUT, 10).state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_gpt2_init_scales_the_residual_projections_by_depth() -> None:
    layers = [
        {"token_embedding": {"dim": 64}},
        {"decoder_block": {"heads": 4, "mlp": "gelu", "repeat": 8}},
        {"norm": {}},
        {"lm_head": {}},
    ]
    torch.manual_seed(0)
    model = build_model(ModelSpec(layers=layers, init="gpt2"), (16,), 512, vocab_size=512)
    stds = {name: p.std().item() for name, p in model.named_parameters() if p.dim() == 2}
    residual = [s for name, s in stds.items() if name.endswith(("attn.proj.weight", "mlp.down.weight"))]
    others = [s for name, s in stds.items() if name.endswith(("attn.qkv.weight", "mlp.up.weight"))]
    assert len(residual) == len(others) == 16
    for s in residual:  # 0.02 / sqrt(2 x 8 blocks) = 0.005
        assert abs(s - 0.005) < 0.0005
    for s in others:
        assert abs(s - 0.02) < 0.001

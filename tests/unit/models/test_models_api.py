"""The public API of skylift.models, the seed MNIST MLP, parameter counts and the summary table."""

from __future__ import annotations

import torch
from torch import nn

import skylift.models as models
from skylift.models import build_model, count_parameters, describe_model
from skylift.spec import ModelSpec


def test_public_api_is_pinned() -> None:
    assert sorted(models.__all__) == [
        "LAYER_TYPES",
        "build_model",
        "count_parameters",
        "describe_model",
        "transformer_blocks",
    ]
    assert {
        "dense",
        "dropout",
        "batchnorm",
        "layernorm",
        "activation",
        "flatten",
        "reshape",
        "conv1d",
        "conv2d",
        "maxpool",
        "avgpool",
        "global_avgpool",
        "embedding",
        "lstm",
        "gru",
        "transformer_encoder",
        "token_embedding",
        "decoder_block",
        "norm",
        "pool",
        "lm_head",
    } <= set(models.LAYER_TYPES)


def test_mnist_mlp_builds_784_256_128_10(mnist_spec: ModelSpec) -> None:
    model = build_model(mnist_spec, (784,), 10)
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(784, 256), (256, 128), (128, 10)]
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm1d)]
    # Keras' BatchNormalization defaults (momentum 0.99, epsilon 1e-3) in torch terms
    assert [(m.num_features, m.momentum, m.eps) for m in norms] == [(256, 0.01, 1e-3), (128, 0.01, 1e-3)]
    assert [m.p for m in model.modules() if isinstance(m, nn.Dropout)] == [0.5, 0.5]
    # 784*256+256 + 2*256 + 256*128+128 + 2*128 + 128*10+10
    assert count_parameters(model) == 235_914
    assert model.training  # handed back in torch's default mode
    logits_BK = model(torch.rand(5, 784))
    assert logits_BK.shape == (5, 10) and logits_BK.dtype == torch.float32


def test_describe_model_rows(mnist_spec: ModelSpec) -> None:
    model = build_model(mnist_spec, (784,), 10)
    model.eval()
    rows = describe_model(model, (784,))
    assert rows == [
        ("dense_0", "[256]", 200_960),
        ("dropout_1", "[256]", 0),
        ("batchnorm_2", "[256]", 512),
        ("dense_3", "[128]", 32_896),
        ("dropout_4", "[128]", 0),
        ("batchnorm_5", "[128]", 256),
        ("dense_6", "[10]", 1_290),
    ]
    assert sum(r[2] for r in rows) == count_parameters(model)
    assert not model.training  # the caller's mode survives the dummy run


def test_describe_model_without_children_and_unused_child() -> None:
    class Odd(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.used = nn.Linear(4, 3)
            self.unused = nn.Linear(4, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out: torch.Tensor = self.used(x)
            return out

    assert describe_model(Odd(), (4,)) == [("used", "[3]", 15), ("unused", "-", 20)]
    assert describe_model(nn.Linear(4, 2), (4,)) == [("Linear", "[2]", 10)]


def test_dummy_run_does_not_touch_batchnorm_stats(mnist_spec: ModelSpec) -> None:
    model = build_model(mnist_spec, (784,), 10)
    norm = next(m for m in model.modules() if isinstance(m, nn.BatchNorm1d))
    assert int(norm.num_batches_tracked) == 0
    assert torch.equal(norm.running_mean, torch.zeros(256))

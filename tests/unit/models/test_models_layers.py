"""Every declarative layer type inside small example models: shapes at build time and forward."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from skylift.models import build_model, describe_model
from skylift.spec import ModelSpec

B = 3  # rows in each forward test


def _shapes(model: nn.Module, input_shape: tuple[int, ...]) -> list[str]:
    return [shape for _, shape, _ in describe_model(model, input_shape)]


def _ids(vocab: int, length: int) -> torch.Tensor:
    """Token ids stored as float32, as the data layer hands them over."""
    return torch.randint(0, vocab, (B, length)).float()


EXAMPLES: dict[str, tuple[list[dict[str, Any]], tuple[int, ...], int, list[str]]] = {
    "image_conv_net": (
        [
            {"conv2d": {"filters": 8, "kernel_size": 3, "padding": "same", "activation": "relu"}},
            {"batchnorm": {}},
            {"maxpool": {}},
            {"conv2d": {"filters": 16, "kernel_size": [3, 3], "stride": 1, "activation": "relu"}},
            {"avgpool": {"size": 2, "stride": 2}},
            {"global_avgpool": None},
            {"dropout": {"rate": 0.25}},
            {"dense": {"units": 10}},
        ],
        (1, 28, 28),
        10,
        ["[8, 28, 28]", "[8, 28, 28]", "[8, 14, 14]", "[16, 12, 12]", "[16, 6, 6]", "[16]", "[16]", "[10]"],
    ),
    "flat_image_reshaped": (
        [
            {"reshape": {"shape": [1, 28, -1]}},
            {"conv2d": {"filters": 4, "kernel_size": 5, "stride": 2, "padding": 1}},
            {"flatten": {}},
            {"dense": {"units": 10}},
        ],
        (784,),
        10,
        ["[1, 28, 28]", "[4, 13, 13]", "[676]", "[10]"],
    ),
    "audio_conv1d": (
        [
            {
                "conv1d": {
                    "filters": 16,
                    "kernel_size": 5,
                    "stride": 2,
                    "padding": "same",
                    "activation": "relu",
                }
            },
            {"batchnorm": {"momentum": 0.1}},
            {"maxpool": {"size": 2}},
            {"conv1d": {"filters": 8, "kernel_size": 3, "activation": "gelu"}},
            {"global_avgpool": {}},
            {"dense": {"units": 5}},
        ],
        (13, 50),
        5,
        ["[16, 25]", "[16, 25]", "[16, 12]", "[8, 10]", "[8]", "[5]"],
    ),
    "text_embedding_lstm": (
        [
            {"embedding": {"vocab_size": 100, "dim": 16}},
            {"lstm": {"units": 8, "bidirectional": True}},
            {"dense": {"units": 4}},
        ],
        (20,),
        4,
        ["[20, 16]", "[16]", "[4]"],
    ),
    "text_embedding_gru": (
        [
            {"embedding": {"vocab_size": 100, "dim": 16}},
            {"gru": {"units": 8, "num_layers": 2, "dropout": 0.1, "return_sequences": True}},
            {"layernorm": {}},
            {"dense": {"units": 3, "activation": "tanh"}},
            {"flatten": {}},
            {"dense": {"units": 4}},
        ],
        (20,),
        4,
        ["[20, 16]", "[20, 8]", "[20, 8]", "[20, 3]", "[60]", "[4]"],
    ),
    "text_embedding_transformer": (
        [
            {"embedding": {"vocab_size": 100, "dim": 16}},
            {"position_embedding": {}},
            {"transformer_encoder": {"heads": 4, "ff_dim": 32, "num_layers": 2}},
            {"dense": {"units": 4}},
        ],
        (20,),
        4,
        ["[20, 16]", "[20, 16]", "[16]", "[4]"],
    ),
    "transformer_unpooled": (
        [
            {"embedding": {"vocab_size": 100, "dim": 8}},
            {"transformer_encoder": {"heads": 2, "ff_dim": 16, "pool": "none", "dropout": 0.0}},
            {"transformer_encoder": {"heads": 2, "ff_dim": 16, "pool": "first"}},
            {"dense": {"units": 4}},
        ],
        (20,),
        4,
        ["[20, 8]", "[20, 8]", "[8]", "[4]"],
    ),
    "tabular_dense": (
        [
            {"dense": {"units": 32, "bias": False}},
            {"batchnorm": {}},
            {"activation": {"name": "silu"}},
            {"dense": {"units": 16, "activation": "elu"}},
            {"layernorm": {"eps": 1e-6}},
            {"dense": {"units": 3}},
        ],
        (7,),
        3,
        ["[32]", "[32]", "[32]", "[16]", "[16]", "[3]"],
    ),
}


@pytest.mark.parametrize("name", list(EXAMPLES))
def test_example_model_builds_and_runs(name: str) -> None:
    layers, input_shape, n_classes, shapes = EXAMPLES[name]
    model = build_model(ModelSpec(layers=layers), input_shape, n_classes)
    assert _shapes(model, input_shape) == shapes
    x = _ids(100, input_shape[0]) if "embedding" in layers[0] else torch.randn(B, *input_shape)
    logits_BK = model(x)  # training mode: dropout and batch-stat batchnorm
    assert logits_BK.shape == (B, n_classes)
    assert torch.isfinite(logits_BK).all()
    logits_BK.sum().backward()
    model.eval()
    with torch.no_grad():
        assert model(x).shape == (B, n_classes)


@pytest.mark.parametrize(
    "name", ["relu", "gelu", "tanh", "sigmoid", "silu", "elu", "leaky_relu", "softmax", "log_softmax"]
)
def test_activation_names(name: str) -> None:
    layers = [
        {"dense": {"units": 6, "activation": name}},
        {"activation": {"name": name}},
        {"dense": {"units": 2}},
    ]
    model = build_model(ModelSpec(layers=layers), (4,), 2)
    assert model(torch.randn(B, 4)).shape == (B, 2)


def test_softmax_last_layer_sums_to_one() -> None:
    model = build_model(ModelSpec(layers=[{"dense": {"units": 4, "activation": "softmax"}}]), (6,), 4)
    assert torch.allclose(model(torch.randn(B, 6)).sum(dim=-1), torch.ones(B))


def test_conv_softmax_acts_over_channels() -> None:
    layers = [{"conv1d": {"filters": 3, "kernel_size": 1, "activation": "softmax"}}, {"global_avgpool": {}}]
    model = build_model(ModelSpec(layers=layers), (2, 5), 3)
    assert torch.allclose(model[0](torch.randn(B, 2, 5)).sum(dim=1), torch.ones(B, 5))


def test_batchnorm_picks_2d_for_images() -> None:
    layers = [{"batchnorm": {}}, {"flatten": {}}, {"dense": {"units": 2}}]
    model = build_model(ModelSpec(layers=layers), (3, 4, 4), 2)
    assert isinstance(model[0], nn.BatchNorm2d) and model[0].num_features == 3


def test_dense_works_per_step_on_sequences() -> None:
    model = build_model(ModelSpec(layers=[{"dense": {"units": 5}}, {"flatten": {}}]), (4, 3), 20)
    assert _shapes(model, (4, 3)) == ["[4, 5]", "[20]"]


def test_bidirectional_lstm_returns_both_final_states() -> None:
    layers = [{"lstm": {"units": 4, "bidirectional": True}}]
    model = build_model(ModelSpec(layers=layers), (6, 3), 8).eval()
    x_BLF = torch.randn(B, 6, 3)
    with torch.no_grad():
        out_BLU, _ = model[0].rnn(x_BLF)
        last_BU = model(x_BLF)
    # forward direction ends at the last step, backward at the first
    assert torch.allclose(last_BU, torch.cat([out_BLU[:, -1, :4], out_BLU[:, 0, 4:]], dim=-1))


def test_embedding_rejects_out_of_range_ids_at_run_time() -> None:
    layers = [{"embedding": {"vocab_size": 10, "dim": 4}}, {"flatten": {}}, {"dense": {"units": 2}}]
    model = build_model(ModelSpec(layers=layers), (5,), 2)
    assert model(torch.full((B, 5), 9.0)).shape == (B, 2)
    with pytest.raises(IndexError):
        model(torch.full((B, 5), 10.0))
    with pytest.raises(IndexError):
        model(torch.full((B, 5), -1.0))


@settings(max_examples=30, deadline=None)
@given(
    size=st.integers(1, 12),
    kernel=st.integers(1, 5),
    stride=st.integers(1, 3),
    two_d=st.booleans(),
)
def test_same_padding_gives_ceil_of_size_over_stride(
    size: int, kernel: int, stride: int, two_d: bool
) -> None:
    kind, input_shape = ("conv2d", (2, size, size + 1)) if two_d else ("conv1d", (2, size))
    layers = [
        {kind: {"filters": 3, "kernel_size": kernel, "stride": stride, "padding": "same"}},
        {"flatten": {}},
    ]
    out = [3, *(math.ceil(n / stride) for n in input_shape[1:])]
    model = build_model(ModelSpec(layers=layers), input_shape, math.prod(out))
    assert _shapes(model, input_shape)[0] == "[" + ", ".join(map(str, out)) + "]"

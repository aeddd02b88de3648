"""The residual layer: ResNet's basic block over images (2-D) and spectrograms (1-D), checked at build."""

from __future__ import annotations

from typing import Any

import pytest
import torch
import yaml

from skylift.errors import SpecError
from skylift.models import build_model, describe_model
from skylift.models._residual import ResidualBlock
from skylift.spec import ModelSpec

RESNET = """
- conv2d: {filters: 16, kernel_size: 3, padding: same}
- batchnorm: {}
- activation: {name: relu}
- residual: {filters: 16, repeat: 2}
- residual: {filters: 32, stride: 2, repeat: 2}
- residual: {filters: 64, stride: 2}
- global_avgpool: {}
- dense: {units: 10}
"""

KWS = """
- conv1d: {filters: 32, kernel_size: 3, padding: same}
- residual: {filters: 32, kernel_size: 9}
- residual: {filters: 48, kernel_size: 9, stride: 2}
- global_avgpool: {}
- dropout: {rate: 0.2}
- dense: {units: 12}
"""


def _build(layers: str | list[dict[str, Any]], shape: tuple[int, ...], outputs: int) -> torch.nn.Module:
    parsed = yaml.safe_load(layers) if isinstance(layers, str) else layers
    return build_model(ModelSpec(layers=parsed), shape, outputs)


def test_a_small_resnet_on_images_has_the_shapes_it_promises() -> None:
    model = _build(RESNET, (3, 32, 32), 10)
    shapes = [shape for _, shape, _ in describe_model(model, (3, 32, 32))]
    assert shapes[3:6] == ["[16, 32, 32]", "[32, 16, 16]", "[64, 8, 8]"]
    logits = model(torch.randn(4, 3, 32, 32))
    assert logits.shape == (4, 10)
    logits.sum().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_a_keyword_spotting_net_convolves_over_time_with_mel_bands_as_channels() -> None:
    model = _build(KWS, (40, 101), 12)
    shapes = [shape for _, shape, _ in describe_model(model, (40, 101))]
    assert shapes[:3] == ["[32, 101]", "[32, 101]", "[48, 51]"]  # ceil(101 / 2) frames after stride 2
    assert model(torch.randn(2, 40, 101)).shape == (2, 12)


def test_the_shortcut_is_a_projection_only_when_shapes_change() -> None:
    same = ResidualBlock(2, 8, 8, (3, 3), (1, 1), torch.nn.ReLU())
    assert isinstance(same.shortcut, torch.nn.Identity)
    for block in (
        ResidualBlock(2, 8, 16, (3, 3), (1, 1), torch.nn.ReLU()),
        ResidualBlock(1, 8, 8, (5,), (2,), torch.nn.ReLU()),
    ):
        assert isinstance(block.shortcut, torch.nn.Sequential)
    # With its convolutions zeroed the block passes a non-negative input through (relu(0 + x) = x).
    for conv in (same.conv1, same.conv2):
        torch.nn.init.zeros_(conv.weight)
    same.eval()
    x = torch.rand(2, 8, 5, 5)
    torch.testing.assert_close(same(x), x)


def test_stride_and_kernel_per_dim_and_odd_sizes() -> None:
    model = _build(
        [
            {"residual": {"filters": 4, "kernel_size": [3, 5], "stride": [1, 2]}},
            {"flatten": {}},
            {"dense": {"units": 2}},
        ],
        (1, 7, 9),
        2,
    )
    assert next(s for _, s, _ in describe_model(model, (1, 7, 9))) == "[4, 7, 5]"


@pytest.mark.parametrize(
    ("layers", "shape", "message"),
    [
        ([{"residual": {"filters": 4, "kernel_size": 4}}], (3, 8, 8), "kernel_size: must be odd"),
        (
            [{"residual": {"filters": 4}}],
            (64,),
            "needs input [channels, length] or [channels, height, width]",
        ),
        ([{"residual": {"filters": 4, "stride": [1, 2, 2]}}], (3, 8, 8), "stride: needs 1 or 2 sizes"),
        ([{"residual": {"filters": 0}}], (3, 8, 8), "filters: input should be greater than 0"),
        ([{"residual": {"filters": 4, "activation": "softmax"}}], (3, 8, 8), "activation: input should be"),
        ([{"residual": {"filter": 4}}], (3, 8, 8), "unknown parameter (allowed: filters, kernel_size"),
    ],
)
def test_bad_residual_layers_are_one_line_spec_errors(
    layers: list[dict[str, Any]], shape: tuple[int, ...], message: str
) -> None:
    with pytest.raises(SpecError) as info:
        _build([*layers, {"flatten": {}}, {"dense": {"units": 2}}], shape, 2)
    assert message in str(info.value) and "\n" not in str(info.value)
    assert str(info.value).startswith("model.layers[0] (residual)")


def test_an_image_too_small_for_the_model_is_refused_at_build() -> None:
    layers = [
        {"conv2d": {"filters": 4, "kernel_size": 3}},
        {"maxpool": {}},
        {"conv2d": {"filters": 4, "kernel_size": 3}},
    ]
    with pytest.raises(SpecError, match=r"model.layers\[2\] \(conv2d\): cannot run on input \[4, 2, 2\]"):
        _build([*layers, {"flatten": {}}, {"dense": {"units": 2}}], (3, 6, 6), 2)

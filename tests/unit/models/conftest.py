"""Shared helpers for the skylift.models tests."""

from __future__ import annotations

import pytest
import torch
import yaml

from skylift.spec import ModelSpec

MNIST_LAYERS_YAML = """
- dense: {units: 256, activation: relu}
- dropout: {rate: 0.5}
- batchnorm: {}
- dense: {units: 128, activation: relu}
- dropout: {rate: 0.5}
- batchnorm: {}
- dense: {units: 10}
"""


@pytest.fixture
def mnist_spec() -> ModelSpec:
    """The MNIST MLP of DESIGN.md, parsed from its YAML."""
    return ModelSpec(input_shape=[784], layers=yaml.safe_load(MNIST_LAYERS_YAML))


@pytest.fixture(autouse=True)
def _seeded() -> None:
    torch.manual_seed(0)

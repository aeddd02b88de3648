"""Shared helpers for the batch inference tests: registered models that need no training."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from skylift.models import build_model
from skylift.registry import Registry
from skylift.security import MasterKey
from skylift.spec import load_spec
from tests.conftest import EXAMPLE
from tests.unit.registry.conftest import make_tiny


def register_mlp(home: Path, seed: int = 0, key: MasterKey | None = None) -> nn.Module:
    """The example MNIST MLP (784 -> 10 classes "0".."9"), batch-norm statistics set, registered in `home`."""
    spec = load_spec(EXAMPLE)
    torch.manual_seed(seed)
    module = build_model(spec.model, (784,), 10)
    module.train()
    with torch.no_grad():
        for _ in range(3):
            module(torch.rand(64, 784))
    module.eval()
    meta = {"model": spec.model.model_dump(mode="json"), "input_shape": [784], "classes": list("0123456789")}
    Registry(home, key).register("mnist-mlp", module.state_dict(), meta)
    return module


def register_tiny(home: Path) -> nn.Module:
    """An 8-feature model with named classes (cat, dog, eel), registered as `tiny`."""
    tiny = make_tiny()
    Registry(home).register("tiny", tiny.state, tiny.meta)
    return tiny.module


def features(rows: int, width: int = 784, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((rows, width), dtype=np.float32)


def reference(module: nn.Module, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(classes, probabilities) of a single-process model(x) over all rows at once."""
    with torch.no_grad():
        logits = module(torch.from_numpy(x))
    return logits.argmax(1).numpy(), torch.softmax(logits, 1).numpy()


@pytest.fixture
def mlp(home: Path) -> nn.Module:
    return register_mlp(home)


@pytest.fixture
def tiny(home: Path) -> nn.Module:
    return register_tiny(home)

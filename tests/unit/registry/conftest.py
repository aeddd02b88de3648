"""Shared helpers for the registry tests: a tiny trained-looking model and its checkpoint meta."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from skylift.models import build_model
from skylift.registry import Registry
from skylift.security import MasterKey
from skylift.spec import ModelSpec

SPEC = ModelSpec(
    input_shape=[8],
    layers=[
        {"dense": {"units": 16, "activation": "relu"}},
        {"batchnorm": {}},
        {"dropout": {"rate": 0.5}},
        {"dense": {"units": 3}},
    ],
)
CLASSES = ["cat", "dog", "eel"]


@dataclass
class Tiny:
    module: nn.Module
    meta: dict[str, Any]

    @property
    def state(self) -> dict[str, torch.Tensor]:
        return self.module.state_dict()


def make_tiny(seed: int = 0) -> Tiny:
    """A small MLP with non-trivial batch-norm statistics, in eval mode, and a checkpoint's meta."""
    torch.manual_seed(seed)
    module = build_model(SPEC, (8,), len(CLASSES))
    module.train()
    with torch.no_grad():
        for _ in range(3):
            module(torch.randn(32, 8) * 3 + 1)
    module.eval()
    meta = {
        "model": SPEC.model_dump(mode="json"),
        "input_shape": [8],
        "classes": list(CLASSES),
        "run_id": f"run-{seed}",
        "name": "tiny",
        "spec_hash": "ab" * 32,
        "data_hash": "cd" * 32,
        "epoch": 4,
    }
    return Tiny(module, meta)


@pytest.fixture
def tiny() -> Tiny:
    return make_tiny()


@pytest.fixture
def registry(tmp_path: Path) -> Registry:
    return Registry(tmp_path / "home")


@pytest.fixture
def key() -> MasterKey:
    return MasterKey.generate()


@pytest.fixture
def sealed(tmp_path: Path, key: MasterKey) -> Registry:
    """A registry that encrypts new versions."""
    return Registry(tmp_path / "home", key)


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file under `root` with its bytes: compared before/after to prove nothing changed."""
    if not root.exists():
        return {}
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}

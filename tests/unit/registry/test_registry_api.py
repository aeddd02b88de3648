"""The registry's public API is pinned; factory models round-trip by importing only their module."""

from __future__ import annotations

import sys
import uuid
from pathlib import Path

import pytest
import torch

import skylift.registry
import skylift.security
from skylift.models import build_model
from skylift.registry import Registry
from skylift.spec import ModelSpec


def test_public_names_are_pinned() -> None:
    assert skylift.registry.__all__ == [
        "LoadedModel",
        "ModelEntry",
        "ModelRef",
        "ModelVersion",
        "Pruning",
        "Registry",
        "Verification",
        "VersionInfo",
        "load_model",
        "parse_ref",
        "run_metadata",
        "sort_versions",
        "spec_serve_section",
    ]
    assert skylift.security.__all__ == [
        "MASTER_KEY_ENV",
        "MasterKey",
        "create_master_key_file",
        "decrypt",
        "encrypt",
        "master_key_from_env",
    ]


FACTORY = """
from torch import nn

def build(hidden=4, classes=2):
    return nn.Sequential(nn.Flatten(), nn.Linear(16, hidden), nn.Tanh(), nn.Linear(hidden, classes))
"""


def test_factory_model_is_rebuilt_from_its_recorded_module(
    registry: Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    module_name = f"userpkg_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{module_name}.py").write_text(FACTORY)
    monkeypatch.syspath_prepend(str(tmp_path))
    spec = ModelSpec(input_shape=[4, 4], factory=f"{module_name}:build", kwargs={"hidden": 5})
    model = build_model(spec, (4, 4), 2).eval()
    meta = {"model": spec.model_dump(mode="json"), "input_shape": [4, 4], "classes": ["no", "yes"]}
    registry.register("factory-model", model.state_dict(), meta)
    sys.modules.pop(module_name)
    loaded = registry.load("factory-model")
    assert module_name in sys.modules  # imported again, by its recorded path only
    assert loaded.info["architecture"]["model"]["factory"] == f"{module_name}:build"
    assert loaded.input_shape == (4, 4)
    x = torch.randn(3, 4, 4)
    with torch.no_grad():
        assert torch.equal(loaded.module(x), model(x))
    sys.modules.pop(module_name)


def test_run_metadata_takes_metrics_and_lineage_from_a_summary() -> None:
    summary = {
        "run_id": "r1",
        "best_epoch": 3,
        "monitor": "val_loss",
        "epochs": 5,
        "checkpoint": "checkpoints/best.pt",
        "best": {"val_loss": 0.1, "val_accuracy": 0.9},
        "test": {"accuracy": 0.8, "n": 10, "confusion": [[1, 0], [0, 1]]},
        "classes": ["a", "b"],
    }
    metrics, lineage = skylift.registry.run_metadata(summary)
    assert metrics == {"val_loss": 0.1, "val_accuracy": 0.9, "test_accuracy": 0.8, "test_n": 10}
    assert lineage == {
        "run_id": "r1",
        "best_epoch": 3,
        "monitor": "val_loss",
        "epochs": 5,
        "checkpoint": "checkpoints/best.pt",
    }
    assert skylift.registry.run_metadata({}) == ({}, {})

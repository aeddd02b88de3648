"""The example specs in examples/ parse, and the one needing no download trains (README's commands)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from skylift.spec import load_spec

EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "examples").glob("*.yaml"))


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_every_example_spec_is_valid(path: Path) -> None:
    spec = load_spec(path)
    assert spec.name and spec.task in ("classification", "regression", "language_modeling")


def test_the_regression_example_trains_on_its_bundled_data(home: Path) -> None:
    example = next(p for p in EXAMPLES if p.stem == "regression")
    proc = subprocess.run(
        [sys.executable, "-m", "skylift", "train", str(example), "--set", "train.epochs=3", f"--home={home}"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "test (88 samples): mae=" in proc.stdout and " r2=" in proc.stdout
    assert "registered model: diabetes-mlp:1" in proc.stdout

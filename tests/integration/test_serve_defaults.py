"""The spec's `serve:` section: recorded with the model, the defaults of `skylift serve`, and free
to edit without blocking a resume (it is not part of the spec hash)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

from skylift.spec import load_spec
from skylift.train import fit
from tests.conftest import EXAMPLE
from tests.integration.serve_helpers import running

RUN = "serve-defaults"


def _skylift(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SKYLIFT_HOME": str(home), "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "skylift", *args], env=env, capture_output=True, text=True, timeout=600
    )


def _edited_spec(tmp_path: Path, **serve: object) -> Path:
    raw = yaml.safe_load(EXAMPLE.read_text())
    raw["train"]["epochs"] = 1
    raw["distributed"]["workers"] = 1
    raw["serve"].update(serve)
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_serve_starts_from_the_spec_section_and_flags_override(tmp_path: Path) -> None:
    home = tmp_path / "home"
    overrides = ["train.epochs=1", "distributed.workers=1", "serve.replicas=1", "serve.max_batch_rows=8"]
    fit(load_spec(EXAMPLE, overrides), home=home, run_id=RUN)
    (info,) = [json.loads(p.read_text()) for p in (home / "registry" / "mnist-mlp").glob("*/model.json")]
    assert info["serve"] == {"max_batch_rows": 8, "max_delay_ms": 2.0, "replicas": 1, "cache_mb": 64}

    with running(home, "mnist-mlp", "--no-auth") as srv:
        assert len(srv.replicas()) == 1  # the spec's 1, not the built-in 2
        assert "from the spec of mnist-mlp:1: replicas 1, max_batch_rows 8" in srv.log.read_text()
    with running(home, "mnist-mlp", "--no-auth", "--replicas", "2") as srv:
        assert len(srv.replicas()) == 2  # a flag beats the spec
        assert "replicas 1" not in srv.log.read_text() and "max_batch_rows 8" in srv.log.read_text()

    # `models register` of the run records the same section.
    registered = _skylift(home, "models", "register", RUN)
    assert registered.returncode == 0, registered.stderr
    info = json.loads((home / "registry" / "mnist-mlp" / "2" / "model.json").read_text())
    assert info["serve"]["replicas"] == 1 and info["serve"]["max_batch_rows"] == 8


def test_editing_the_serve_section_does_not_block_reopening_a_run(tmp_path: Path) -> None:
    home = tmp_path / "home"
    fit(load_spec(_edited_spec(tmp_path)), home=home, run_id=RUN)
    edited = _edited_spec(tmp_path, max_batch_rows=8, replicas=1)
    done = _skylift(home, "train", str(edited), "--run-id", RUN)
    assert done.returncode == 0, done.stderr
    # Anything that changes training still does.
    other = _skylift(home, "train", str(edited), "--run-id", RUN, "--set", "train.seed=1")
    assert other.returncode == 2 and "already exists with a different spec" in other.stderr


def test_resume_with_a_spec_whose_serve_section_changed(tmp_path: Path) -> None:
    """`skylift train --resume RUN SPEC` compares specs in cli/_train.py: it must ignore `serve:`."""
    home = tmp_path / "home"
    fit(load_spec(_edited_spec(tmp_path)), home=home, run_id=RUN)
    edited = _edited_spec(tmp_path, max_batch_rows=8)
    done = _skylift(home, "train", "--resume", RUN, str(edited))
    assert done.returncode == 0, done.stderr

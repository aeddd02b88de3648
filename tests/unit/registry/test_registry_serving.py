"""A version records its spec's `serve:` section: given explicitly, or found in its run folder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from skylift.errors import SpecError
from skylift.registry import Registry
from tests.unit.registry.conftest import make_tiny


def _model_json(home: Path, version: int) -> dict[str, object]:
    info: dict[str, object] = json.loads(
        (home / "registry" / "tiny" / str(version) / "model.json").read_text()
    )
    return info


def test_the_run_folders_serve_section_is_recorded_else_none(tmp_path: Path) -> None:
    tiny = make_tiny()  # meta run_id "run-0"
    registry = Registry(tmp_path)
    registry.register("tiny", tiny.state, tiny.meta)
    assert "serve" not in _model_json(tmp_path, 1)  # no run folder: nothing recorded
    run = tmp_path / "runs" / "run-0"
    run.mkdir(parents=True)
    (run / "spec.yaml").write_text("name: tiny\nserve: {replicas: 1, max_batch_rows: 8}\n")
    registry.register("tiny", tiny.state, tiny.meta)
    assert _model_json(tmp_path, 2)["serve"] == {
        "max_batch_rows": 8,
        "max_delay_ms": 2.0,
        "replicas": 1,
        "cache_mb": 64,
    }
    registry.register("tiny", tiny.state, tiny.meta, serve={"cache_mb": 0})  # explicit wins
    assert _model_json(tmp_path, 3)["serve"] == {
        "max_batch_rows": 64,
        "max_delay_ms": 2.0,
        "replicas": 2,
        "cache_mb": 0,
    }


def test_a_bad_explicit_section_is_refused_naming_the_field(tmp_path: Path) -> None:
    tiny = make_tiny()
    registry = Registry(tmp_path)
    with pytest.raises(
        SpecError, match=r"^serve\.replicas: input should be greater than or equal to 1, got 0$"
    ):
        registry.register("tiny", tiny.state, tiny.meta, serve={"replicas": 0})
    assert registry.list() == []


def test_a_run_id_never_reads_outside_the_runs_folder(tmp_path: Path) -> None:
    tiny = make_tiny()
    (tmp_path / "spec.yaml").write_text("serve: {replicas: 1}\n")
    Registry(tmp_path / "home").register("tiny", tiny.state, {**tiny.meta, "run_id": "../.."})
    assert "serve" not in _model_json(tmp_path / "home", 1)

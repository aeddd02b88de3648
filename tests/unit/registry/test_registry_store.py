"""Registry basics: register, list, resolve, info, promote, delete, load; bad input changes nothing."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from skylift.errors import ModelNotFound, SpecError
from skylift.registry import Registry
from tests.unit.registry.conftest import CLASSES, Tiny, make_tiny, snapshot


def test_register_writes_the_documented_layout(registry: Registry, tiny: Tiny) -> None:
    v = registry.register("tiny", tiny.state, tiny.meta, {"val_accuracy": 0.9}, {"note": "first"})
    assert (v.name, v.version, v.ref) == ("tiny", 1, "tiny:1")
    assert sorted(p.name for p in v.path.iterdir()) == ["MANIFEST.json", "model.json", "model.safetensors"]
    info = json.loads((v.path / "model.json").read_text())
    assert info["name"] == "tiny" and info["version"] == 1 and info["encrypted"] is False
    assert info["created"].endswith("+00:00")
    assert info["architecture"] == {"model": tiny.meta["model"]}
    assert info["signature"] == {
        "inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, 8]}],
        "outputs": [{"name": "logits", "datatype": "FP32", "shape": [-1, 3]}],
        "classes": CLASSES,
        "kind": "classifier",
    }
    assert info["task"] == "classification" and info["data"]["n_outputs"] == 3
    assert info["metrics"] == {"val_accuracy": 0.9}
    assert info["lineage"] == {
        "run_id": "run-0",
        "spec_hash": "ab" * 32,
        "data_hash": "cd" * 32,
        "epoch": 4,
        "note": "first",
    }
    size = (v.path / "model.safetensors").stat().st_size
    assert info["files"] == {"model.safetensors": size}
    manifest = json.loads((v.path / "MANIFEST.json").read_text())
    assert sorted(manifest["files"]) == ["model.json", "model.safetensors"]
    assert manifest["files"]["model.safetensors"]["size"] == size
    assert not any(p.name.startswith(".tmp") for p in v.path.parent.iterdir())


def test_weights_are_plain_safetensors(registry: Registry, tiny: Tiny) -> None:
    from safetensors.torch import load_file

    v = registry.register("tiny", tiny.state, tiny.meta)
    stored = load_file(v.path / "model.safetensors")
    assert stored.keys() == tiny.state.keys()
    for name, tensor in tiny.state.items():
        assert torch.equal(stored[name], tensor)


def test_load_rebuilds_the_same_model_in_eval_mode(registry: Registry, tiny: Tiny) -> None:
    registry.register("tiny", tiny.state, tiny.meta)
    rng_before = torch.get_rng_state()
    loaded = registry.load("tiny")
    assert torch.equal(torch.get_rng_state(), rng_before)  # loading does not shift the caller's seed
    assert not loaded.module.training
    assert (loaded.ref, loaded.classes, loaded.input_shape) == ("tiny:1", CLASSES, (8,))
    x = torch.randn(5, 8)
    with torch.no_grad():
        assert torch.equal(loaded.module(x), tiny.module(x))


def test_versions_count_up_and_are_immutable(registry: Registry, tiny: Tiny) -> None:
    first = registry.register("tiny", tiny.state, tiny.meta)
    before = snapshot(first.path)
    other = make_tiny(seed=1)
    second = registry.register("tiny", other.state, other.meta)
    assert second.version == 2
    assert snapshot(first.path) == before
    assert registry.resolve("tiny") == ("tiny", 2)
    assert registry.resolve("tiny:1") == ("tiny", 1)


def test_deleted_version_numbers_are_never_reused(registry: Registry, tiny: Tiny) -> None:
    registry.register("tiny", tiny.state, tiny.meta)
    registry.register("tiny", tiny.state, tiny.meta)
    registry.delete("tiny", 2)
    assert registry.register("tiny", tiny.state, tiny.meta).version == 3
    assert [e.versions for e in registry.list()] == [(1, 3)]


def test_list_shows_names_versions_and_aliases(registry: Registry, tiny: Tiny) -> None:
    assert registry.list() == []
    for name in ("zeta", "alpha", "alpha"):
        registry.register(name, tiny.state, tiny.meta)
    registry.promote("alpha", 1, "production")
    entries = registry.list()
    assert [(e.name, e.versions, e.aliases, e.latest) for e in entries] == [
        ("alpha", (1, 2), {"production": 1}, 2),
        ("zeta", (1,), {}, 1),
    ]


def test_promote_moves_an_alias_atomically(registry: Registry, tiny: Tiny) -> None:
    registry.register("tiny", tiny.state, tiny.meta)
    registry.register("tiny", tiny.state, tiny.meta)
    assert registry.promote("tiny", 1, "production") is None
    assert registry.resolve("tiny@production") == ("tiny", 1)
    assert registry.promote("tiny", 2, "production") == 1
    assert registry.resolve("tiny@production") == ("tiny", 2)
    aliases = json.loads((registry.root / "tiny" / "aliases.json").read_text())
    assert aliases == {"production": 2}
    assert registry.info("tiny:2")["aliases"] == ["production"]


def test_info_has_model_json_aliases_sizes_and_hashes(registry: Registry, tiny: Tiny) -> None:
    v = registry.register("tiny", tiny.state, tiny.meta, {"val_f1": 0.5})
    registry.promote("tiny", 1, "staging")
    info = registry.info("tiny@staging")
    assert info["ref"] == "tiny:1" and info["aliases"] == ["staging"] and info["path"] == str(v.path)
    assert info["metrics"] == {"val_f1": 0.5}
    manifest = json.loads((v.path / "MANIFEST.json").read_text())
    assert info["files"] == manifest["files"]
    assert info["size_bytes"] == sum(e["size"] for e in manifest["files"].values())


def test_delete_is_refused_while_an_alias_points_at_it(registry: Registry, tiny: Tiny) -> None:
    v = registry.register("tiny", tiny.state, tiny.meta)
    registry.promote("tiny", 1, "production")
    before = snapshot(registry.root)
    with pytest.raises(SpecError, match=r"alias production.*--force"):
        registry.delete("tiny", 1)
    assert snapshot(registry.root) == before
    assert registry.delete("tiny", 1, force=True) == ["production"]
    assert not v.path.exists()
    assert json.loads((registry.root / "tiny" / "aliases.json").read_text()) == {}
    with pytest.raises(ModelNotFound):
        registry.resolve("tiny")


@pytest.mark.parametrize(
    ("ref", "error", "part"),
    [
        ("nope", ModelNotFound, "no model named 'nope'"),
        ("tini", ModelNotFound, "did you mean 'tiny'"),
        ("tiny:9", ModelNotFound, "tiny has no version 9 (versions: 1)"),
        ("tiny@prod", ModelNotFound, "tiny has no alias 'prod' (aliases: none)"),
        ("tiny:0", SpecError, "positive integer"),
        ("../tiny", SpecError, "not allowed"),
    ],
)
def test_unknown_or_malformed_refs(
    registry: Registry, tiny: Tiny, ref: str, error: type[Exception], part: str
) -> None:
    registry.register("tiny", tiny.state, tiny.meta)
    before = snapshot(registry.root)
    for call in (registry.resolve, registry.info, registry.load, registry.verify):
        with pytest.raises(error) as err:
            call(ref)
        assert part in str(err.value) and "\n" not in str(err.value)
    assert snapshot(registry.root) == before


def test_bad_input_to_writers_changes_nothing(registry: Registry, tiny: Tiny) -> None:
    registry.register("tiny", tiny.state, tiny.meta)
    before = snapshot(registry.root)
    bad_calls: list[Callable[[], object]] = [
        lambda: registry.register("../evil", tiny.state, tiny.meta),
        lambda: registry.register("Bad Name", tiny.state, tiny.meta),
        lambda: registry.register("tiny", tiny.state, {"model": {}}),
        lambda: registry.register("tiny", {"w": "not a tensor"}, tiny.meta),
        lambda: registry.register("tiny", {}, tiny.meta),
        lambda: registry.register("tiny", tiny.state, tiny.meta, {"x": object()}),
        lambda: registry.promote("tiny", 1, "Bad Alias"),
        lambda: registry.promote("tiny", 0, "production"),
        lambda: registry.delete("tiny", -1),
    ]
    for call in bad_calls:
        with pytest.raises(SpecError):
            call()
    with pytest.raises(ModelNotFound):
        registry.promote("tiny", 7, "production")
    with pytest.raises(ModelNotFound):
        registry.delete("nope", 1)
    assert snapshot(registry.root) == before
    assert sorted(p.name for p in registry.root.iterdir()) == ["tiny"]


def test_tied_and_non_contiguous_tensors_are_stored(registry: Registry, tiny: Tiny) -> None:
    state = dict(tiny.state)
    state["extra_t"] = torch.arange(6.0).reshape(2, 3).t()  # non-contiguous view
    state["tied"] = state["dense_0.weight"]  # shares storage
    meta = dict(tiny.meta)
    registry.register("tied", state, meta)
    from safetensors.torch import load_file

    stored = load_file(registry.root / "tied" / "1" / "model.safetensors")
    assert torch.equal(stored["extra_t"], state["extra_t"]) and torch.equal(stored["tied"], state["tied"])


def test_registry_repr_never_shows_the_key(tmp_path: Path) -> None:
    r = Registry(tmp_path, b"k" * 32)
    assert "k" * 8 not in repr(r) and "encrypts=True" in repr(r)
    with pytest.raises(SpecError, match="32 bytes"):
        Registry(tmp_path, b"short")


def test_temp_folders_of_killed_registrations_are_cleaned_up(registry: Registry, tiny: Tiny) -> None:
    registry.register("tiny", tiny.state, tiny.meta)
    folder = registry.root / "tiny"
    stale, fresh = folder / ".tmp-2-dead0000", folder / ".tmp-3-busy0000"  # killed; still writing
    for tmp in (stale, fresh):
        tmp.mkdir()
        (tmp / "model.safetensors").write_bytes(b"partial")
    old = time.time() - 2 * 3600
    os.utime(stale, (old, old))
    assert registry.register("tiny", tiny.state, tiny.meta).version == 2
    assert not stale.exists() and fresh.is_dir()
    assert sorted(p.name for p in folder.iterdir() if not p.name.startswith(".")) == ["1", "2"]

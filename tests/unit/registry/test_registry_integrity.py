"""A version folder edited by hand is refused on load, and `verify` names exactly the file at fault."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from skylift.errors import IntegrityError
from skylift.registry import Registry
from skylift.registry import _manifest as manifest_mod
from tests.unit.registry.conftest import make_tiny, snapshot


def _weights(folder: Path) -> Path:
    (path,) = folder.glob("model.safetensors*")
    return path


def _flip(path: Path, offset: int = -20) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:-100])


def _edit(folder: Path, edit: str) -> str:
    """Apply one hand edit to a version folder; return the file name the error must name."""
    weights = _weights(folder)
    if edit == "flip weights byte":
        _flip(weights)
    elif edit == "flip model.json byte":
        _flip(folder / "model.json", 10)
        return "model.json"
    elif edit == "truncate weights":
        _truncate(weights)
    elif edit == "delete weights":
        weights.unlink()
    elif edit == "delete model.json":
        (folder / "model.json").unlink()
        return "model.json"
    elif edit.startswith("add "):
        extra = {"add a file": "notes.txt", "add a hidden file": ".x", "add a folder": "sub"}[edit]
        (folder / extra).mkdir() if extra == "sub" else (folder / extra).write_text("hi")
        return extra
    else:
        manifest = folder / "MANIFEST.json"
        if edit == "delete manifest":
            manifest.unlink()
        elif edit == "garble manifest":
            manifest.write_text("{nope")
        else:  # a manifest pointing outside the folder must not make us read there
            manifest.write_text(json.dumps({"files": {"../x": {"sha256": "0" * 64, "size": 1}}}))
        return "MANIFEST.json"
    return weights.name


EDITS = [
    "flip weights byte",
    "flip model.json byte",
    "truncate weights",
    "delete weights",
    "delete model.json",
    "add a file",
    "add a hidden file",
    "add a folder",
    "delete manifest",
    "garble manifest",
    "manifest escapes folder",
]


@pytest.fixture(params=["plain", "encrypted"])
def reg(request: pytest.FixtureRequest, registry: Registry, sealed: Registry) -> Registry:
    return registry if request.param == "plain" else sealed


@pytest.mark.parametrize("edit", EDITS)
def test_edited_version_is_refused_naming_the_file(reg: Registry, edit: str) -> None:
    tiny = make_tiny()
    v = reg.register("tiny", tiny.state, tiny.meta)
    assert reg.verify("tiny:1") == []
    bad = _edit(v.path, edit)
    before = snapshot(reg.root)
    with pytest.raises(IntegrityError) as err:
        reg.load("tiny:1")
    message = str(err.value)
    assert message.startswith("tiny:1: ") and bad in message and "\n" not in message
    with pytest.raises(IntegrityError):
        reg.export("tiny:1", "onnx", v.path.parent / "out.onnx")
    with pytest.raises(IntegrityError) as err:
        reg.info("tiny:1")  # `models show` checks what it shows
    assert str(err.value).startswith("tiny:1: ") and bad in str(err.value) and "\n" not in str(err.value)
    problems = reg.verify("tiny:1")
    assert problems and all(bad in p for p in problems[:1]), problems
    assert snapshot(reg.root) == before  # a failed load or verify repairs or removes nothing


def test_verify_lists_every_problem(registry: Registry) -> None:
    tiny = make_tiny()
    v = registry.register("tiny", tiny.state, tiny.meta)
    _flip(v.path / "model.json", 10)
    (v.path / "model.safetensors").unlink()
    (v.path / "extra.bin").write_bytes(b"x")
    problems = registry.verify("tiny")
    assert [p.split(":")[0] for p in problems] == ["model.json", "model.safetensors", "extra.bin"]
    assert "missing" in problems[1] and "extra" in problems[2]
    with pytest.raises(IntegrityError, match=r"\(and 2 more problems\)"):
        registry.load("tiny")


def test_truncation_is_reported_as_a_size_change(registry: Registry) -> None:
    tiny = make_tiny()
    v = registry.register("tiny", tiny.state, tiny.meta)
    _truncate(v.path / "model.safetensors")
    (problem,) = registry.verify("tiny")
    assert problem.startswith("model.safetensors: ") and "truncated" in problem


def test_weights_swapped_between_versions_are_refused(reg: Registry) -> None:
    a, b = make_tiny(0), make_tiny(1)
    v1 = reg.register("tiny", a.state, a.meta)
    v2 = reg.register("tiny", b.state, b.meta)
    w1, w2 = _weights(v1.path), _weights(v2.path)
    assert w1.stat().st_size == w2.stat().st_size  # same architecture: only the hash can tell
    data1, data2 = w1.read_bytes(), w2.read_bytes()
    w1.write_bytes(data2)
    w2.write_bytes(data1)
    for ref, folder in (("tiny:1", v1.path), ("tiny:2", v2.path)):
        with pytest.raises(IntegrityError, match=w1.name):
            reg.load(ref)
        assert [p.split(":")[0] for p in reg.verify(ref)] == [w1.name], folder


def test_whole_folder_copied_over_another_version_is_refused(reg: Registry) -> None:
    a, b = make_tiny(0), make_tiny(1)
    v1 = reg.register("tiny", a.state, a.meta)
    v2 = reg.register("tiny", b.state, b.meta)
    shutil.rmtree(v2.path)
    shutil.copytree(v1.path, v2.path)  # every hash matches its own manifest
    with pytest.raises(IntegrityError, match=r"model.json: describes tiny:1, not tiny:2"):
        reg.load("tiny:2")
    assert reg.verify("tiny:2") == ["model.json: describes tiny:1, not tiny:2"]


def test_corrupt_aliases_file_is_an_integrity_error(registry: Registry) -> None:
    tiny = make_tiny()
    registry.register("tiny", tiny.state, tiny.meta)
    (registry.root / "tiny" / "aliases.json").write_text("[1, 2]")
    with pytest.raises(IntegrityError, match=r"aliases\.json is malformed"):
        registry.resolve("tiny@production")


def test_manifest_rewritten_around_a_broken_model_json_is_still_refused(registry: Registry) -> None:
    tiny = make_tiny()
    v = registry.register("tiny", tiny.state, tiny.meta)
    for text, part in (
        ("[1]", "not a JSON object"),
        ("{nope", "not readable JSON"),
        ("{}", "describes None:None"),
    ):
        (v.path / "model.json").write_text(text)
        blobs = {p.name: p.read_bytes() for p in v.path.iterdir() if p.name != "MANIFEST.json"}
        (v.path / "MANIFEST.json").write_text(json.dumps(manifest_mod.build(blobs)))
        with pytest.raises(IntegrityError, match=part):
            registry.load("tiny")
        (problem,) = registry.verify("tiny")
        assert problem.startswith("model.json") and part in problem

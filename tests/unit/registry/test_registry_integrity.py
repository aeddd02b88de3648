"""A version folder edited by hand is refused on load, and `verify` names exactly the file at fault."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from skylift.errors import IntegrityError
from skylift.registry import Registry
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


Edit = Callable[[Path], str]  # edits a version folder, returns the file name the error must name

EDITS: dict[str, Edit] = {
    "flip weights byte": lambda f: (_flip(_weights(f)), _weights(f).name)[1],
    "flip model.json byte": lambda f: (_flip(f / "model.json", 10), "model.json")[1],
    "truncate weights": lambda f: (_truncate(_weights(f)), _weights(f).name)[1],
    "delete weights": lambda f: (name := _weights(f).name, _weights(f).unlink(), name)[2],
    "delete model.json": lambda f: ((f / "model.json").unlink(), "model.json")[1],
    "add a file": lambda f: ((f / "notes.txt").write_text("hi"), "notes.txt")[1],
    "add a hidden file": lambda f: ((f / ".x").write_text("hi"), ".x")[1],
    "add a folder": lambda f: ((f / "sub").mkdir(), "sub")[1],
    "delete manifest": lambda f: ((f / "MANIFEST.json").unlink(), "MANIFEST.json")[1],
    "garble manifest": lambda f: ((f / "MANIFEST.json").write_text("{nope"), "MANIFEST.json")[1],
    "manifest escapes folder": lambda f: (
        (f / "MANIFEST.json").write_text(
            json.dumps({"files": {"../x": {"sha256": "0" * 64, "size": 1}}})
        ),
        "MANIFEST.json",
    )[1],
}


@pytest.fixture(params=["plain", "encrypted"])
def reg(request: pytest.FixtureRequest, registry: Registry, sealed: Registry) -> Registry:
    return registry if request.param == "plain" else sealed


@pytest.mark.parametrize("edit", list(EDITS))
def test_edited_version_is_refused_naming_the_file(reg: Registry, edit: str) -> None:
    tiny = make_tiny()
    v = reg.register("tiny", tiny.state, tiny.meta)
    assert reg.verify("tiny:1") == []
    bad = EDITS[edit](v.path)
    before = snapshot(reg.root)
    with pytest.raises(IntegrityError) as err:
        reg.load("tiny:1")
    message = str(err.value)
    assert message.startswith("tiny:1: ") and bad in message and "\n" not in message
    with pytest.raises(IntegrityError):
        reg.export("tiny:1", "onnx", v.path.parent / "out.onnx")
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
    with pytest.raises(IntegrityError, match="aliases.json is malformed"):
        registry.resolve("tiny@production")

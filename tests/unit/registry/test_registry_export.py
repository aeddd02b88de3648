"""Export: ONNX that onnxruntime runs like PyTorch (dynamic batch), and TorchScript; written atomically."""

from __future__ import annotations

import io
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from skylift.errors import SpecError
from skylift.registry import Registry
from tests.unit.registry.conftest import CLASSES, make_tiny, snapshot


@pytest.fixture
def registered(registry: Registry) -> Registry:
    tiny = make_tiny()
    registry.register("tiny", tiny.state, tiny.meta)
    return registry


def test_onnx_matches_torch_with_a_dynamic_batch(registered: Registry, tmp_path: Path) -> None:
    import onnx
    import onnxruntime as ort

    out = registered.export("tiny:1", "onnx", tmp_path / "tiny.onnx")
    assert out == tmp_path / "tiny.onnx"
    proto = onnx.load(str(out))
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    assert proto.graph.input[0].name == "input" and dims[0].dim_param == "batch" and dims[1].dim_value == 8
    assert proto.graph.output[0].name == "logits"
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta["skylift.ref"] == "tiny:1" and json.loads(meta["skylift.classes"]) == CLASSES

    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    model = registered.load("tiny:1").module
    rng = np.random.default_rng(0)
    for batch in (1, 7):
        x = rng.standard_normal((batch, 8), dtype=np.float32) * 3
        (got,) = session.run(["logits"], {"input": x})
        with torch.no_grad():
            want = model(torch.from_numpy(x)).numpy()
        assert got.shape == (batch, 3)
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)


def test_torchscript_matches_torch(registered: Registry, tmp_path: Path) -> None:
    out = registered.export("tiny", "torchscript", tmp_path)  # a folder: named after the version
    assert out == tmp_path / "tiny-1.pt"
    extra = {"skylift.json": ""}
    with warnings.catch_warnings():  # torch 2.13 deprecates torch.jit.load; loading it is the point here
        warnings.filterwarnings(
            "ignore", message=r"`torch\.jit\.load` is deprecated", category=DeprecationWarning
        )
        scripted = torch.jit.load(io.BytesIO(out.read_bytes()), _extra_files=extra)  # type: ignore[no-untyped-call]
    assert json.loads(extra["skylift.json"])["skylift.ref"] == "tiny:1"
    model = registered.load("tiny").module
    for batch in (1, 7):
        x = torch.randn(batch, 8)
        with torch.no_grad():
            assert torch.allclose(scripted(x), model(x), rtol=0, atol=1e-6)


def test_export_refuses_an_unknown_format_without_writing(registered: Registry, tmp_path: Path) -> None:
    before = snapshot(tmp_path)
    with pytest.raises(SpecError, match="export format must be one of onnx, torchscript, got 'tflite'"):
        registered.export("tiny", "tflite", tmp_path / "x")
    assert snapshot(tmp_path) == before


def test_export_of_an_encrypted_model_needs_the_key(sealed: Registry, tmp_path: Path) -> None:
    from skylift.errors import AuthError

    tiny = make_tiny()
    sealed.register("tiny", tiny.state, tiny.meta)
    assert sealed.export("tiny", "onnx", tmp_path / "a.onnx").stat().st_size > 0
    with pytest.raises(AuthError):
        Registry(tmp_path / "home").export("tiny", "onnx", tmp_path / "b.onnx")
    assert not (tmp_path / "b.onnx").exists()

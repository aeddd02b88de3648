"""Export by task: text classifiers take int64 token ids, regressors answer in target units, language
models are refused in one line; ONNX (onnxruntime) and TorchScript agree with PyTorch."""

from __future__ import annotations

import io
import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from skylift.data._tokenizer import TextTokenizer
from skylift.errors import SpecError
from skylift.registry import Registry
from skylift.spec import ModelSpec
from skylift.tasks import TASKS
from skylift.tasks._text import encode, text_meta
from tests.unit.registry.conftest import snapshot

LENGTH = 12  # the text models' max length: their ONNX input is (batch, LENGTH) int64
TEXTS = [
    "the cat sat on the mat",
    "a dog barked loudly at night",
    "fish swim in the deep sea",
    "",  # an empty text is one pad token: the masked path must still export
    "the mat and the sea and the night and the cat and the dog and more words than fit",
]
ENCODER = [
    {"token_embedding": {"dim": 16}},
    {"decoder_block": {"heads": 2, "causal": False, "mlp": "swiglu", "norm": "rms"}},
    {"pool": {"mode": "mean"}},
]


@pytest.fixture(scope="module")
def tokenizer() -> TextTokenizer:
    return TextTokenizer.train_bpe(TEXTS * 3, 300)


def _register(
    registry: Registry, name: str, task: str, layers: list[dict[str, Any]], meta: dict[str, Any]
) -> None:
    spec = ModelSpec(layers=layers)
    shape = tuple(meta["input_shape"])
    meta = {**meta, "task": task, "model": spec.model_dump(mode="json"), "run_id": f"run-{name}"}
    torch.manual_seed(0)
    module = TASKS[task].build(spec, meta, shape, meta["n_outputs"])
    registry.register(name, module.state_dict(), meta)


@pytest.fixture
def models(registry: Registry, tokenizer: TextTokenizer) -> Registry:
    text = text_meta(tokenizer, LENGTH)
    _register(
        registry,
        "sentiment",
        "classification",
        [*ENCODER, {"dense": {"units": 3}}],
        {"classes": ["neg", "neu", "pos"], "n_outputs": 3, "input_shape": [LENGTH], **text},
    )
    _register(
        registry,
        "rating",
        "regression",
        [*ENCODER, {"dense": {"units": 1}}],
        {
            "targets": ["stars"],
            "n_outputs": 1,
            "input_shape": [LENGTH],
            "scale": {"y_mean": [3.0], "y_std": [1.5]},
            **text,
        },
    )
    _register(
        registry,
        "price",
        "regression",
        [{"dense": {"units": 8, "activation": "relu"}}, {"dense": {"units": 2}}],
        {
            "targets": ["price", "rent"],
            "features": ["a", "b", "c", "d"],
            "n_outputs": 2,
            "input_shape": [4],
            "scale": {
                "x_mean": [1.0, -2.0, 0.5, 10.0],
                "x_std": [2.0, 1.0, 0.5, 4.0],
                "y_mean": [300.0, 20.0],
                "y_std": [50.0, 4.0],
            },
        },
    )
    _register(
        registry,
        "lm",
        "language_modeling",
        [{"token_embedding": {"dim": 16}}, {"decoder_block": {"heads": 2}}, {"lm_head": {}}],
        {"n_outputs": tokenizer.vocab_size, "input_shape": [8], "eos_id": 1, "block_size": 8, **text},
    )
    return registry


def _inputs(name: str, tokenizer: TextTokenizer, batch: int) -> np.ndarray:
    if name == "price":
        return (np.random.default_rng(batch).standard_normal((batch, 4)) * 3 + 1).astype(np.float32)
    return encode(tokenizer, (TEXTS * 2)[:batch], LENGTH)


@pytest.mark.parametrize(
    ("name", "given", "answer", "width"),
    [
        ("sentiment", "input_ids", "logits", 3),
        ("rating", "input_ids", "predictions", 1),
        ("price", "input", "predictions", 2),
    ],
)
def test_onnx_of_classifiers_and_regressors_matches_torch_with_a_dynamic_batch(
    models: Registry, tokenizer: TextTokenizer, tmp_path: Path, name: str, given: str, answer: str, width: int
) -> None:
    import onnx
    import onnxruntime as ort

    out = models.export(name, "onnx", tmp_path)
    proto = onnx.load(str(out))
    graph_in, graph_out = proto.graph.input[0], proto.graph.output[0]
    assert (graph_in.name, graph_out.name) == (given, answer)
    dims = graph_in.type.tensor_type.shape.dim
    assert dims[0].dim_param == "batch"
    text = name != "price"
    want_type = onnx.TensorProto.INT64 if text else onnx.TensorProto.FLOAT
    assert graph_in.type.tensor_type.elem_type == want_type
    assert dims[1].dim_value == (LENGTH if text else 4)
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta["skylift.ref"] == f"{name}:1" and meta["skylift.task"] in ("classification", "regression")
    if text:  # the tokenizer travels with the graph, as it does with the registered version
        assert meta["skylift.tokenizer"] == models.load(name).tokenizer and meta["skylift.max_length"] == "12"
    if answer == "predictions":
        assert json.loads(meta["skylift.targets"]) == models.load(name).info["signature"]["targets"]

    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    module = models.load(name).module
    for batch in (1, 5):
        x = _inputs(name, tokenizer, batch)
        (got,) = session.run([answer], {given: x})
        with torch.no_grad():
            want = module(torch.from_numpy(x)).numpy()
        assert got.shape == (batch, width)
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-5 * max(1.0, float(np.abs(want).max())))


def test_a_regressor_exports_in_the_targets_units(models: Registry, tmp_path: Path) -> None:
    import onnxruntime as ort

    session = ort.InferenceSession(
        str(models.export("price", "onnx", tmp_path)), providers=["CPUExecutionProvider"]
    )
    inner = models.load("price").module.model  # the bare network, on standardized inputs and outputs
    x = np.array([[1.0, -2.0, 0.5, 10.0], [3.0, -1.0, 1.0, 14.0]], dtype=np.float32)
    (got,) = session.run(["predictions"], {"input": x})
    with torch.no_grad():
        z = inner(torch.tensor([[0.0, 0.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0]])).numpy()
    np.testing.assert_allclose(got, z * [50.0, 4.0] + [300.0, 20.0], rtol=1e-5)


def test_torchscript_of_a_text_classifier_takes_token_ids(
    models: Registry, tokenizer: TextTokenizer, tmp_path: Path
) -> None:
    out = models.export("sentiment", "torchscript", tmp_path / "s.pt")
    extra = {"skylift.json": ""}
    with warnings.catch_warnings():  # torch 2.13 deprecates torch.jit.load; loading it is the point here
        warnings.filterwarnings(
            "ignore", message=r"`torch\.jit\.load` is deprecated", category=DeprecationWarning
        )
        scripted = torch.jit.load(io.BytesIO(out.read_bytes()), _extra_files=extra)  # type: ignore[no-untyped-call]
    assert json.loads(extra["skylift.json"])["skylift.task"] == "classification"
    module = models.load("sentiment").module
    for batch in (1, 5):
        ids = torch.from_numpy(_inputs("sentiment", tokenizer, batch))
        with torch.no_grad():
            torch.testing.assert_close(scripted(ids), module(ids), rtol=0, atol=1e-5)


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_a_language_model_is_refused_in_one_line_and_nothing_is_written(
    models: Registry, tmp_path: Path, fmt: str
) -> None:
    before = snapshot(tmp_path)
    with pytest.raises(SpecError) as info:
        models.export("lm", fmt, tmp_path)
    assert str(info.value).startswith("export of language models is not supported: serve them with")
    assert "\n" not in str(info.value)
    assert snapshot(tmp_path) == before


def test_exporting_leaves_the_attention_fast_path_as_it_was(models: Registry, tmp_path: Path) -> None:
    assert torch.backends.mha.get_fastpath_enabled()
    models.export("sentiment", "onnx", tmp_path)
    assert torch.backends.mha.get_fastpath_enabled()


def test_a_transformer_encoder_classifier_exports_through_the_plain_attention_path(
    registry: Registry, tokenizer: TextTokenizer, tmp_path: Path
) -> None:
    import onnxruntime as ort

    layers = [{"token_embedding": {"dim": 16}}, {"transformer_encoder": {"heads": 2, "ff_dim": 32}}]
    meta = {"classes": ["a", "b"], "n_outputs": 2, "input_shape": [LENGTH], **text_meta(tokenizer, LENGTH)}
    _register(registry, "encoder", "classification", [*layers, {"dense": {"units": 2}}], meta)
    session = ort.InferenceSession(
        str(registry.export("encoder", "onnx", tmp_path)), providers=["CPUExecutionProvider"]
    )
    module = registry.load("encoder").module
    for batch in (1, 5):
        ids = _inputs("encoder", tokenizer, batch)
        (got,) = session.run(["logits"], {"input_ids": ids})
        with torch.no_grad():
            np.testing.assert_allclose(got, module(torch.from_numpy(ids)).numpy(), rtol=0, atol=1e-5)

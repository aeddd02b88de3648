"""The runtime contract, run against every kind in RUNTIMES (tiny real models, random weights), and
the text codec: BYTES tensors in both encodings, length buckets."""

from __future__ import annotations

import asyncio
import json
import struct
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from skylift.data._tokenizer import TextTokenizer
from skylift.models import build_model
from skylift.registry import LoadedModel
from skylift.registry._bert import BertConfig, BertEmbedder
from skylift.serve import codec
from skylift.serve.codec import BadRequest
from skylift.serve.config import ServeConfig
from skylift.serve.metrics import Metrics
from skylift.serve.runtimes import RUNTIMES, Context, Runtime, Unsupported, kind_of
from skylift.serve.runtimes._text import buckets
from skylift.spec import ModelSpec

TEXTS = ["rain falls on the hills", "a bowl of hot soup", "cheese on toast", "snow and wind tonight"] * 5


@pytest.fixture(scope="module")
def tokenizer() -> TextTokenizer:
    return TextTokenizer.train_bpe(TEXTS, 300)


def _text_layers(outputs: int) -> list[dict[str, Any]]:
    return [
        {"token_embedding": {"dim": 16}},
        {"decoder_block": {"heads": 2, "causal": False, "positions": "learned"}},
        {"pool": {"mode": "mean"}},
        {"dense": {"units": outputs}},
    ]


def _loaded(kind: str, tok: TextTokenizer) -> LoadedModel:
    """A LoadedModel as the registry gives one, for each kind (random weights)."""
    torch.manual_seed(0)
    text = {"input": "text", "max_length": 40, "vocab_size": tok.vocab_size, "pad_id": tok.pad_id}
    v = tok.vocab_size
    if kind == "classifier":
        module = build_model(ModelSpec(layers=[{"dense": {"units": 3}}]), (4,), 3)
        data: dict[str, Any] = {"task": "classification", "input_shape": [4], "classes": ["a", "b", "c"]}
        info = {
            "task": "classification",
            "data": data,
            "signature": {"kind": kind, "classes": ["a", "b", "c"]},
        }
        return LoadedModel(module.eval(), info, "m", 1)
    if kind == "text-classifier":
        module = build_model(ModelSpec(layers=_text_layers(2)), (40,), 2, vocab_size=v)
        data = {"task": "classification", "input_shape": [40], "classes": ["x", "y"], **text}
        info = {
            "task": "classification",
            "data": data,
            "signature": {"kind": "classifier", "classes": ["x", "y"]},
        }
        return LoadedModel(module.eval(), info, "m", 1, tokenizer=tok.to_json())
    if kind == "regressor":
        module = build_model(ModelSpec(layers=_text_layers(2)), (40,), 2, vocab_size=v)
        data = {"task": "regression", "input_shape": [40], "targets": ["p", "q"], **text}
        info = {"task": "regression", "data": data, "signature": {"kind": kind}}
        return LoadedModel(module.eval(), info, "m", 1, tokenizer=tok.to_json())
    if kind == "embedder":
        config = BertConfig(v, 16, 2, 2, 32, 64, 2, 1e-12, "gelu")
        data = {"task": "embedding", "input_shape": [40], "dim": 16, **text}
        info = {"task": "embedding", "data": data, "signature": {"kind": kind}}
        return LoadedModel(BertEmbedder(config, "mean", True).eval(), info, "m", 1, tokenizer=tok.to_json())
    layers = [
        {"token_embedding": {"dim": 16}},
        {"decoder_block": {"heads": 2, "positions": "rope"}},
        {"lm_head": {"tie_embedding": True}},
    ]
    module = build_model(ModelSpec(layers=layers), (32,), v, vocab_size=v)
    data = {"task": "language_modeling", "input_shape": [32], "block_size": 32, **text}
    info = {"task": "language_modeling", "data": data, "signature": {"kind": "generator"}}
    return LoadedModel(module.eval(), info, "m", 1, tokenizer=tok.to_json())


KINDS = ["classifier", "text-classifier", "regressor", "embedder", "generator"]


def _runtime(kind: str, tok: TextTokenizer, tmp_path: Path) -> Runtime:
    config = ServeConfig(
        models=("m",), home=tmp_path, state_dir=tmp_path, max_batch_rows=8, max_batch_tokens=64
    )
    loaded = _loaded(kind, tok)
    return RUNTIMES[kind_of(loaded.info)](Context("m", 1, loaded, config, Metrics(0, None)))


def _body(runtime: Runtime, rows: int) -> bytes:
    spec = runtime.inputs.metadata()[0]
    if spec["datatype"] == "BYTES":
        data: list[Any] = [TEXTS[i] * (i + 1) for i in range(rows)]  # lengths spread over buckets
        shape = [rows]
    else:
        shape = [rows, *spec["shape"][1:]]
        data = np.arange(np.prod(shape), dtype=np.float32).tolist()
    return json.dumps(
        {"inputs": [{"name": spec["name"], "shape": shape, "datatype": spec["datatype"], "data": data}]}
    ).encode()


@pytest.mark.parametrize("kind", KINDS)
def test_every_runtime_keeps_the_contract(kind: str, tokenizer: TextTokenizer, tmp_path: Path) -> None:
    runtime = _runtime(kind, tokenizer, tmp_path)
    assert runtime.kind in RUNTIMES and [o["name"] for o in runtime.output_metadata()] == list(
        runtime.outputs
    )

    async def go() -> None:
        runtime.start()
        try:
            for bad in (b"{", b"[]", b'{"inputs": [{"name": "nope"}]}'):
                with pytest.raises(BadRequest) as caught:
                    runtime.decode_v2(bad, None)
                assert 400 <= caught.value.status < 500
            if kind == "generator":  # no V2 / TF-Serving generation: a 400 naming the routes
                with pytest.raises(Unsupported, match="/v1/completions"):
                    runtime.decode_v2(_body(runtime, 2), None)
                return
            req = runtime.decode_v2(_body(runtime, 3), None)
            out = await runtime.infer(req.x, time.monotonic() + 30)
            assert out.dtype == np.float32 and out.shape == (3, runtime.width)
            body, head = runtime.encode_v2(req, out)
            assert head is None and {o["name"] for o in json.loads(body)["outputs"]} == set(runtime.outputs)
            x, columnar = runtime.decode_v1(json.dumps({"instances": _instances(req.x)}).encode())
            again = await runtime.infer(x, time.monotonic() + 30)
            np.testing.assert_allclose(again, out, atol=1e-6)  # the same rows, batched differently
            assert not columnar and "predictions" in json.loads(runtime.encode_v1(again, columnar))
            pending = asyncio.ensure_future(runtime.infer(req.x, time.monotonic() + 30))
            await asyncio.sleep(0)
        finally:
            await runtime.stop()  # answers what is queued first
        if kind != "generator":
            assert (await pending).shape == (3, runtime.width)
            assert runtime.inputs.queued_rows == 0

    asyncio.run(go())


def _instances(x: Any) -> list[Any]:
    return list(x) if isinstance(x, list) else x.tolist()


def test_text_rows_split_by_bucket_answer_as_each_row_alone(tokenizer: TextTokenizer, tmp_path: Path) -> None:
    runtime = _runtime("text-classifier", tokenizer, tmp_path)
    texts = ["snow", " ".join(TEXTS[:6]), "cheese on toast"]

    async def go() -> tuple[np.ndarray, list[np.ndarray]]:
        runtime.start()
        try:
            together = await runtime.infer(texts, time.monotonic() + 30)
            alone = [await runtime.infer([t], time.monotonic() + 30) for t in texts]
        finally:
            await runtime.stop()
        return together, alone

    together, alone = asyncio.run(go())
    np.testing.assert_allclose(together, np.concatenate(alone), atol=1e-5)
    ids = tokenizer.encode_batch(texts, 40)[1]
    assert len({b for b in np.searchsorted(buckets(40), ids)}) > 1  # the request did span buckets


def test_buckets() -> None:
    assert buckets(256) == (16, 32, 64, 128, 256)
    assert buckets(40) == (16, 32, 40)
    assert buckets(8) == (8,)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(), min_size=1, max_size=20))
def test_bytes_tensors_round_trip_in_both_encodings(texts: list[str]) -> None:
    blob = codec.bytes_tensor(texts)
    head = json.dumps(
        {
            "inputs": [
                {
                    "name": "text",
                    "shape": [len(texts)],
                    "datatype": "BYTES",
                    "parameters": {"binary_data_size": len(blob)},
                }
            ]
        }
    ).encode()
    assert codec.decode_v2_text(head + blob, len(head), ("x",)).x == texts
    as_json = json.dumps(
        {"inputs": [{"name": "text", "shape": [len(texts), 1], "datatype": "BYTES", "data": texts}]}
    )
    assert codec.decode_v2_text(as_json.encode(), None, ("x",)).x == texts


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64), st.integers(min_value=0, max_value=5))
def test_any_binary_bytes_tensor_decodes_or_is_a_400(blob: bytes, rows: int) -> None:
    head = json.dumps(
        {
            "inputs": [
                {
                    "name": "text",
                    "shape": [rows],
                    "datatype": "BYTES",
                    "parameters": {"binary_data_size": len(blob)},
                }
            ]
        }
    ).encode()
    try:
        req = codec.decode_v2_text(head + blob, len(head), ("x",))
    except BadRequest as exc:
        assert exc.status == 400 and "\n" not in str(exc)
    else:
        assert len(req.x) == rows and all(isinstance(t, str) for t in req.x)
        assert codec.bytes_tensor(req.x) == blob


def test_a_length_prefix_past_the_data_is_refused_without_reading_it() -> None:
    blob = struct.pack("<I", 2**32 - 1) + b"abc"
    head = json.dumps(
        {
            "inputs": [
                {
                    "name": "text",
                    "shape": [1],
                    "datatype": "BYTES",
                    "parameters": {"binary_data_size": len(blob)},
                }
            ]
        }
    ).encode()
    with pytest.raises(BadRequest, match="runs past the binary data"):
        codec.decode_v2_text(head + blob, len(head), ("x",))

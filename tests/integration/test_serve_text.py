"""Serving text classifiers, text regressors and numeric regressors trained by skylift: strings as
KServe V2 BYTES tensors (tritonclient, JSON and binary) and TF-Serving instances, tokenized in the
server, batched by length bucket; answers equal the registered model run in-process."""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
import tritonclient.http as triton

from skylift.registry import Registry
from skylift.spec import parse_spec
from skylift.tasks._text import encode
from skylift.train import fit
from tests.integration.serve_helpers import Server, running
from tests.integration.task_texts import TEXTS, text_classifier

pytestmark = pytest.mark.slow

TEXTS_IN = ["rain falls on the hills", "a bowl of hot soup", "clear skies"]
LONG = " ".join(["storms roll in from the sea and rain falls"] * 8)  # past the 16-token bucket


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    home = tmp_path_factory.mktemp("home")
    csv = home / "topics.csv"
    rows = [(t, topic) for topic, texts in TEXTS.items() for t in texts]
    csv.write_text("text,topic\n" + "".join(f"{t},{topic}\n" for t, topic in rows * 4))
    cls = text_classifier(str(csv), epochs=3, batch_size=8, threads=1)
    cls["data"]["block_size"] = 40  # type: ignore[index]  # buckets 16, 32, 40
    cls["distributed"] = {"workers": 1}
    fit(parse_spec(cls), home=home, run_id="topics")
    reg_csv = home / "lengths.csv"
    reg_csv.write_text("text,size\n" + "".join(f"{t},{len(t)}\n" for t, _ in rows * 4))
    reg = text_classifier(str(reg_csv), epochs=2, batch_size=8, threads=1)
    reg.update(name="sizes", task="regression")
    reg["data"].update(target_columns=["size"], block_size=24)  # type: ignore[attr-defined]
    del reg["data"]["label_column"]  # type: ignore[attr-defined]
    reg["model"]["layers"][-1] = {"dense": {"units": 1}}  # type: ignore[index]
    reg["distributed"] = {"workers": 1}
    fit(parse_spec(reg), home=home, run_id="sizes")
    numeric = {
        "name": "diabetes",
        "task": "regression",
        "data": {"train": "builtin:diabetes"},
        "model": {"layers": [{"dense": {"units": 8, "activation": "relu"}}, {"dense": {"units": 1}}]},
        "train": {"epochs": 2, "threads": 1},
        "distributed": {"workers": 1},
    }
    fit(parse_spec(numeric), home=home, run_id="diabetes")
    yield home


@pytest.fixture(scope="module")
def server(home: Path) -> Iterator[Server]:
    with running(
        home, "topics", "sizes", "diabetes", "--no-auth", "--replicas", "1", "--max-queue-rows", "64"
    ) as s:
        yield s


def _local(home: Path, ref: str, texts: list[str]) -> np.ndarray:
    """What the registered model answers in-process on `texts` (padded to its max length)."""
    loaded = Registry(home).load(ref)
    from skylift.data._tokenizer import TextTokenizer

    tok = TextTokenizer.from_json(loaded.tokenizer or "")
    ids = encode(tok, texts, int(loaded.data["max_length"]))
    with torch.no_grad():
        out = loaded.module(torch.from_numpy(ids)).float()
    return (torch.softmax(out, -1) if loaded.task == "classification" else out).numpy()


def _post(
    server: Server, path: str, body: object | bytes, headers: dict[str, str] | None = None
) -> tuple[int, dict]:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    status, _, answer = server.request("POST", path, raw, headers or {"Content-Type": "application/json"})
    return status, json.loads(answer)


@pytest.mark.parametrize("binary", [True, False])
def test_tritonclient_bytes_tensors_classify_texts_as_the_model_does(
    home: Path, server: Server, binary: bool
) -> None:
    client = triton.InferenceServerClient(f"{server.host}:{server.port}")
    meta = client.get_model_metadata("topics")
    assert meta["inputs"] == [{"name": "text", "datatype": "BYTES", "shape": [-1]}]
    assert meta["parameters"]["kind"] == "classifier"
    texts = [*TEXTS_IN, LONG]  # two buckets in one request
    inp = triton.InferInput("text", [len(texts)], "BYTES")
    inp.set_data_from_numpy(np.array([t.encode() for t in texts], dtype=object), binary_data=binary)
    outs = [triton.InferRequestedOutput(n, binary_data=binary) for n in ("probabilities", "label")]
    result = client.infer("topics", [inp], outputs=outs)
    probs = result.as_numpy("probabilities")
    np.testing.assert_allclose(probs, _local(home, "topics", texts), atol=1e-5)
    labels = [b.decode() if isinstance(b, bytes) else b for b in result.as_numpy("label")]
    assert labels == [sorted(TEXTS)[i] for i in probs.argmax(1)]
    assert labels[:2] == ["weather", "food"]


def test_length_buckets_answer_each_text_as_if_it_came_alone(server: Server) -> None:
    texts = [LONG, "rain", "a bowl of hot soup", LONG[:60]]
    status, together = _post(server, "/v1/models/topics:predict", {"instances": texts})
    assert status == 200
    for text, row in zip(texts, together["predictions"], strict=True):
        status, alone = _post(server, "/v1/models/topics:predict", {"instances": [text]})
        assert status == 200 and alone["predictions"][0]["label"] == row["label"]
        np.testing.assert_allclose(alone["predictions"][0]["probabilities"], row["probabilities"], atol=1e-5)


def test_tf_serving_strings_rows_and_columns(server: Server) -> None:
    status, rows = _post(
        server, "/v1/models/topics:predict", {"instances": [{"text": "cheese on toast"}, "snow"]}
    )
    assert status == 200 and [r["label"] for r in rows["predictions"]] == ["food", "weather"]
    status, cols = _post(
        server, "/v1/models/topics/versions/1:predict", {"inputs": {"text": ["cheese on toast"]}}
    )
    assert status == 200 and cols["outputs"]["label"] == ["food"]


def test_regressors_text_and_numeric_answer_in_their_units(home: Path, server: Server) -> None:
    status, answer = _post(server, "/v1/models/sizes:predict", {"instances": TEXTS_IN})
    assert status == 200
    np.testing.assert_allclose(answer["predictions"], _local(home, "sizes", TEXTS_IN), atol=1e-4)
    status, meta = 200, json.loads(server.request("GET", "/v2/models/sizes")[2])
    assert meta["outputs"] == [{"name": "predictions", "datatype": "FP32", "shape": [-1, 1]}]
    assert meta["parameters"]["targets"] == ["size"]
    x = np.random.default_rng(0).normal(size=(3, 10)).astype(np.float32)
    status, v2 = server.infer("diabetes", x)
    assert status == 200 and v2["outputs"][0]["name"] == "predictions"
    with torch.no_grad():
        local = Registry(home).load("diabetes").module(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(np.reshape(v2["outputs"][0]["data"], (3, 1)), local, rtol=1e-5, atol=1e-3)


def _bytes_body(elements: bytes, rows: int) -> tuple[bytes, dict[str, str]]:
    head = json.dumps(
        {
            "inputs": [
                {
                    "name": "text",
                    "shape": [rows],
                    "datatype": "BYTES",
                    "parameters": {"binary_data_size": len(elements)},
                }
            ]
        }
    ).encode()
    return head + elements, {"Inference-Header-Content-Length": str(len(head))}


@pytest.mark.parametrize(
    ("elements", "rows", "message"),
    [
        (struct.pack("<I", 2) + b"\xff\xfe", 1, "element 0 is not UTF-8"),
        (struct.pack("<I", 50) + b"short", 1, "runs past the binary data"),
        (b"\x01\x00", 1, "ends inside an element's 4-byte length"),
        (struct.pack("<I", 0xFFFFFFFF), 1, "runs past the binary data"),
        (struct.pack("<I", 1) + b"a", 2, "1 texts for shape [2]"),
    ],
)
def test_bad_binary_text_is_a_400_naming_it(server: Server, elements: bytes, rows: int, message: str) -> None:
    body, headers = _bytes_body(elements, rows)
    status, answer = _post(server, "/v2/models/topics/infer", body, headers)
    assert status == 400 and message in answer["error"] and "\n" not in answer["error"]


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        (
            {"inputs": [{"name": "text", "shape": [1], "datatype": "FP32", "data": [1.0]}]},
            400,
            "must be BYTES",
        ),
        (
            {"inputs": [{"name": "input", "shape": [1], "datatype": "BYTES", "data": ["x"]}]},
            400,
            "input is 'text'",
        ),
        (
            {"inputs": [{"name": "text", "shape": [1, 2], "datatype": "BYTES", "data": ["a", "b"]}]},
            400,
            "one text per row",
        ),
        ({"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": [7]}]}, 400, "not a string"),
        (
            {"inputs": [{"name": "text", "shape": [0], "datatype": "BYTES", "data": []}]},
            400,
            "at least one text",
        ),
        (
            {"inputs": [{"name": "text", "shape": [65], "datatype": "BYTES", "data": ["a"] * 65}]},
            413,
            "65 rows",
        ),
    ],
)
def test_bad_json_text_is_a_4xx_and_the_replica_carries_on(
    server: Server, body: dict, status: int, message: str
) -> None:
    got, answer = _post(server, "/v2/models/topics/infer", body)
    assert got == status and message in answer["error"]
    assert _post(server, "/v1/models/topics:predict", {"instances": ["snow"]})[0] == 200


def test_tf_serving_refuses_what_is_not_text(server: Server) -> None:
    for body in (
        {"instances": [[1, 2]]},
        {"instances": [{"input": "x"}]},
        {"instances": 3},
        {"inputs": {"t": ["x"]}},
    ):
        status, answer = _post(server, "/v1/models/topics:predict", body)
        assert status == 400 and answer["error"]
    status, _, raw = server.request(
        "POST",
        "/v1/models/topics:predict",
        b'{"instances": ["\\ud800"]}',
        {"Content-Type": "application/json"},
    )
    assert status == 400 and b"not valid JSON" in raw  # a lone surrogate is no text


def test_openai_embeddings_of_a_classifier_is_a_400_in_openai_shape(server: Server) -> None:
    status, answer = _post(server, "/v1/embeddings", {"model": "topics", "input": "x"})
    assert status == 400 and answer["error"]["type"] == "invalid_request_error"
    assert "is a classifier" in answer["error"]["message"]

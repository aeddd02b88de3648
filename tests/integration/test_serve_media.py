"""`skylift serve` of image and audio models for real, auth on: files as KServe V2 BYTES tensors
(tritonclient, binary and JSON base64), TF-Serving b64 and a plain POST with curl, each answering
what the registered model answers in-process on the files decoded with its recorded
preprocessing; the examples of docs/serving-media.md run as written; hostile files are 4xx and the
replica carries on."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from skylift.registry import Registry
from skylift.security.apikeys import KeyStore, keys_file
from tests.conftest import finish, skylift_process
from tests.integration.media_files import (
    AUDIO_PREP,
    CLASSES,
    IMAGE_PREP,
    bomb_png,
    expected,
    image,
    register_audio_model,
    register_image_model,
    register_image_regressor,
    unsupported_wav,
    wav,
)
from tests.integration.serve_helpers import Server, running

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "serving-media.md"


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("media-home")
    register_image_model(home, "pets")
    register_audio_model(home, "calls")
    register_image_regressor(home, "sizes")
    return home


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The files the docs' examples send: cat.png, dog.jpg, call.wav."""
    folder = tmp_path_factory.mktemp("files")
    (folder / "cat.png").write_bytes(image(1))
    (folder / "dog.jpg").write_bytes(image(2, "JPEG", size=(64, 48)))
    (folder / "call.wav").write_bytes(wav(1, rate=22050))
    return folder


@pytest.fixture(scope="module")
def key(home: Path) -> str:
    secret, _ = KeyStore(keys_file(home)).create("app", ("predict",), rate_limit=100_000)  # bench, below
    return secret


@pytest.fixture(scope="module")
def server(home: Path, key: str) -> Iterator[Server]:
    with running(home, "pets", "calls", "sizes", "--replicas", "1", key=key) as s:
        yield s


def _local(home: Path, name: str, blobs: list[bytes]) -> np.ndarray:
    loaded = Registry(home).load(name)
    prep = IMAGE_PREP if name == "pets" else AUDIO_PREP
    assert loaded.preprocessing == prep  # what the server decodes with travelled in the registry
    return expected(loaded.module, np.stack([prep.decode(b) for b in blobs]))


@contextlib.contextmanager
def _client(server: Server) -> Iterator[triton.InferenceServerClient]:
    client = triton.InferenceServerClient(f"{server.host}:{server.port}")
    try:
        yield client
    finally:
        client.close()


def _post(server: Server, path: str, body: bytes, content_type: str) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {server.key}", "Content-Type": content_type}
    status, _, raw = server.request("POST", path, body, headers)
    return status, json.loads(raw)


def _curl(server: Server, path: str, file: Path, content_type: str) -> tuple[int, Any]:
    """The real curl binary, POSTing the file as the body."""
    url = f"http://{server.host}:{server.port}{path}"
    args = ["-s", "-w", "\n%{http_code}", "--data-binary", f"@{file}", "-H", f"Content-Type: {content_type}"]
    args += ["-H", f"Authorization: Bearer {server.key}", url]
    done = subprocess.run(["curl", *args], capture_output=True, text=True, timeout=60, check=True)
    body, _, code = done.stdout.rpartition("\n")
    return int(code), json.loads(body)


@pytest.mark.parametrize("binary", [True, False])
def test_tritonclient_sends_images_as_bytes_tensors(home: Path, server: Server, binary: bool) -> None:
    headers = {"Authorization": f"Bearer {server.key}"}
    with _client(server) as client:
        meta = client.get_model_metadata("pets", headers=headers)
    assert meta["inputs"] == [
        {"name": "image", "datatype": "BYTES", "shape": [-1]},
        {"name": "input", "datatype": "FP32", "shape": [-1, 1, 28, 28]},
    ]
    blobs = [image(3), image(4, "JPEG"), image(5, "WEBP"), image(6, mode="L", size=(28, 28))]
    sent = blobs if binary else [base64.b64encode(b) for b in blobs]  # JSON: base64 (see the docs)
    inp = triton.InferInput("image", [len(blobs)], "BYTES")
    inp.set_data_from_numpy(np.array(sent, dtype=object), binary_data=binary)
    outs = [triton.InferRequestedOutput(n, binary_data=binary) for n in ("probabilities", "label")]
    with _client(server) as client:
        result = client.infer("pets", [inp], outputs=outs, headers=headers)
    want = _local(home, "pets", blobs)
    np.testing.assert_allclose(result.as_numpy("probabilities"), want, atol=1e-5)
    labels = [b.decode() if isinstance(b, bytes) else b for b in result.as_numpy("label")]
    assert labels == [CLASSES[i] for i in want.argmax(1)]


def test_tf_serving_b64_and_decoded_inputs_agree(home: Path, server: Server) -> None:
    blobs = [image(7), image(8)]
    want = _local(home, "pets", blobs)
    b64 = [base64.b64encode(b).decode() for b in blobs]
    status, rows = _post(
        server,
        "/v1/models/pets:predict",
        json.dumps({"instances": [{"b64": s} for s in b64]}).encode(),
        "application/json",
    )
    assert status == 200
    np.testing.assert_allclose([r["probabilities"] for r in rows["predictions"]], want, atol=1e-5)
    columns = json.dumps({"inputs": {"image": [{"b64": b64[1]}]}}).encode()
    status, cols = _post(server, "/v1/models/pets/versions/1:predict", columns, "application/json")
    assert status == 200 and cols["outputs"]["label"] == [CLASSES[int(want[1].argmax())]]
    decoded = np.stack([IMAGE_PREP.decode(b) for b in blobs])
    tensor = {
        "name": "input",
        "shape": list(decoded.shape),
        "datatype": "FP32",
        "data": decoded.ravel().tolist(),
    }
    body = json.dumps({"inputs": [tensor]}).encode()
    status, answer = _post(server, "/v2/models/pets/infer", body, JSON)  # the decoded tensor, as before
    assert status == 200
    np.testing.assert_allclose(np.reshape(answer["outputs"][0]["data"], want.shape), want, atol=1e-5)


def test_curl_posts_a_file_to_either_route(home: Path, server: Server, files: Path) -> None:
    want = _local(home, "pets", [(files / "cat.png").read_bytes()])
    status, v2 = _curl(server, "/v2/models/pets/infer", files / "cat.png", "image/png")
    assert status == 200 and v2["model_name"] == "pets"
    np.testing.assert_allclose(v2["outputs"][0]["data"], want[0], atol=1e-5)
    assert v2["outputs"][1]["data"] == [CLASSES[int(want.argmax())]]
    status, v1 = _curl(server, "/v1/models/pets:predict", files / "dog.jpg", "image/jpeg")
    assert status == 200
    np.testing.assert_allclose(
        v1["predictions"][0]["probabilities"],
        _local(home, "pets", [(files / "dog.jpg").read_bytes()])[0],
        atol=1e-5,
    )


def test_a_regressor_of_images_answers_in_its_units(home: Path, server: Server, files: Path) -> None:
    status, answer = _curl(server, "/v1/models/sizes:predict", files / "dog.jpg", "image/jpeg")
    assert status == 200
    x = IMAGE_PREP.decode((files / "dog.jpg").read_bytes())[None]
    with torch.inference_mode():
        want = Registry(home).load("sizes").module(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(answer["predictions"], want, rtol=1e-5)


def test_audio_through_curl_and_tritonclient(home: Path, server: Server, files: Path) -> None:
    clips = [wav(2), wav(3, rate=44100, fmt="FLAC", subtype="PCM_24")]
    want = _local(home, "calls", clips)
    inp = triton.InferInput("audio", [2], "BYTES")
    inp.set_data_from_numpy(np.array(clips, dtype=object), binary_data=True)
    with _client(server) as client:
        result = client.infer("calls", [inp], headers={"Authorization": f"Bearer {server.key}"})
    np.testing.assert_allclose(result.as_numpy("probabilities"), want, atol=1e-5)
    status, answer = _curl(server, "/v2/models/calls/infer", files / "call.wav", "audio/wav")
    assert status == 200
    np.testing.assert_allclose(
        answer["outputs"][0]["data"], _local(home, "calls", [(files / "call.wav").read_bytes()])[0], atol=1e-5
    )


def _b64_body(name: str, blob: bytes) -> bytes:
    data = [base64.b64encode(blob).decode()]
    return json.dumps({"inputs": [{"name": name, "shape": [1], "datatype": "BYTES", "data": data}]}).encode()


V2, V1 = "/v2/models/pets/infer", "/v1/models/pets:predict"
JSON = "application/json"
BAD = {
    "truncated": (V2, image(9)[:200], "image/png", 400, "body (image/png): cannot decode the image"),
    "bomb": (V2, bomb_png(), "image/png", 400, "more than 40,000,000 pixels (a decompression bomb"),
    "not-an-image": (V1, b"not an image at all", "image/jpeg", 400, "not a PNG, JPEG or WebP image"),
    "wav-as-image": (V2, _b64_body("image", wav(0)), JSON, 400, "element 0: not a PNG, JPEG or WebP image"),
    "unsupported-wav": (
        "/v2/models/calls/infer",
        _b64_body("audio", unsupported_wav()),
        JSON,
        400,
        "input 'audio' element 0: not a readable WAV or FLAC file",
    ),
    "image-to-audio": (
        "/v2/models/calls/infer",
        image(1),
        "image/png",
        415,
        "'image/png' is not supported here (this model takes JSON, or one file as audio/wav",
    ),
    "html": (V1, image(1), "text/html", 415, "'text/html' is not supported here"),
    "no-type": (
        V2,
        image(1),
        "application/x-www-form-urlencoded",
        400,
        "the body looks like a PNG image: send it with Content-Type: image/png",
    ),
}


@pytest.mark.parametrize(("path", "body", "content_type", "status", "says"), BAD.values(), ids=BAD.keys())
def test_hostile_and_mistyped_files_are_4xx_and_the_replica_carries_on(
    server: Server, files: Path, path: str, body: bytes, content_type: str, status: int, says: str
) -> None:
    before = server.replicas()
    got, answer = _post(server, path, body, content_type)
    assert got == status and says in answer["error"] and "\n" not in answer["error"], answer
    assert _curl(server, "/v2/models/pets/infer", files / "cat.png", "image/png")[0] == 200
    assert server.replicas() == before  # the same replica answered: nothing died


def _doc_blocks(lang: str) -> dict[str, str]:
    """The docs' code blocks marked `<!-- run: NAME -->`, by name."""
    found = re.findall(r"<!-- run: (\S+) -->\n```(\w+)\n(.*?)```", DOC.read_text(), re.S)
    return {name: code for name, kind, code in found if kind == lang}


def test_the_docs_examples_run_as_written(home: Path, server: Server, files: Path) -> None:
    here = f"{server.host}:{server.port}"
    bash = _doc_blocks("bash")
    assert set(bash) == {"curl", "v2-json", "tf-serving"}
    for name, code in bash.items():
        script = ["bash", "-euo", "pipefail", "-c", code.replace("127.0.0.1:8000", here)]
        env = {**os.environ, "KEY": server.key or ""}
        done = subprocess.run(script, cwd=files, env=env, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, (name, done.stderr)
        answers = [
            json.loads(line) for line in done.stdout.replace("}{", "}\n{").splitlines() if line.strip()
        ]
        assert answers and all("outputs" in a or "predictions" in a for a in answers), (name, done.stdout)
    python = _doc_blocks("python")
    assert set(python) == {"tritonclient"}
    cwd = Path.cwd()
    try:
        os.chdir(files)
        scope: dict[str, Any] = {"KEY": server.key}
        exec(python["tritonclient"].replace("127.0.0.1:8000", here), scope)
    finally:
        os.chdir(cwd)
    assert scope["result"].as_numpy("probabilities").shape == (2, len(CLASSES))


def test_without_a_key_files_are_refused_like_anything_else(server: Server, files: Path) -> None:
    status, _, _ = server.request("POST", "/v2/models/pets/infer", image(1), {"Content-Type": "image/png"})
    assert status == 401
    with _client(server) as client, pytest.raises(InferenceServerException):
        client.get_model_metadata("pets")


def test_bench_serve_sends_a_png_file(server: Server, files: Path, tmp_path: Path) -> None:
    """`skylift bench serve --body-file cat.png`: every request a plain POST of the file."""
    url = f"http://{server.host}:{server.port}"
    report = tmp_path / "report.json"
    args = ["--model", "pets", "--body-file", str(files / "cat.png"), "-c", "2", "-p", "1", "-d", "1"]
    args += ["--warmup", "0", "--json", str(report), "--api-key", server.key or ""]
    code, out, err = finish(skylift_process(tmp_path, "bench", "serve", url, *args), timeout=120)
    assert code == 0, out + err
    figures = json.loads(report.read_text())
    assert figures["errors"] == {} and figures["ok"] == figures["requests"] > 0, figures
    assert "cat.png as image/png" in err

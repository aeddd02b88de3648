"""`skylift serve` for real: protocols, batching, limits, replicas, faults, reloads, bad input."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import struct
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from skylift.registry import Registry
from skylift.spec import load_spec
from skylift.train import fit
from tests.conftest import EXAMPLE, JSON_VALUES, free_port
from tests.integration.serve_helpers import Server, running

M = "mnist-mlp"


@pytest.fixture(scope="module")
def served_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A home with mnist-mlp:1 and :2 registered (2 and 1 epochs)."""
    home = tmp_path_factory.mktemp("serve-home")
    fit(load_spec(EXAMPLE, ["train.epochs=2"]), home=home)
    fit(load_spec(EXAMPLE, ["train.epochs=1", "train.seed=1"]), home=home)
    return home


@pytest.fixture(scope="module")
def server(served_home: Path) -> Iterator[Server]:
    with running(served_home, f"{M}:1", "--no-auth", "--replicas", "2") as s:
        yield s


def _expected(home: Path, x: np.ndarray, version: int = 1) -> np.ndarray:
    module = Registry(home).load(f"{M}:{version}").module
    with torch.inference_mode():
        return torch.softmax(module(torch.from_numpy(x)), -1).numpy()


def _x(rows: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((rows, 784), dtype=np.float32)


def test_health_metadata_and_openapi(server: Server) -> None:
    assert server.request("GET", "/v2/health/live")[0] == 200
    status, _, body = server.request("GET", "/v2/health/ready")
    assert status == 200 and json.loads(body) == {"ready": True}
    meta = json.loads(server.request("GET", "/v2")[2])
    assert "binary_tensor_data" in meta["extensions"]
    model = json.loads(server.request("GET", f"/v2/models/{M}")[2])
    assert model["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 784]}]
    assert model["parameters"]["classes"] == [str(i) for i in range(10)]
    assert server.request("GET", f"/v2/models/{M}/versions/1/ready")[0] == 200
    assert (
        json.loads(server.request("GET", f"/v1/models/{M}")[2])["model_version_status"][0]["state"]
        == "AVAILABLE"
    )
    paths = json.loads(server.request("GET", "/openapi.json")[2])["paths"]
    for route in (
        "/v2/models/{model}/infer",
        "/v1/models/{model}:predict",
        "/metrics",
        "/v2/repository/index",
        "/v1/models/{model}/versions/{version}",
    ):
        assert route in paths
    assert server.request("GET", f"/v1/models/{M}/versions/1")[0] == 200


def test_v2_json_infer_matches_the_model(served_home: Path, server: Server) -> None:
    x = _x(3)
    status, out = server.infer(M, x, id="req-7")
    assert status == 200 and out["id"] == "req-7" and out["model_version"] == "1"
    probs = np.asarray(out["outputs"][0]["data"], dtype=np.float32).reshape(3, 10)
    want = _expected(served_home, x)
    np.testing.assert_allclose(probs, want, atol=1e-6)
    assert out["outputs"][1] == {
        "name": "label",
        "datatype": "BYTES",
        "shape": [3],
        "data": [str(i) for i in want.argmax(1)],
    }


def test_v2_binary_tensors_raw(served_home: Path, server: Server) -> None:
    x = _x(5, seed=1)
    head = json.dumps(
        {
            "inputs": [
                {
                    "name": "input",
                    "shape": [5, 784],
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": x.nbytes},
                }
            ],
            "outputs": [{"name": "probabilities", "parameters": {"binary_data": True}}, {"name": "label"}],
        }
    ).encode()
    status, headers, body = server.request(
        "POST",
        f"/v2/models/{M}/infer",
        head + x.tobytes(),
        {"Inference-Header-Content-Length": str(len(head)), "Content-Type": "application/octet-stream"},
    )
    assert status == 200
    n = int(headers["inference-header-content-length"])
    meta = json.loads(body[:n])
    size = meta["outputs"][0]["parameters"]["binary_data_size"]
    probs = np.frombuffer(body[n : n + size], dtype="<f4").reshape(5, 10)
    np.testing.assert_allclose(probs, _expected(served_home, x), atol=1e-6)
    assert len(meta["outputs"][1]["data"]) == 5


def test_tritonclient_works_unchanged(served_home: Path, server: Server) -> None:
    import tritonclient.http as triton

    client = triton.InferenceServerClient(f"{server.host}:{server.port}")
    try:
        assert client.is_server_live() and client.is_server_ready() and client.is_model_ready(M)
        assert client.get_model_metadata(M)["inputs"][0]["shape"] == [-1, 784]
        x = _x(4, seed=2)
        want = _expected(served_home, x)
        for binary in (False, True):
            inp = triton.InferInput("input", list(x.shape), "FP32")
            inp.set_data_from_numpy(x, binary_data=binary)
            outs = [
                triton.InferRequestedOutput("probabilities", binary_data=binary),
                triton.InferRequestedOutput("label", binary_data=binary),
            ]
            result = client.infer(M, [inp], outputs=outs)
            np.testing.assert_allclose(result.as_numpy("probabilities"), want, atol=1e-6)
            labels = [v.decode() if isinstance(v, bytes) else v for v in result.as_numpy("label").tolist()]
            assert labels == [str(i) for i in want.argmax(1)]
    finally:
        client.close()


def test_tf_serving_rows_and_columns(served_home: Path, server: Server) -> None:
    x = _x(2, seed=3)
    want = _expected(served_home, x)
    status, _, body = server.request(
        "POST", f"/v1/models/{M}:predict", json.dumps({"instances": x.tolist()}).encode()
    )
    assert status == 200
    preds = json.loads(body)["predictions"]
    np.testing.assert_allclose([p["probabilities"] for p in preds], want, atol=1e-6)
    status, _, body = server.request(
        "POST", f"/v1/models/{M}/versions/1:predict", json.dumps({"inputs": {"input": x.tolist()}}).encode()
    )
    assert status == 200
    np.testing.assert_allclose(json.loads(body)["outputs"]["probabilities"], want, atol=1e-6)


def test_onnx_runtime_gives_the_same_answers(served_home: Path) -> None:
    x = _x(7, seed=5)
    with running(served_home, f"{M}:1", "--no-auth", "--replicas", "1", "--runtime", "onnx") as s:
        status, out = s.infer(M, x)
    assert status == 200
    np.testing.assert_allclose(
        np.reshape(out["outputs"][0]["data"], (7, 10)), _expected(served_home, x), atol=1e-5
    )


def test_oversized_requests_are_split_and_reassembled(served_home: Path, server: Server) -> None:
    x = _x(300, seed=4)  # > --max-batch-rows 64
    status, out = server.infer(M, x)
    assert status == 200
    np.testing.assert_allclose(
        np.reshape(out["outputs"][0]["data"], (300, 10)), _expected(served_home, x), atol=1e-6
    )


def _json(inputs: object) -> bytes:
    return json.dumps({"inputs": inputs}).encode()


GOOD = {"name": "input", "shape": [1, 784], "datatype": "FP32", "data": [0.5] * 784}
BINARY_HEAD = _json(
    [{"name": "input", "shape": [1, 784], "datatype": "FP32", "parameters": {"binary_data_size": 3136}}]
)
BAD_REQUESTS = [
    ("malformed json", "POST", f"/v2/models/{M}/infer", b'{"inputs": [', {}, 400, "not valid JSON"),
    ("not an object", "POST", f"/v2/models/{M}/infer", b"[1, 2]", {}, 400, "JSON object"),
    (
        "wrong tensor name",
        "POST",
        f"/v2/models/{M}/infer",
        _json([{**GOOD, "name": "x"}]),
        {},
        400,
        "unknown input 'x'",
    ),
    (
        "wrong shape",
        "POST",
        f"/v2/models/{M}/infer",
        _json([{**GOOD, "shape": [1, 783]}]),
        {},
        400,
        "does not match",
    ),
    (
        "wrong count",
        "POST",
        f"/v2/models/{M}/infer",
        _json([{**GOOD, "shape": [2, 784]}]),
        {},
        400,
        "784 values do not make 2",
    ),
    (
        "wrong datatype",
        "POST",
        f"/v2/models/{M}/infer",
        _json([{**GOOD, "datatype": "FP8"}]),
        {},
        400,
        "datatype 'FP8'",
    ),
    (
        "strings as data",
        "POST",
        f"/v2/models/{M}/infer",
        _json([{**GOOD, "data": ["a"] * 784}]),
        {},
        400,
        "must be numbers",
    ),
    (
        "nan literal",
        "POST",
        f"/v2/models/{M}/infer",
        _json([{**GOOD, "data": [0.5] * 783 + [1]}]).replace(b"1]", b"NaN]"),
        {},
        400,
        "not valid JSON",
    ),
    (
        "binary header beyond body",
        "POST",
        f"/v2/models/{M}/infer",
        _json([GOOD]),
        {"Inference-Header-Content-Length": "99999"},
        400,
        "outside the body",
    ),
    (
        "binary size mismatch",
        "POST",
        f"/v2/models/{M}/infer",
        BINARY_HEAD + b"\0" * 100,
        {"Inference-Header-Content-Length": str(len(BINARY_HEAD))},
        400,
        "binary_data_size 3136 != 100",
    ),
    ("unknown model", "POST", "/v2/models/nope/infer", _json([GOOD]), {}, 404, "unknown model 'nope'"),
    ("unknown version", "POST", f"/v2/models/{M}/versions/9/infer", _json([GOOD]), {}, 404, "version '9'"),
    ("unknown route", "GET", "/v3/anything", None, {}, 404, "no route"),
    ("wrong method", "GET", f"/v2/models/{M}/infer", None, {}, 405, "not allowed"),
    (
        "wrong content type",
        "POST",
        f"/v2/models/{M}/infer",
        _json([GOOD]),
        {"Content-Type": "image/png"},
        415,
        "Content-Type",
    ),
    (
        "v1 neither key",
        "POST",
        f"/v1/models/{M}:predict",
        b'{"rows": []}',
        {},
        400,
        "'instances' or 'inputs'",
    ),
    ("v1 ragged", "POST", f"/v1/models/{M}:predict", b'{"instances": [[1, 2], [3]]}', {}, 400, "same length"),
    ("v1 unknown verb", "POST", f"/v1/models/{M}:classify", b"{}", {}, 404, ":classify"),
    (
        "datatype as a list",
        "POST",
        f"/v2/models/{M}/infer",
        _json([{**GOOD, "datatype": ["FP32"]}]),
        {},
        400,
        "datatype ['FP32']",
    ),
    (
        "datatype as an object",
        "POST",
        f"/v2/models/{M}/infer",
        _json([{**GOOD, "datatype": {}}]),
        {},
        400,
        "datatype {}",
    ),
    (
        "data as an object",
        "POST",
        f"/v2/models/{M}/infer",
        _json([{**GOOD, "data": {}}]),
        {},
        400,
        "data must be a list",
    ),
    (
        "binary size as text",
        "POST",
        f"/v2/models/{M}/infer",
        BINARY_HEAD.replace(b"3136", b'"3136"') + b"\0" * 3136,
        {"Inference-Header-Content-Length": str(len(BINARY_HEAD) + 2)},
        400,
        "binary_data_size",
    ),
    (
        "admin load of a malformed version",
        "POST",
        f"/v2/repository/models/{M}/load",
        b'{"parameters": {"reference": "mnist-mlp:abc"}}',
        {},
        400,
        "version must be a positive integer",
    ),
    (
        "admin load of an empty alias",
        "POST",
        f"/v2/repository/models/{M}/load",
        b'{"parameters": {"reference": "mnist-mlp@"}}',
        {},
        400,
        "empty alias",
    ),
    (
        "admin load of an unknown version",
        "POST",
        f"/v2/repository/models/{M}/load",
        b'{"parameters": {"reference": "mnist-mlp:99"}}',
        {},
        404,
        "99",
    ),
    ("admin unload of an unknown model", "POST", "/v2/repository/models/nope/unload", b"", {}, 404, "nope"),
]


@pytest.mark.parametrize(
    ("case", "method", "path", "body", "headers", "status", "message"),
    BAD_REQUESTS,
    ids=[c[0] for c in BAD_REQUESTS],
)
def test_bad_requests_get_4xx_json_and_the_next_request_succeeds(
    server: Server,
    case: str,
    method: str,
    path: str,
    body: bytes | None,
    headers: dict[str, str],
    status: int,
    message: str,
) -> None:
    got, _, raw = server.request(method, path, body, headers)
    assert got == status, raw
    assert message in json.loads(raw)["error"]
    assert server.infer(M, _x(1))[0] == 200


def test_nan_rows_are_refused_in_binary_too(server: Server) -> None:
    x = _x(2)
    x[1, 5] = np.nan
    head = _json(
        [
            {
                "name": "input",
                "shape": [2, 784],
                "datatype": "FP32",
                "parameters": {"binary_data_size": x.nbytes},
            }
        ]
    )
    status, _, raw = server.request(
        "POST",
        f"/v2/models/{M}/infer",
        head + x.tobytes(),
        {"Inference-Header-Content-Length": str(len(head))},
    )
    assert status == 400 and "row 1 contains NaN or Inf" in json.loads(raw)["error"]


def test_body_over_the_limit_is_413(server: Server) -> None:
    with socket.create_connection((server.host, server.port)) as sock:
        sock.sendall(
            f"POST /v2/models/{M}/infer HTTP/1.1\r\nHost: x\r\nContent-Length: {64 << 20}\r\n\r\n".encode()
        )
        sock.settimeout(30)
        reply = b""
        while b"limit" not in reply and (chunk := sock.recv(4096)):  # head and body may come apart
            reply += chunk
    assert reply.startswith(b"HTTP/1.1 413") and b"limit" in reply


# A value of each JSON type, containers included: what a client with a type bug sends.
WRONG_TYPES = st.sampled_from([None, True, 0, -1, 1.5, "", "FP32", [], ["FP32"], [1, 784], {}, {"a": 1}])
FIELDS = {
    "name": st.sampled_from(["INPUT", "probabilities", ""]) | WRONG_TYPES | JSON_VALUES,
    "shape": st.sampled_from([[784], [1, 28, 28], [2, 392], [0, 784], [1, 783], [2**40, 784], [1, -784]])
    | st.lists(st.integers(-1, 2**31), max_size=3)
    | WRONG_TYPES
    | JSON_VALUES,
    "datatype": st.sampled_from(["FP64", "FP16", "INT8", "UINT64", "BOOL", "BYTES", "fp32"])
    | WRONG_TYPES
    | JSON_VALUES,
    "data": st.sampled_from(
        [
            [[0.5] * 784],
            [True] * 784,
            [1000] * 784,
            ["0.5"] * 784,
            [1e300] * 784,
            [2**64 - 1] * 784,
            [0.5] * 783,
        ]
    )
    | st.builds(lambda v: [v] + [0.5] * 783, WRONG_TYPES | JSON_VALUES)
    | WRONG_TYPES
    | JSON_VALUES,
    "parameters": st.fixed_dictionaries({"binary_data_size": WRONG_TYPES | JSON_VALUES}) | WRONG_TYPES,
    "extra": JSON_VALUES,
}
HEADERS = {
    "Content-Type": st.sampled_from(
        ["application/json", "application/octet-stream", "text/plain", "image/png", ""]
    ),
    "Inference-Header-Content-Length": st.sampled_from(
        ["", "abc", "-1", "0", "1", "3200", "99999999999999999999"]
    ),
    "Content-Encoding": st.sampled_from(["identity", "gzip", "zstd", "br", ""]),
    "Accept-Encoding": st.sampled_from(["gzip", "zstd", "br;q=1", "*"]),
}


def _mutated(data: st.DataObject, field: str) -> tuple[str, bytes, dict[str, str]]:
    """(path, body, headers) of a valid one-row request with `field` of its tensor broken."""
    tensor: dict[str, object] = dict(GOOD)
    if data.draw(st.integers(0, 4), label=f"drop {field}") == 0:
        tensor.pop(field, None)
    else:
        tensor[field] = data.draw(FIELDS[field], label=field)
    request: dict[str, object] = {"inputs": [tensor]}
    if data.draw(st.integers(0, 3), label="top-level") == 0:
        request[data.draw(st.sampled_from(["outputs", "parameters", "id", "inputs"]))] = data.draw(
            JSON_VALUES
        )
    headers: dict[str, str] = {}
    body = json.dumps(request).encode()
    if field != "data" and data.draw(st.integers(0, 3), label="binary") == 0:  # values as binary data
        tensor.pop("data", None)
        tensor.setdefault("parameters", {"binary_data_size": 3136})
        head = json.dumps(request).encode()
        body = head + _x(1).tobytes()[: data.draw(st.sampled_from([3136, 3135, 100, 0]))]
        headers["Inference-Header-Content-Length"] = str(len(head))
    if data.draw(st.integers(0, 4), label="v1") == 0:
        return f"/v1/models/{M}:predict", json.dumps({"instances": [tensor.get("data")]}).encode(), {}
    return f"/v2/models/{M}/infer", body, headers


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_mutated_valid_requests_never_get_a_5xx(server: Server, data: st.DataObject) -> None:
    """Each field of a valid request broken in turn, then its headers: the decoder's checks are reached."""
    cases = [_mutated(data, field) for field in sorted(FIELDS)]
    headers = data.draw(st.fixed_dictionaries({}, optional=HEADERS), label="headers")
    cases.append((f"/v2/models/{M}/infer", _json([GOOD]), headers))
    for path, body, extra in cases:
        status, _, reply = server.request("POST", path, body, extra)
        assert status < 500, reply
        assert status == 200 or "error" in json.loads(reply)  # error bodies are too small to compress
    assert server.infer(M, _x(1))[0] == 200


def _metric(text: str, line_start: str) -> float:
    return float(next(line for line in text.splitlines() if line.startswith(line_start)).split()[-1])


def test_errors_are_counted_under_the_route_they_hit(server: Server) -> None:
    assert server.request("POST", f"/v2/models/{M}/infer", b"{", {})[0] == 400
    assert server.request("POST", "/v2/models/nope/infer", _json([GOOD]), {})[0] == 404
    assert server.request("GET", f"/v2/models/{M}/infer")[0] == 405
    assert server.request("GET", "/v1/models/nope")[0] == 404
    assert server.request("GET", "/no/such/route")[0] == 404
    time.sleep(1.2)  # replicas publish snapshots about once a second
    text = server.request("GET", "/metrics")[2].decode()
    for route, status in (
        ("v2/models/infer", 400),
        ("v2/models/infer", 404),
        ("v2/models/infer", 405),
        ("v1/models/status", 404),
        ("unmatched", 404),
    ):
        assert f'route="{route}",status="{status}"' in text, (route, status)
    unmatched = [line for line in text.splitlines() if 'route="unmatched",status=' in line]
    assert unmatched and all('status="404"' in line for line in unmatched)


def test_a_chunked_body_over_the_limit_is_413_and_the_next_request_succeeds(server: Server) -> None:
    chunk = b"0" * (1 << 20)
    with socket.create_connection((server.host, server.port)) as sock:
        sock.settimeout(30)
        sock.sendall(
            f"POST /v2/models/{M}/infer HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n".encode()
        )
        try:
            for _ in range(20):  # 20 MiB, no Content-Length: the server must count as it reads
                sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            sock.sendall(b"0\r\n\r\n")
        except OSError:  # the server may answer and close before all of it is sent
            pass
        reply = b""
        try:
            while b"limit" not in reply and (data := sock.recv(4096)):
                reply += data
        except ConnectionResetError:
            pass
    assert reply.startswith(b"HTTP/1.1 413") and b"over the 16777216-byte limit" in reply, reply[:300]
    assert server.infer(M, _x(1))[0] == 200


def _hammer(server: Server, stop: threading.Event, results: Counter[object], rows: int = 1) -> None:
    x = _x(rows)
    while not stop.is_set():
        try:
            results[server.infer(M, x)[0]] += 1
        except (OSError, http.client.HTTPException) as exc:  # e.g. a replica killed mid-response
            results[type(exc).__name__] += 1


def _load(server: Server, threads: int, seconds: float, rows: int = 1) -> Counter[object]:
    stop, results = threading.Event(), Counter[object]()
    workers = [threading.Thread(target=_hammer, args=(server, stop, results, rows)) for _ in range(threads)]
    for w in workers:
        w.start()
    time.sleep(seconds)
    stop.set()
    for w in workers:
        w.join()
    return results


def test_concurrent_requests_are_batched(served_home: Path) -> None:
    # --cache none: the same input over and over must reach the model, not the response cache
    with running(
        served_home, M, "--no-auth", "--replicas", "1", "--max-delay-ms", "5", "--cache", "none"
    ) as s:
        results = _load(s, threads=16, seconds=2)
        assert set(results) == {200}
        text = s.request("GET", "/metrics")[2].decode()
    one_row = int(
        next(
            line
            for line in text.splitlines()
            if line.startswith('skylift_batch_rows_bucket{replica="0",le="1.0"}')
        ).split()[-1]
    )
    total = int(
        next(
            line for line in text.splitlines() if line.startswith('skylift_batch_rows_count{replica="0"}')
        ).split()[-1]
    )
    assert total < results[200], "some batches must hold several requests"
    assert one_row < total


def _send_slowly(server: Server, body: bytes) -> socket.socket:
    """Send a request's head and half its body: the server holds it as a request on its way."""
    sock = socket.create_connection((server.host, server.port), timeout=30)
    head = f"POST /v2/models/{M}/infer HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n"
    sock.sendall(head.encode() + body[: len(body) // 2])
    return sock


def _finish(sock: socket.socket, body: bytes) -> bytes:
    sock.sendall(body[len(body) // 2 :])
    reply = b""
    while b"outputs" not in reply and (data := sock.recv(65536)):
        reply += data
    sock.close()
    return reply


def test_a_batch_waits_up_to_max_delay_for_requests_on_their_way(served_home: Path) -> None:
    args = ("--no-auth", "--replicas", "1", "--max-delay-ms", "3000", "--cache", "none")
    with running(served_home, M, *args) as s:
        body = _json([{**GOOD, "data": _x(1).ravel().tolist()}])
        timed: list[float] = []

        def send() -> None:
            tick = time.monotonic()
            assert s.infer(M, _x(1, seed=1))[0] == 200
            timed.append(time.monotonic() - tick)

        # A request on its way when another arrives: the batch waits for it, and both share it.
        slow = _send_slowly(s, body)
        time.sleep(0.5)  # the server has the head and is reading the body
        fast = threading.Thread(target=send)
        fast.start()
        time.sleep(1.0)  # the fast one arrives (ms) and waits: up to 3 s for the one on its way
        assert fast.is_alive()
        assert b"200 OK" in _finish(slow, body)
        fast.join()
        text = s.request("GET", "/metrics")[2].decode()
        assert _metric(text, 'skylift_batch_rows_count{replica="0"}') == 1  # one batch ...
        assert _metric(text, 'skylift_batch_rows_sum{replica="0"}') == 2  # ... of both rows
        # One that stays on its way: the batch closes at --max-delay-ms without it, not before.
        slow = _send_slowly(s, body)
        time.sleep(0.5)
        send()
        assert timed[1] >= 2.9
        assert b"200 OK" in _finish(slow, body)


def test_full_queue_answers_503_with_retry_after(served_home: Path) -> None:
    with running(
        served_home, M, "--no-auth", "--replicas", "1", "--max-queue-rows", "64", "--cache", "none"
    ) as s:
        body = _json(
            [{"name": "input", "shape": [64, 784], "datatype": "FP32", "data": _x(64).ravel().tolist()}]
        )
        replies: list[tuple[int, dict[str, str], bytes]] = []

        def send() -> None:
            for _ in range(10):
                replies.append(s.request("POST", f"/v2/models/{M}/infer", body))

        threads = [threading.Thread(target=send) for _ in range(12)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        statuses = Counter(r[0] for r in replies)
        assert statuses[200] > 0 and statuses[503] > 0 and set(statuses) == {200, 503}, statuses
        _, headers, raw = next(r for r in replies if r[0] == 503)
        assert headers["retry-after"] == "1" and "queue full" in json.loads(raw)["error"]
        assert s.infer(M, _x(1))[0] == 200
        # One request larger than the whole queue can never fit: 413 naming the limit, not 503 forever.
        status, out = s.infer(M, _x(65))
        assert (
            status == 413
            and "65 rows" in out["error"]
            and "64 queued rows (--max-queue-rows)" in out["error"]
        )


def test_past_deadline_is_504(served_home: Path) -> None:
    with running(
        served_home, M, "--no-auth", "--replicas", "1", "--timeout-ms", "1", "--max-batch-rows", "8"
    ) as s:
        status, out = s.infer(M, _x(500))
        assert status == 504 and "deadline" in out["error"]
        # The rows still queued at the deadline were dropped, not computed (63 batches of <= 8 rows).
        text = s.request("GET", "/metrics")[2].decode()
        assert _metric(text, 'skylift_batch_rows_sum{replica="0"}') < 500


def test_a_killed_replica_is_replaced_while_others_answer(served_home: Path) -> None:
    with running(served_home, M, "--no-auth", "--replicas", "2") as s:
        before = s.replicas()
        assert len(before) == 2
        stop, results = threading.Event(), Counter[object]()
        workers = [threading.Thread(target=_hammer, args=(s, stop, results)) for _ in range(4)]
        for w in workers:
            w.start()
        time.sleep(0.5)
        os.kill(before[0], signal.SIGKILL)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and (len(s.replicas()) < 2 or before[0] in s.replicas()):
            time.sleep(0.1)
        time.sleep(0.5)
        stop.set()
        for w in workers:
            w.join()
        after = s.replicas()
        assert len(after) == 2 and before[0] not in after and before[1] in after
        failed = sum(v for k, v in results.items() if k != 200)
        assert results[200] > 20 and failed <= 4, results  # at most the requests in flight on the killed one
        assert "replica 0 exited (killed by SIGKILL)" in s.log.read_text()


def test_replicas_recycle_after_max_requests_without_failing_requests(served_home: Path) -> None:
    with running(served_home, M, "--no-auth", "--replicas", "1", "--max-requests", "25") as s:
        first = s.replicas()
        results = Counter(s.infer(M, _x(1))[0] for _ in range(60))
        assert results == Counter({200: 60})
        deadline = time.monotonic() + 30
        while not set(s.replicas()) - set(first) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert set(s.replicas()) - set(first)


def test_replicas_recycle_past_max_rss_mb_and_requests_keep_succeeding(served_home: Path) -> None:
    # 1 MiB: every replica is over it, so each recycles about a second after it starts serving.
    with running(served_home, M, "--no-auth", "--replicas", "1", "--max-rss-mb", "1", ready=False) as s:
        # Sent before any replica is up: answered once the model is loaded, never "not ready".
        status, _, body = s.request("GET", "/v2/health/ready")
        assert status == 200 and json.loads(body) == {"ready": True}
        statuses: Counter[int] = Counter()
        deadline = time.monotonic() + 120
        # More recycles than the supervisor would tolerate crashes (3 per replica in 30 s).
        while s.log.read_text().count("recycled; starting a new one") < 4 and time.monotonic() < deadline:
            statuses[s.infer(M, _x(1))[0]] += 1
        log = s.log.read_text()
        assert log.count("recycled; starting a new one") >= 4, log
        assert set(statuses) == {200}, statuses
        assert "past --max-rss-mb 1; recycling it" in log
        assert "exited" not in log and "giving up" not in log
        assert s.proc.poll() is None and s.infer(M, _x(1))[0] == 200


def test_sigterm_drains_in_flight_requests(served_home: Path) -> None:
    # One row per batch: a 3000-row request then takes a few seconds, long enough to be caught mid-way.
    args = ("--no-auth", "--replicas", "2", "--max-batch-rows", "1", "--max-queue-rows", "8192")
    with running(served_home, M, *args) as s:
        replicas = s.replicas()
        results: list[int] = []

        def send() -> None:
            results.append(s.infer_binary(M, _x(3000)))

        threads = [threading.Thread(target=send) for _ in range(2)]
        for t in threads:
            t.start()
        time.sleep(0.5)
        os.killpg(s.proc.pid, signal.SIGTERM)
        for t in threads:
            t.join()
        assert s.proc.wait(timeout=60) == 0
        assert results == [200, 200]
        assert not [p for p in replicas if Path(f"/proc/{p}").exists()]


def test_reload_follows_an_alias_without_failing_requests(served_home: Path) -> None:
    registry = Registry(served_home)
    registry.promote(M, 1, "production")
    with running(served_home, f"{M}@production", "--no-auth", "--replicas", "2") as s:
        assert s.infer(M, _x(1))[1]["model_version"] == "1"
        stop, results = threading.Event(), Counter[object]()
        workers = [threading.Thread(target=_hammer, args=(s, stop, results)) for _ in range(3)]
        for w in workers:
            w.start()
        registry.promote(M, 2, "production")
        status, _, body = s.request("POST", f"/v2/repository/models/{M}/load", b"")
        assert status == 200 and json.loads(body)["loaded"] == f"{M}:2"
        time.sleep(1.5)  # the other replica follows within its poll interval
        stop.set()
        for w in workers:
            w.join()
        assert set(results) == {200}
        versions = {s.infer(M, _x(1))[1]["model_version"] for _ in range(10)}
        assert versions == {"2"}
        index = json.loads(s.request("POST", "/v2/repository/index", b"")[2])
        assert index == [{"name": M, "version": "2", "state": "READY", "reference": f"{M}@production"}]
        assert s.request("POST", f"/v2/repository/models/{M}/unload", b"")[0] == 200
        time.sleep(1.2)
        assert s.request("GET", "/v2/health/ready")[0] == 503
        assert s.infer(M, _x(1))[0] == 404


def test_admin_loads_at_the_same_moment_on_two_replicas_are_both_kept(
    served_home: Path, tmp_path: Path
) -> None:
    import shutil

    home = tmp_path / "home"
    shutil.copytree(served_home / "registry", home / "registry")
    for twin in ("twin-a", "twin-b"):
        fit(load_spec(EXAMPLE, ["train.epochs=1", f"name={twin}", "data.test_split=0"]), home=home)
    with running(home, f"{M}:1", "--no-auth", "--replicas", "2") as s:

        def admin(action: str, name: str) -> None:
            assert s.request("POST", f"/v2/repository/models/{name}/{action}", b"")[0] == 200

        for action, served in (("load", [M, "twin-a", "twin-b"]), ("unload", [M])):
            both = [threading.Thread(target=admin, args=(action, t)) for t in ("twin-a", "twin-b")]
            for t in both:
                t.start()
            for t in both:
                t.join()
            time.sleep(1.2)  # every replica follows the shared state within its poll interval
            for _ in range(4):  # answered by either replica
                index = json.loads(s.request("POST", "/v2/repository/index", b"")[2])
                assert sorted(m["name"] for m in index) == served


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((M,), "start with --no-auth"),
        ((M, "--no-auth", "--host", "0.0.0.0"), "--no-auth is refused on a non-loopback address"),
        (("nope", "--no-auth"), "no model named 'nope'"),
        ((M, "--no-auth", "--replicas", "0"), "--replicas must be >= 1"),
        ((M, "--no-auth", "--max-queue-rows", "8"), "must be >= --max-batch-rows"),
        ((f"{M}:x", "--no-auth"), f"{M}:x"),
    ],
)
def test_bad_server_settings_are_one_line(served_home: Path, args: tuple[str, ...], message: str) -> None:
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-m", "skylift", "serve", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "SKYLIFT_HOME": str(served_home)},
        timeout=60,
    )
    assert out.returncode == 2 and message in out.stderr and out.stderr.count("\n") == 1, out.stderr


def test_tampered_model_is_refused_before_serving(served_home: Path, tmp_path: Path) -> None:
    import shutil
    import subprocess
    import sys

    home = tmp_path / "home"
    shutil.copytree(served_home / "registry", home / "registry")
    weights = home / "registry" / M / "1" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF
    weights.write_bytes(bytes(data))
    out = subprocess.run(
        [sys.executable, "-m", "skylift", "serve", f"{M}:1", "--no-auth"],
        capture_output=True,
        text=True,
        env={**os.environ, "SKYLIFT_HOME": str(home)},
        timeout=60,
    )
    assert out.returncode == 1 and "model.safetensors" in out.stderr and out.stderr.count("\n") == 1


def test_binary_bytes_layout_of_labels(server: Server) -> None:
    head = (
        _json([{**GOOD, "shape": [1, 784]}])[:-1]
        + b', "outputs": [{"name": "label", "parameters": {"binary_data": true}}]}'
    )
    status, headers, body = server.request("POST", f"/v2/models/{M}/infer", head)
    assert status == 200
    n = int(headers["inference-header-content-length"])
    (length,) = struct.unpack("<I", body[n : n + 4])
    assert length == 1 and body[n + 4 :].decode().isdigit()


def test_repeated_inputs_are_answered_from_the_cache(served_home: Path, server: Server) -> None:
    x = _x(2, seed=42)
    body = {"inputs": [{"name": "input", "shape": [2, 784], "datatype": "FP32", "data": x.ravel().tolist()}]}
    replies = []
    for rid in ("first", "second"):
        status, headers, raw = server.request(
            "POST", f"/v2/models/{M}/infer", json.dumps({**body, "id": rid}).encode(), {}
        )
        replies.append((status, headers.get("x-cache"), json.loads(raw)))
    (s1, c1, r1), (s2, c2, r2) = replies
    assert (s1, s2) == (200, 200) and c1 == "miss"
    # two replicas: the second request may land on the other replica's (empty) memory cache
    assert c2 in ("hit", "miss") and r2["id"] == "second"
    assert r1["outputs"] == r2["outputs"]
    hits = [
        server.request("POST", f"/v2/models/{M}/infer", json.dumps(body).encode(), {})[1]["x-cache"]
        for _ in range(6)
    ]
    assert "hit" in hits
    np.testing.assert_allclose(
        np.reshape(r2["outputs"][0]["data"], (2, 10)), _expected(served_home, x), atol=1e-6
    )
    time.sleep(1.2)
    text = server.request("GET", "/metrics")[2].decode()
    assert "skylift_cache_hits_total" in text and "skylift_cache_misses_total" in text


def test_redis_cache_is_shared_by_replicas_and_redis_dying_fails_no_request(served_home: Path) -> None:
    from tests.unit.serve.test_serve_cache import RedisServer

    redis = RedisServer(free_port())
    redis.start()
    try:
        with running(served_home, M, "--no-auth", "--replicas", "2", "--cache", redis.url) as s:
            x = _x(1, seed=99)
            body = json.dumps(
                {
                    "inputs": [
                        {"name": "input", "shape": [1, 784], "datatype": "FP32", "data": x.ravel().tolist()}
                    ]
                }
            ).encode()
            assert s.request("POST", f"/v2/models/{M}/infer", body, {})[1]["x-cache"] == "miss"
            # whichever replica answers, the entry is there: the cache is shared
            assert {s.request("POST", f"/v2/models/{M}/infer", body, {})[1]["x-cache"] for _ in range(8)} == {
                "hit"
            }
            stop, results = threading.Event(), Counter[object]()
            workers = [threading.Thread(target=_hammer, args=(s, stop, results)) for _ in range(3)]
            for w in workers:
                w.start()
            time.sleep(0.3)
            redis.stop()  # Redis dies under load
            time.sleep(1.5)
            stop.set()
            for w in workers:
                w.join()
            assert set(results) == {200} and results[200] > 10, results
            assert s.request("POST", f"/v2/models/{M}/infer", body, {})[0] == 200
            time.sleep(1.2)
            assert 'skylift_cache_healthy{replica="0"} 0' in s.request("GET", "/metrics")[2].decode()
            assert "unreachable" in s.log.read_text()
    finally:
        redis.stop()


def test_hot_swaps_under_load_with_the_redis_cache_fail_no_request(served_home: Path) -> None:
    """Requests in flight during a swap finish on the old version, even while one awaits Redis."""
    from tests.unit.serve.test_serve_cache import RedisServer

    redis = RedisServer(free_port())
    redis.start()
    # --timeout-ms 3000: a request stranded on a retired version would answer 504 within the test.
    args = ("--no-auth", "--replicas", "1", "--cache", redis.url, "--timeout-ms", "3000")
    try:
        with running(served_home, f"{M}:1", *args) as s:
            stop, results = threading.Event(), Counter[object]()

            def distinct_inputs(seed: int) -> None:  # every input a cache miss: each reaches a batcher
                while not stop.is_set():
                    seed += 1000
                    results[s.infer(M, _x(1, seed))[0]] += 1

            workers = [threading.Thread(target=distinct_inputs, args=(i,)) for i in range(4)]
            for w in workers:
                w.start()
            for version in (2, 1) * 4:
                ref = json.dumps({"parameters": {"reference": f"{M}:{version}"}}).encode()
                assert s.request("POST", f"/v2/repository/models/{M}/load", ref)[0] == 200
                time.sleep(0.2)
            stop.set()
            for w in workers:
                w.join()
            assert set(results) == {200} and results[200] > 20, results
    finally:
        redis.stop()

"""Wire codecs: round trips, and nothing but BadRequest from any byte string."""

from __future__ import annotations

import json
import struct

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from skylift.serve.codec import BadRequest, Signature, V2Request, decode_v1, decode_v2, encode_v1, encode_v2

SIG = Signature((4,), ("a", "b", "c"))
finite = st.floats(-1e6, 1e6, width=32)


@given(x=arrays(np.float32, st.tuples(st.integers(1, 5), st.just(4)), elements=finite))
def test_binary_request_round_trips(x: np.ndarray) -> None:
    head = orjson.dumps(
        {
            "inputs": [
                {
                    "name": "input",
                    "shape": list(x.shape),
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": x.nbytes},
                }
            ]
        }
    )
    req = decode_v2(head + x.astype("<f4").tobytes(), len(head), SIG)
    np.testing.assert_array_equal(req.x, x)


@given(x=arrays(np.float64, st.tuples(st.integers(1, 5), st.just(4)), elements=finite))
def test_json_request_round_trips_and_converts_dtype(x: np.ndarray) -> None:
    body = orjson.dumps(
        {
            "inputs": [
                {"name": "input", "shape": list(x.shape), "datatype": "FP64", "data": x.ravel().tolist()}
            ]
        }
    )
    req = decode_v2(body, None, SIG)
    assert req.x.dtype == np.float32
    np.testing.assert_allclose(req.x, x.astype(np.float32))


@settings(max_examples=300)
@given(body=st.binary(max_size=200), header=st.none() | st.integers(-5, 250))
def test_any_bytes_decode_or_raise_bad_request(body: bytes, header: int | None) -> None:
    for decode in (lambda: decode_v2(body, header, SIG), lambda: decode_v1(body, SIG)):
        try:
            decode()
        except BadRequest as exc:
            assert 400 <= exc.status < 500 and "\n" not in str(exc)


def test_binary_response_layout() -> None:
    probs = np.array([[0.1, 0.2, 0.7]], dtype=np.float32)
    req = V2Request(np.zeros((1, 4), np.float32), (("probabilities", True), ("label", True)), "r1")
    body, n = encode_v2("m", "3", req, probs, ["c"])
    assert n is not None
    head = json.loads(body[:n])
    assert head["id"] == "r1" and head["model_version"] == "3"
    size = head["outputs"][0]["parameters"]["binary_data_size"]
    np.testing.assert_array_equal(np.frombuffer(body[n : n + size], "<f4"), probs.ravel())
    assert body[n + size :] == struct.pack("<I", 1) + b"c"


def test_v1_row_and_column_formats() -> None:
    x, columnar = decode_v1(b'{"instances": [{"input": [1, 2, 3, 4]}]}', SIG)
    assert not columnar and x.shape == (1, 4)
    x, columnar = decode_v1(b'{"inputs": {"input": [[1, 2, 3, 4], [5, 6, 7, 8]]}}', SIG)
    assert columnar and x.shape == (2, 4)
    probs = np.array([[0.5, 0.25, 0.25]], dtype=np.float32)
    assert json.loads(encode_v1(probs, ["a"], False)) == {
        "predictions": [{"probabilities": [0.5, 0.25, 0.25], "label": "a"}]
    }
    assert json.loads(encode_v1(probs, ["a"], True))["outputs"]["label"] == ["a"]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            b'{"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3]}]}',
            "3 values",
        ),
        (
            b'{"inputs": [{"name": "input", "shape": [0, 4], "datatype": "FP32", "data": []}]}',
            "at least one row",
        ),
        (b'{"inputs": [{"name": "input", "shape": "1x4", "datatype": "FP32", "data": []}]}', "shape must be"),
        (
            b'{"inputs": [{"name": "input", "shape": [1, 4], "datatype": "BYTES", "data": []}]}',
            "datatype 'BYTES'",
        ),
        (b'{"inputs": [], "outputs": []}', "exactly one tensor"),
        (
            b'{"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}], '
            b'"outputs": [{"name": "z"}]}',
            "unknown output 'z'",
        ),
    ],
)
def test_bad_v2_requests(body: bytes, message: str) -> None:
    with pytest.raises(BadRequest, match=message):
        decode_v2(body, None, SIG)

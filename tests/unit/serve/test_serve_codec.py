"""Wire codecs: round trips, and nothing but BadRequest from any byte string."""

from __future__ import annotations

import json
import re
import struct

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from skylift.serve.codec import (
    DTYPES,
    BadRequest,
    Signature,
    V2Request,
    decode_v1,
    decode_v2,
    encode_v1,
    encode_v2,
)
from tests.conftest import JSON_VALUES

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
    body, n = encode_v2("m", "3", req, {"probabilities": probs, "label": ["c"]})
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
    assert json.loads(encode_v1({"probabilities": probs, "label": ["a"]}, False)) == {
        "predictions": [{"probabilities": [0.5, 0.25, 0.25], "label": "a"}]
    }
    assert json.loads(encode_v1({"probabilities": probs, "label": ["a"]}, True))["outputs"]["label"] == ["a"]


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


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("datatype", ["FP32"], "datatype ['FP32']"),
        ("datatype", {}, "datatype {}"),
        ("datatype", 32, "datatype 32"),
        ("data", {}, "data must be a list"),
        ("data", "1,2,3,4", "data must be a list"),
        ("data", [[1, 2], [3]], "must be numbers"),
        ("data", [{}, 1, 2, 3], "must be numbers"),
        ("shape", {"rows": 1}, "shape must be"),
        ("name", ["input"], "unknown input"),
    ],
)
def test_fields_of_the_wrong_type_are_bad_requests(field: str, value: object, message: str) -> None:
    tensor = {"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4], field: value}
    with pytest.raises(BadRequest, match=re.escape(message)):
        decode_v2(orjson.dumps({"inputs": [tensor]}), None, SIG)


FIELDS = {
    "name": st.sampled_from(["input", "INPUT", ""]) | JSON_VALUES,
    "shape": st.lists(st.integers(-2, 2**40), max_size=4)
    | st.sampled_from([[1, 4], [4], [1, 2, 2], [2, 2], [0, 4], [-1, 4]])
    | JSON_VALUES,
    "datatype": st.sampled_from([*DTYPES, "BYTES", "fp32", ""]) | JSON_VALUES,
    "data": st.lists(JSON_VALUES, min_size=4, max_size=4)
    | st.lists(st.integers(-(2**63), 2**64 - 1) | st.floats(), min_size=3, max_size=5)
    | st.sampled_from([[[1, 2, 3, 4]], [True] * 4, [1000] * 4, ["0.5"] * 4, [1e300] * 4])
    | JSON_VALUES,
    "parameters": st.fixed_dictionaries({"binary_data_size": JSON_VALUES}) | JSON_VALUES,
    "extra": JSON_VALUES,
}


@settings(max_examples=400)
@given(data=st.data(), binary=st.booleans())
def test_mutated_valid_requests_decode_or_raise_bad_request(data: st.DataObject, binary: bool) -> None:
    """Start from a valid request and break one or more fields, so the decoder's deeper checks run."""
    tensor: dict[str, object] = {"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}
    for field in data.draw(st.sets(st.sampled_from(sorted(FIELDS)), min_size=1, max_size=3)):
        if data.draw(st.booleans()):
            tensor.pop(field, None)
        else:
            tensor[field] = data.draw(FIELDS[field])
    header: dict[str, object] = {"inputs": [tensor]}
    if data.draw(st.booleans()):
        header[data.draw(st.sampled_from(["outputs", "parameters", "id"]))] = data.draw(JSON_VALUES)
    blob = b""
    if binary:
        blob = data.draw(st.binary(max_size=40) | st.just(np.arange(4, dtype="<f4").tobytes()))
        tensor.pop("data", None)
        tensor["parameters"] = {"binary_data_size": data.draw(st.just(len(blob)) | JSON_VALUES)}
    head = orjson.dumps(header)
    try:
        req = decode_v2(head + blob, len(head) if binary else None, SIG)
    except BadRequest as exc:
        assert 400 <= exc.status < 500 and "\n" not in str(exc)
    else:
        assert req.x.dtype == np.float32 and req.x.shape[1:] == (4,) and np.isfinite(req.x).all()

"""Request bodies: each protocol's framing parses back to the same floats, shapes and lengths."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from skylift.errors import SpecError
from skylift.loadgen import BenchConfig
from skylift.loadgen._body import (
    STAMPS,
    TEXT_STAMP_WIDTH,
    RequestTemplate,
    build_template,
    file_template,
    sample_rows,
    stamp_value,
    text_stamp,
)
from skylift.loadgen._config import parse_url
from skylift.loadgen._probe import _from_metadata

TARGET = parse_url("http://127.0.0.1:8000")


def split(request: bytes) -> tuple[list[str], dict[str, str], bytes]:
    head, body = request.split(b"\r\n\r\n", 1)
    line, *fields = head.decode("latin-1").split("\r\n")
    return line.split(" "), dict(f.split(": ", 1) for f in fields), body


def expected(x: np.ndarray, n: int = 0) -> np.ndarray:
    flat = x.reshape(-1).copy()
    flat[0] = stamp_value(n)
    return flat


@given(
    rows=st.integers(1, 4),
    row_shape=st.lists(st.integers(1, 6), min_size=1, max_size=3).map(tuple),
    n=st.integers(0, 2 * STAMPS),
)
@settings(max_examples=60, deadline=None)
def test_v2_binary_framing_round_trips(rows: int, row_shape: tuple[int, ...], n: int) -> None:
    x = sample_rows(rows, row_shape, seed=n % 7)
    t = build_template("v2-binary", TARGET, "m", x)
    (method, path, version), headers, body = split(t.request(n))
    assert (method, path, version) == ("POST", "/v2/models/m/infer", "HTTP/1.1")
    assert headers["Content-Type"] == "application/octet-stream"
    assert int(headers["Content-Length"]) == len(body)
    hlen = int(headers["Inference-Header-Content-Length"])
    header = json.loads(body[:hlen])
    raw = body[hlen:]
    assert header["inputs"] == [
        {
            "name": "input",
            "shape": [rows, *row_shape],
            "datatype": "FP32",
            "parameters": {"binary_data_size": len(raw)},
        }
    ]
    assert header["outputs"] == [{"name": "probabilities", "parameters": {"binary_data": True}}]
    got = np.frombuffer(raw, dtype="<f4")
    np.testing.assert_array_equal(got, expected(x, n))


@given(rows=st.integers(1, 3), features=st.integers(1, 40), n=st.integers(0, STAMPS - 1))
@settings(max_examples=40, deadline=None)
def test_v2_json_and_v1_carry_the_same_values(rows: int, features: int, n: int) -> None:
    x = sample_rows(rows, (features,), seed=1)
    v2 = build_template("v2-json", TARGET, "m", x, input_name="pixels")
    _, headers, body = split(v2.request(n))
    assert headers["Content-Type"] == "application/json" and int(headers["Content-Length"]) == len(body)
    (tensor,) = json.loads(body)["inputs"]
    assert tensor["name"] == "pixels" and tensor["shape"] == [rows, features] and tensor["datatype"] == "FP32"
    np.testing.assert_array_equal(np.asarray(tensor["data"], dtype=np.float32), expected(x, n))

    v1 = build_template("v1", TARGET, "m", x)
    (_, path, _), _, body = split(v1.request(n))
    assert path == "/v1/models/m:predict"
    instances = json.loads(body)["instances"]
    assert np.asarray(instances).shape == (rows, features)
    np.testing.assert_array_equal(np.asarray(instances, dtype=np.float32).reshape(-1), expected(x, n))


def test_v1_nests_multi_dimensional_rows() -> None:
    x = sample_rows(2, (1, 2, 3))
    instances = json.loads(build_template("v1", TARGET, "m", x).body)["instances"]
    assert np.asarray(instances).shape == (2, 1, 2, 3)
    np.testing.assert_array_equal(np.asarray(instances, dtype=np.float32).reshape(-1), expected(x))


def test_one_mnist_row_is_about_seven_kilobytes_of_json() -> None:
    t = build_template("v2-json", TARGET, "mnist-mlp", sample_rows(1, (784,)))
    assert 6_500 < len(t.body) < 8_000
    assert len(build_template("v2-binary", TARGET, "m", sample_rows(1, (784,))).body) < 3_400


def test_stamps_are_distinct_float32_values_of_fixed_width() -> None:
    ns = list(range(0, 5000)) + list(range(STAMPS - 5000, STAMPS))
    values = np.asarray([stamp_value(n) for n in ns], dtype=np.float32)
    assert len(set(values.tolist())) == len(ns)
    assert all(0.5 <= v < 1 for v in values)
    for n in (0, 1, 12345, STAMPS - 1):
        text = text_stamp(n)
        assert len(text) == TEXT_STAMP_WIDTH and np.float32(float(text)) == np.float32(stamp_value(n))
    assert stamp_value(STAMPS) == stamp_value(0)  # wraps after 2**23 requests


@pytest.mark.parametrize("protocol", ["v2-json", "v2-binary", "v1"])
def test_body_length_is_the_same_for_every_request(protocol: str) -> None:
    t = build_template(protocol, TARGET, "m", sample_rows(2, (5,)))  # type: ignore[arg-type]
    sizes = {len(t.body_for(n)) for n in (0, 1, 999, STAMPS - 1)}
    assert sizes == {len(t.body)}


def test_headers_carry_host_and_key_only_when_given() -> None:
    x = sample_rows(1, (3,))
    t = build_template("v2-json", parse_url("http://example.test:9000/api/"), "a/b", x, api_key="s3cret")
    line, headers, _ = split(t.request(0))
    assert line[1] == "/api/v2/models/a%2Fb/infer"
    assert headers["Host"] == "example.test:9000" and headers["Authorization"] == "Bearer s3cret"
    assert "s3cret" not in repr(t)
    plain = build_template("v2-json", parse_url("https://example.test"), "m", x)
    assert "Authorization" not in plain.headers and plain.headers["Host"] == "example.test"


def test_binary_stamp_is_written_in_place() -> None:
    x = sample_rows(1, (4,))
    t = build_template("v2-binary", TARGET, "m", x)
    assert isinstance(t, RequestTemplate) and t.width == 4
    assert t.body_for(7)[t.slot : t.slot + 4] == struct.pack("<f", stamp_value(7))
    assert t.body_for(7)[t.slot + 4 :] == t.body[t.slot + 4 :]


def test_a_body_file_goes_as_it_is_with_its_type(tmp_path: Path) -> None:
    png = b"\x89PNG\r\n\x1a\n" + bytes(range(256))
    t = file_template("v1", TARGET, "pets", png, "image/png", api_key="k")
    (method, path, _), headers, body = split(t.request(0))
    assert (method, path, body) == ("POST", "/v1/models/pets:predict", png)
    assert headers["Content-Type"] == "image/png" and headers["Content-Length"] == str(len(png))
    assert headers["Authorization"] == "Bearer k"
    (tmp_path / "cat.png").write_bytes(png)
    config = BenchConfig("http://127.0.0.1:1", "pets", body_file=str(tmp_path / "cat.png"))
    assert config.body_type == "image/png"
    for bad, says in (
        ({"body_file": str(tmp_path / "nope.png")}, "body_file must be a file"),
        ({"body_file": str(tmp_path / "cat.png"), "protocol": "v2-binary"}, "sent as it is"),
        ({"content_type": "image/png"}, "content_type applies to a body_file"),
    ):
        with pytest.raises(SpecError, match=says):
            BenchConfig("http://127.0.0.1:1", "pets", **bad)  # type: ignore[arg-type]
    (tmp_path / "x.bin").write_bytes(b"x")
    with pytest.raises(SpecError, match="cannot tell the Content-Type"):
        BenchConfig("http://127.0.0.1:1", "pets", body_file=str(tmp_path / "x.bin"))


def test_a_media_models_numeric_input_is_found_after_its_files() -> None:
    meta = {
        "inputs": [
            {"name": "image", "datatype": "BYTES", "shape": [-1]},
            {"name": "input", "datatype": "FP32", "shape": [-1, 1, 28, 28]},
        ],
        "outputs": [{"name": "probabilities", "datatype": "FP32", "shape": [-1, 3]}],
    }
    spec = _from_metadata(meta)
    assert (spec.input_name, spec.row_shape, spec.source) == ("input", (1, 28, 28), "metadata")

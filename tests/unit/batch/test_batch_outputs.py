"""Chunk parts and the output formats: round trips, columns, names vs ids, deterministic bytes."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from skylift.batch._outputs import class_values, write_output
from skylift.batch._predictor import Outputs, decode_part, encode_part

NAMES = ["cat", "dog", "eel"]


@given(
    rows=st.integers(0, 40),
    classes=st.integers(1, 6),
    seed=st.integers(0, 2**16),
    kind=st.sampled_from(["class", "proba", "top_k"]),
)
def test_parts_round_trip(rows: int, classes: int, seed: int, kind: str) -> None:
    rng = np.random.default_rng(seed)
    k = min(2, classes)
    outputs = Outputs(proba=kind == "proba", top_k=k if kind == "top_k" else None)
    arrays = [rng.integers(0, classes, rows)]
    if kind == "proba":
        arrays.append(rng.random((rows, classes), dtype=np.float32))
    elif kind == "top_k":
        arrays += [rng.integers(0, classes, (rows, k)), rng.random((rows, k), dtype=np.float32)]
    data = encode_part(arrays)
    assert encode_part(arrays) == data  # deterministic
    back = decode_part(io.BytesIO(data), outputs)
    assert len(back) == len(arrays)
    for a, b in zip(arrays, back, strict=True):
        np.testing.assert_array_equal(a, b)


@given(hnp.arrays(np.float32, hnp.array_shapes(min_dims=2, max_dims=2, max_side=8)))
def test_parts_keep_every_float_bit(x: np.ndarray) -> None:
    ids = np.zeros(len(x), dtype=np.int64)
    back = decode_part(io.BytesIO(encode_part([ids, x])), Outputs(proba=True))
    assert back[1].tobytes() == np.ascontiguousarray(x).tobytes()


def test_class_values_are_ids_unless_the_model_has_names() -> None:
    assert class_values(["0", "1", "2"]).tolist() == [0, 1, 2]
    assert class_values(["1", "2"]).tolist() == ["1", "2"]  # not 0..C-1: names
    assert class_values(NAMES).tolist() == NAMES


def _parts(outputs: Outputs) -> list[list[np.ndarray]]:
    ids = [np.array([2, 0]), np.array([1])]
    proba = [
        np.array([[0.1, 0.2, 0.7], [0.5, 0.25, 0.25]], np.float32),
        np.array([[0.0, 1.0, 0.0]], np.float32),
    ]
    if outputs.proba:
        return [[i, p] for i, p in zip(ids, proba, strict=True)]
    if outputs.top_k:
        top = [np.argsort(-p, axis=1, kind="stable")[:, : outputs.top_k] for p in proba]
        return [[i, t, np.take_along_axis(p, t, 1)] for i, t, p in zip(ids, top, proba, strict=True)]
    return [[i] for i in ids]


def _write(tmp_path: Path, fmt: str, classes: list[str], outputs: Outputs, name: str = "out") -> Path:
    path = tmp_path / f"{name}.{fmt}"
    with open(path, "wb") as f:
        write_output(f, fmt, classes, outputs, 3, lambda: iter(_parts(outputs)))
    return path


@pytest.mark.parametrize(
    ("fmt", "outputs"),
    [
        (fmt, outputs)
        for fmt in ("npz", "npy", "csv", "parquet", "jsonl")
        for outputs in (Outputs(), Outputs(proba=True), Outputs(top_k=2))
        if not (fmt == "npy" and (outputs.top_k or outputs.proba))  # refused before any work
    ],
)
def test_every_format_is_deterministic(tmp_path: Path, fmt: str, outputs: Outputs) -> None:
    a = _write(tmp_path, fmt, NAMES, outputs, "a").read_bytes()
    b = _write(tmp_path, fmt, NAMES, outputs, "b").read_bytes()
    assert a == b


def test_tabular_columns_with_names(tmp_path: Path) -> None:
    table = pq.read_table(_write(tmp_path, "parquet", NAMES, Outputs(proba=True)))
    assert table.column_names == ["class", "proba_cat", "proba_dog", "proba_eel"]
    assert table.column("class").to_pylist() == ["eel", "cat", "dog"]
    assert table.column("proba_eel").to_pylist() == pytest.approx([0.7, 0.25, 0.0])
    csv = _write(tmp_path, "csv", NAMES, Outputs(top_k=2)).read_text().splitlines()
    assert csv[0] == "class,top1_class,top1_proba,top2_class,top2_proba"
    assert csv[1] == '"eel","eel",0.7,"dog",0.2'
    assert pa_csv.read_csv(_write(tmp_path, "csv", ["0", "1", "2"], Outputs())).column(
        "class"
    ).to_pylist() == [2, 0, 1]


def test_jsonl_rows(tmp_path: Path) -> None:
    rows = [
        json.loads(line)
        for line in _write(tmp_path, "jsonl", NAMES, Outputs(proba=True)).read_text().splitlines()
    ]
    assert rows[0] == {"class": "eel", "proba": {"cat": 0.1, "dog": 0.2, "eel": 0.7}}
    rows = [
        json.loads(line)
        for line in _write(tmp_path, "jsonl", ["0", "1", "2"], Outputs(top_k=2)).read_text().splitlines()
    ]
    assert rows[2] == {"class": 1, "top_k": [{"class": 1, "proba": 1.0}, {"class": 0, "proba": 0.0}]}


def test_numpy_outputs(tmp_path: Path) -> None:
    z = np.load(_write(tmp_path, "npz", NAMES, Outputs(top_k=2)))
    assert sorted(z.files) == ["class", "classes", "top_k_class", "top_k_proba"]
    assert z["class"].tolist() == ["eel", "cat", "dog"] and z["classes"].tolist() == NAMES
    assert z["top_k_class"].tolist() == [["eel", "dog"], ["cat", "dog"], ["dog", "cat"]]
    assert np.load(_write(tmp_path, "npy", ["0", "1", "2"], Outputs())).tolist() == [2, 0, 1]
    for outputs in (Outputs(proba=True), Outputs(top_k=2)):  # the class would be lost: refused
        with pytest.raises(ValueError, match=r"an \.npy output holds the class alone"):
            _write(tmp_path, "npy", NAMES, outputs)

"""What regressors and language models write (named value columns), text inputs read as rows, and the
windows a language model scores a long text in."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
import pytest

from skylift.batch._likelihood import COLUMNS, LikelihoodPredictor
from skylift.batch._outputs import write_output
from skylift.batch._predictor import Outputs, decode_part, encode_part
from skylift.batch._text_source import TextSource, read_texts
from skylift.errors import DataError

TARGETS = Outputs(columns=(("price", "float32"), ("rating", "float32")))
COLUMNS_OUT = Outputs(columns=COLUMNS)


def _parts(outputs: Outputs) -> list[list[np.ndarray]]:
    if outputs.columns == COLUMNS:
        return [[np.array([-1.5, -20.25]), np.array([2, 9])], [np.array([0.0]), np.array([0])]]
    values = [np.array([[1.5, 2.0], [3.25, -1.0]], np.float32), np.array([[0.1, 7.0]], np.float32)]
    return [[v[:, 0], v[:, 1]] for v in values]


def _write(tmp_path: Path, fmt: str, outputs: Outputs) -> Path:
    path = tmp_path / f"out.{fmt}"
    with open(path, "wb") as f:
        write_output(f, fmt, [], outputs, 3, lambda: iter(_parts(outputs)))
    return path


def test_value_columns_round_trip_as_parts() -> None:
    arrays = _parts(COLUMNS_OUT)[0]
    back = decode_part(io.BytesIO(encode_part(arrays)), COLUMNS_OUT)
    assert [a.tolist() for a in back] == [a.tolist() for a in arrays]


@pytest.mark.parametrize("fmt", ["csv", "parquet", "jsonl", "npz", "npy"])
def test_a_regressor_writes_one_column_per_target(tmp_path: Path, fmt: str) -> None:
    path = _write(tmp_path, fmt, TARGETS)
    price, rating = [1.5, 3.25, 0.1], [2.0, -1.0, 7.0]
    if fmt == "csv":
        assert path.read_text().splitlines()[0] == "price,rating"
        t = pa_csv.read_csv(path)
    elif fmt == "parquet":
        t = pq.read_table(path)
    elif fmt == "jsonl":
        rows = [json.loads(line) for line in path.read_text().splitlines()]
        assert rows[2] == {"price": 0.1, "rating": 7.0}  # float32 written as its shortest text
        return
    elif fmt == "npz":
        z = np.load(path)
        assert sorted(z.files) == ["price", "rating"]
        np.testing.assert_array_equal(z["price"], np.float32(price))
        return
    else:
        np.testing.assert_array_equal(np.load(path), np.float32([price, rating]).T)
        return
    np.testing.assert_allclose(t.column("price").to_numpy(), price, rtol=1e-7)
    np.testing.assert_allclose(t.column("rating").to_numpy(), rating, rtol=1e-7)


@pytest.mark.parametrize("fmt", ["csv", "parquet", "jsonl", "npz"])
def test_a_language_model_writes_log_likelihoods_and_token_counts(tmp_path: Path, fmt: str) -> None:
    path = _write(tmp_path, fmt, COLUMNS_OUT)
    if fmt == "jsonl":
        assert path.read_text().splitlines() == [
            '{"log_likelihood":-1.5,"tokens":2}',
            '{"log_likelihood":-20.25,"tokens":9}',
            '{"log_likelihood":0.0,"tokens":0}',
        ]
    elif fmt == "npz":
        z = np.load(path)
        assert z["log_likelihood"].dtype == np.float64 and z["tokens"].tolist() == [2, 9, 0]
    else:
        t = pq.read_table(path) if fmt == "parquet" else pa_csv.read_csv(path)
        assert t.column_names == ["log_likelihood", "tokens"]
        assert t.column("tokens").to_pylist() == [2, 9, 0]


def test_text_lines_and_chunks(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_bytes(b"one\r\n\ntwo three\n")
    texts = read_texts(str(tmp_path / "a.txt"), "text", lines=True)
    assert texts == ["one", "", "two three"]
    source = TextSource(str(tmp_path / "a.txt"), texts, 2, lambda t: list(t))
    assert (source.chunk_count, source.rows) == (2, 3)
    assert list(source.read(0, 1)) == [["one"], [""]] and list(source.read(1, 5)) == [["two three"]]
    assert source.identity()[0]["size"] == 16


def test_bad_text_inputs_name_the_problem(tmp_path: Path) -> None:
    (tmp_path / "bad.txt").write_bytes(b"fine\nno \xff good\n")
    with pytest.raises(DataError, match=r"bad.txt: not UTF-8 text: byte offset 8 \(line 2\)"):
        read_texts(str(tmp_path / "bad.txt"), "text", lines=True)
    with pytest.raises(DataError, match=r"reads text: give a .csv, .parquet, .jsonl file, not .txt"):
        read_texts(str(tmp_path / "bad.txt"), "text", lines=False)
    (tmp_path / "t.csv").write_text("body,x\nhello,1\n")
    with pytest.raises(DataError, match=r"columns present: body, x \(--text-column names the text column\)"):
        read_texts(str(tmp_path / "t.csv"), "text", lines=False)


def test_a_long_text_is_scored_in_windows_after_an_end_of_text_token() -> None:
    p = LikelihoodPredictor.__new__(LikelihoodPredictor)
    p.block, p.eos_id, p.vocab = 2, 1, 10
    x, y, owner = p.windows(np.array([5, 6, 7, 8, 9, 4, 3, 2]), np.array([0, 3, 5]))
    assert owner.tolist() == [1, 1, 2, 2, 2]  # the empty text has no window
    assert x.tolist() == [[1, 5], [6, 7], [1, 8], [9, 4], [3, 2]]  # a last input with no target is unscored
    assert y.tolist() == [[5, 6], [7, -100], [8, 9], [4, 3], [2, -100]]

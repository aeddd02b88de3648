"""Tabular sources: .csv and .parquet with a label column."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from skylift.data import read_source
from skylift.errors import DataError


def _write(path: Path, table: pa.Table) -> str:
    if path.suffix == ".csv":
        import pyarrow.csv as pa_csv

        pa_csv.write_csv(table, path)
    else:
        pq.write_table(table, path)
    return str(path)


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_integer_labels_keep_ids_and_columns_keep_order(tmp_path: Path, suffix: str) -> None:
    table = pa.table({"b": [1.5, 2.5, 3.5, 4.5], "label": [1, 0, 2, 1], "a": [10, 20, 30, 40]})
    data, test = read_source(_write(tmp_path / f"t{suffix}", table))
    assert test is None
    np.testing.assert_array_equal(data.x, [[1.5, 10], [2.5, 20], [3.5, 30], [4.5, 40]])
    np.testing.assert_array_equal(data.y, [1, 0, 2, 1])
    assert data.classes == ("0", "1", "2")


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_string_labels_in_a_named_column(tmp_path: Path, suffix: str) -> None:
    table = pa.table({"f": [0.0, 1.0, 2.0], "kind": ["dog", "cat", "dog"]})
    data, _ = read_source(_write(tmp_path / f"t{suffix}", table), label_column="kind")
    assert data.classes == ("cat", "dog")
    np.testing.assert_array_equal(data.y, [1, 0, 1])
    assert data.sample_shape == (1,)


def test_parquet_categorical_labels_and_uint8_pixels(tmp_path: Path) -> None:
    table = pa.table(
        {
            "p0": pa.array([0, 255, 51], pa.uint8()),
            "flag": [True, False, True],
            "label": pa.array(["x", "y", "x"]).dictionary_encode(),
        }
    )
    data, _ = read_source(_write(tmp_path / "t.parquet", table))
    np.testing.assert_allclose(data.x, [[0.0, 1], [1.0, 0], [0.2, 1]])
    assert data.classes == ("x", "y")


def test_test_labels_are_mapped_with_train_classes(tmp_path: Path) -> None:
    path = _write(tmp_path / "t.csv", pa.table({"f": [1.0, 2.0], "label": ["dog", "cat"]}))
    data, _ = read_source(path, classes=("ant", "cat", "dog"))
    np.testing.assert_array_equal(data.y, [2, 1])
    assert data.classes == ("ant", "cat", "dog")
    with pytest.raises(
        DataError, match=r"t.csv: label 'dog' \(row 0\) is not one of the train classes \(ant, cat\)"
    ):
        read_source(path, classes=("ant", "cat"))


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_label_column_absent_lists_columns(tmp_path: Path, suffix: str) -> None:
    path = _write(tmp_path / f"t{suffix}", pa.table({"a": [1], "target": [0]}))
    with pytest.raises(
        DataError, match=r"t\.\w+: label column 'label' not found; columns present: a, target$"
    ):
        read_source(path)


def test_non_numeric_csv_cell_names_column_and_row(tmp_path: Path) -> None:
    (tmp_path / "t.csv").write_text("a,b,label\n1,2,0\n3,4.5e3,1\n5,oops,0\n7,8,1\n")
    with pytest.raises(DataError, match=r"t.csv: column 'b' is not numeric: row 2 holds 'oops'$"):
        read_source(str(tmp_path / "t.csv"))


def test_nan_and_empty_cells(tmp_path: Path) -> None:
    (tmp_path / "n.csv").write_text("a,label\n1,0\nNaN,1\n")
    with pytest.raises(DataError, match=r"n.csv: feature row 1 contains NaN"):
        read_source(str(tmp_path / "n.csv"))
    (tmp_path / "e.csv").write_text("a,b,label\n1,2,0\n3,,1\n")
    with pytest.raises(DataError, match=r"e.csv: column 'b' has an empty cell at row 1"):
        read_source(str(tmp_path / "e.csv"))
    (tmp_path / "l.csv").write_text("a,label\n1,0\n3,\n")
    with pytest.raises(DataError, match=r"l.csv: label column 'label' is empty at row 1"):
        read_source(str(tmp_path / "l.csv"))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "file is empty"),
        ("a,label\n", "holds no data rows"),
        ("label\n1\n2\n", "holds only the label column 'label', no feature columns"),
        ("a,label\n1,0\n2\n", r"not a readable csv file \(CSV parse error"),
    ],
)
def test_csv_shape_problems(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "t.csv").write_text(text)
    with pytest.raises(DataError, match=f"t.csv: {message}"):
        read_source(str(tmp_path / "t.csv"))


def test_corrupt_or_truncated_parquet(tmp_path: Path) -> None:
    raw = Path(
        _write(tmp_path / "ok.parquet", pa.table({"a": np.arange(100.0), "label": np.arange(100) % 2}))
    )
    (tmp_path / "cut.parquet").write_bytes(raw.read_bytes()[:-50])
    with pytest.raises(DataError, match=r"cut.parquet: not a readable parquet file \(.+\)$"):
        read_source(str(tmp_path / "cut.parquet"))
    (tmp_path / "junk.parquet").write_bytes(b"PAR1 this is not parquet at all")
    with pytest.raises(DataError, match=r"junk.parquet: not a readable parquet file"):
        read_source(str(tmp_path / "junk.parquet"))


def test_non_numeric_parquet_column_type(tmp_path: Path) -> None:
    table = pa.table({"when": pa.array([1, 2], pa.timestamp("s")), "label": [0, 1]})
    with pytest.raises(
        DataError, match=r"t.parquet: column 'when' has type timestamp\[m?s\], expected numbers"
    ):
        read_source(_write(tmp_path / "t.parquet", table))


def test_gzipped_csv(tmp_path: Path) -> None:
    import gzip

    (tmp_path / "t.csv.gz").write_bytes(gzip.compress(b"a,b,label\n1,2,x\n3,4,y\n"))
    data, _ = read_source(str(tmp_path / "t.csv.gz"))
    np.testing.assert_array_equal(data.x, [[1, 2], [3, 4]])
    assert data.classes == ("x", "y")

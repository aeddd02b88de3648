"""open_features: every source read a chunk at a time equals what training reads; errors name file and row."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
import pytest

from skylift.data import open_features, read_source
from skylift.errors import DataError

RNG = np.random.default_rng(0)
X = RNG.random((1000, 12)).astype(np.float32)
Y = RNG.integers(0, 3, 1000)


def _all(source: str, chunk_rows: int = 128, batch_rows: int = 50) -> np.ndarray:
    with open_features(source, chunk_rows=chunk_rows) as s:
        batches = [b for k in range(s.chunk_count) for b in s.read(k, batch_rows)]
    assert all(len(b) <= batch_rows for b in batches)
    return np.concatenate([b.reshape(len(b), -1) for b in batches])


def _table() -> pa.Table:
    return pa.table({**{f"f{j}": X[:, j] for j in range(12)}, "label": Y})


def _idx(path: Path, images: np.ndarray, compress: bool = False) -> Path:
    header = bytes([0, 0, 8, 3]) + np.array(images.shape, ">u4").tobytes()
    opener = gzip.open if compress else open
    with opener(path, "wb") as f:
        f.write(header + images.tobytes())
    return path


def test_every_format_reads_what_training_reads(tmp_path: Path) -> None:
    np.save(tmp_path / "x.npy", X)
    np.save(tmp_path / "y.npy", Y)
    np.save(tmp_path / "xf.npy", np.asfortranarray(X))
    np.savez(tmp_path / "d.npz", x=X, y=Y)
    np.savez_compressed(tmp_path / "dc.npz", x=X, y=Y)
    pq.write_table(_table(), tmp_path / "d.parquet", row_group_size=300)
    pa_csv.write_csv(_table(), tmp_path / "d.csv")
    with gzip.open(tmp_path / "d.csv.gz", "wb") as g:
        g.write((tmp_path / "d.csv").read_bytes())
    for name in ("x.npy", "xf.npy", "x.npy,y.npy", "d.npz", "dc.npz", "d.parquet", "d.csv", "d.csv.gz"):
        got = _all(",".join(str(tmp_path / n) for n in name.split(",")))
        np.testing.assert_array_equal(got, X, err_msg=name)
    ds, _ = read_source(str(tmp_path / "d.csv"))  # the training reader, same float rounding
    np.testing.assert_array_equal(_all(str(tmp_path / "d.csv")), ds.x)


def test_idx_images_plain_and_gzip_are_scaled_pixels(tmp_path: Path) -> None:
    images = RNG.integers(0, 256, (300, 4, 5), dtype=np.uint8)
    expect = images.reshape(300, 20).astype(np.float32) / np.float32(255)
    for path in (
        _idx(tmp_path / "a-images-idx3-ubyte", images),
        _idx(tmp_path / "b-images-idx3-ubyte.gz", images, True),
    ):
        np.testing.assert_array_equal(_all(str(path)), expect)
    labels = tmp_path / "a-labels-idx1-ubyte"
    labels.write_bytes(bytes([0, 0, 8, 1]) + np.array([3], ">u4").tobytes() + b"\x00\x01\x02")
    with pytest.raises(DataError, match="is an IDX labels file; give the images file"):
        open_features(str(labels))


def test_uint8_npy_is_scaled_like_training_and_builtin_works(tmp_path: Path) -> None:
    pixels = RNG.integers(0, 256, (50, 6), dtype=np.uint8)
    np.save(tmp_path / "p.npy", pixels)
    np.testing.assert_array_equal(_all(str(tmp_path / "p.npy")), pixels.astype(np.float32) / np.float32(255))
    digits, _ = read_source("builtin:digits")
    np.testing.assert_array_equal(_all("builtin:digits"), digits.x)


@pytest.mark.parametrize(
    ("chunk_rows", "batch_rows"), [(128, 50), (300, 300), (77, 1000), (5, 3), (1000, 64)]
)
def test_chunks_read_in_any_order_cover_the_rows_exactly(
    tmp_path: Path, chunk_rows: int, batch_rows: int
) -> None:
    pq.write_table(_table(), tmp_path / "d.parquet", row_group_size=300)
    pa_csv.write_csv(_table(), tmp_path / "d.csv")
    for name in ("d.parquet", "d.csv"):
        with open_features(str(tmp_path / name), chunk_rows=chunk_rows) as s:
            order = list(range(s.chunk_count))
            RNG.shuffle(order)
            parts = {k: [b for b in s.read(k, batch_rows)] for k in order}
        got = np.concatenate([b for k in sorted(parts) for b in parts[k]])
        np.testing.assert_array_equal(got, X, err_msg=name)


def test_folder_reads_files_in_sorted_order_and_skips_hidden_and_labels(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    np.save(folder / "b.npy", X[:400])
    pq.write_table(pa.table({f"f{j}": X[400:, j] for j in range(12)}), folder / "c.parquet")
    np.save(folder / "a.npy", X[:0])  # an empty part file, as Spark writes
    (folder / "_SUCCESS").write_text("")
    (folder / ".hidden.npy").write_bytes(b"junk")
    with open_features(str(folder), chunk_rows=128) as s:
        assert s.files == (str(folder / "a.npy"), str(folder / "b.npy"), str(folder / "c.parquet"))
        assert s.rows == 1000 and s.chunk_count == 4 + 5
    np.testing.assert_array_equal(_all(str(folder)), X)
    (folder / "notes.txt").write_text("hi")
    with pytest.raises(DataError, match=r"holds entries that are not data files \(notes.txt\)"):
        open_features(str(folder))


def test_reading_a_large_npy_keeps_memory_bounded(tmp_path: Path) -> None:
    """128 MiB of features read through a memory map: the pages of used rows are handed back."""
    path = tmp_path / "big.npy"
    x = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(40960, 784))
    x[:] = 1.0
    del x

    def rss() -> int:
        return int(Path("/proc/self/status").read_text().split("VmRSS:")[1].split()[0]) * 1024

    before, peak, total = rss(), 0, 0.0
    with open_features(str(path), chunk_rows=8192) as s:
        for k in range(s.chunk_count):
            for b in s.read(k, 1024):
                total += float(b[:, 0].sum())
                peak = max(peak, rss())
    assert total == 40960
    assert peak - before < 32 * 2**20, f"RSS grew by {(peak - before) / 2**20:.0f} MiB"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"a,b,label\n1,2,0\n3,x,1\n", r"d.csv: column 'b' is not numeric: row 1 holds 'x'"),
        (
            b"a,b,label\n1,2,0\n" * 1 + b"3,4,1\n" * 50 + b"5,6\n",
            r"d.csv: row 51 has 2 cells, the header has 3",
        ),
        (b"a,b,label\n1,2,0\n3,,1\n", r"d.csv: column 'b' has an empty cell at row 1"),
        (b"a,b,label\n1,2,0\n3,nan,1\n", r"d.csv: row 1 contains NaN"),
        (b"a,b,label\n1,2,0\n3,inf,1\n", r"d.csv: row 1 contains an infinite value"),
        (b"", r"d.csv: file is empty"),
        (b"label\n1\n", r"d.csv: holds no feature columns"),
    ],
)
def test_csv_errors_name_the_row(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "d.csv"
    path.write_bytes(content)
    with pytest.raises(DataError, match=message):
        _all(str(path), chunk_rows=4, batch_rows=2)


def test_csv_rows_are_located_in_later_chunks(tmp_path: Path) -> None:
    rows = [f"{i},{i}" for i in range(5000)]
    rows[4321] = "1,oops"
    path = tmp_path / "d.csv"
    path.write_text("a,b\n" + "\n".join(rows) + "\n")
    with open_features(str(path), chunk_rows=100) as s:
        assert s.chunk_count > 5
        with pytest.raises(DataError, match=r"column 'b' is not numeric: row 4321 holds 'oops'"):
            for k in range(s.chunk_count):
                list(s.read(k, 64))


def test_other_errors_are_one_line(tmp_path: Path) -> None:
    x = X.copy()
    x[777, 3] = np.nan
    np.save(tmp_path / "nan.npy", x)
    with pytest.raises(DataError, match=r"nan.npy: row 777 contains NaN$"):
        _all(str(tmp_path / "nan.npy"))
    np.save(tmp_path / "ok.npy", X)
    (tmp_path / "cut.npy").write_bytes((tmp_path / "ok.npy").read_bytes()[:-10])
    with pytest.raises(DataError, match=r"cut.npy: truncated"):
        open_features(str(tmp_path / "cut.npy"))
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(DataError, match="holds Python objects"):
        open_features(str(tmp_path / "obj.npy"))
    table = pa.table({"a": pa.array([1.0, None, 2.0]), "s": ["1", "2", "3"]})
    pq.write_table(table.select(["a"]), tmp_path / "null.parquet")
    with pytest.raises(DataError, match=r"null.parquet: column 'a' has an empty cell at row 1"):
        _all(str(tmp_path / "null.parquet"))
    pq.write_table(table, tmp_path / "str.parquet")
    with pytest.raises(DataError, match=r"str.parquet: column 's' has type string, expected numbers"):
        open_features(str(tmp_path / "str.parquet"))
    np.savez(tmp_path / "two.npz", a=X, b=X)
    with pytest.raises(DataError, match=r"no features array; found \['a', 'b'\]"):
        open_features(str(tmp_path / "two.npz"))
    folder = tmp_path / "mixed"
    folder.mkdir()
    np.save(folder / "a.npy", X)
    np.save(folder / "b.npy", X[:, :5])
    with pytest.raises(DataError, match=r"b.npy: samples have shape \[5\], but .*a.npy has \[12\]"):
        open_features(str(folder))
    for source, message in [
        ("", "input source is empty"),
        (str(tmp_path / "absent.npy"), "absent.npy: file not found"),
        ("s3://b/x.npy", "remote sources are not read"),
        (str(tmp_path / "x.txt"), "unsupported input"),
    ]:
        if source.endswith(".txt"):
            Path(source).write_text("1")
        with pytest.raises(DataError, match=message):
            open_features(source)

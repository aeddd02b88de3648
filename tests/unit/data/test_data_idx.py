"""MNIST IDX sources: plain and gzip files, single files and folders, and damaged files."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from skylift.data import read_source
from skylift.errors import DataError


def _idx(array: np.ndarray, code: int = 0x08) -> bytes:
    """An IDX file: 2 zero bytes, element type, ndim, big-endian uint32 sizes, then the data."""
    return bytes([0, 0, code, array.ndim]) + np.array(array.shape, ">u4").tobytes() + array.tobytes()


def _images(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 28, 28), dtype=np.uint8)


def _labels(n: int) -> np.ndarray:
    return (np.arange(n) % 10).astype(np.uint8)


def _write(folder: Path, stem: str, n: int, gz: bool = False, sep: str = "-") -> Path:
    suffix = ".gz" if gz else ""
    pack = gzip.compress if gz else bytes
    images = folder / f"{stem}-images{sep}idx3-ubyte{suffix}"
    images.write_bytes(pack(_idx(_images(n))))
    (folder / f"{stem}-labels{sep}idx1-ubyte{suffix}").write_bytes(pack(_idx(_labels(n))))
    return images


@pytest.mark.parametrize(("gz", "sep"), [(False, "-"), (True, "-"), (False, "."), (True, ".")])
def test_images_file_with_sibling_labels(tmp_path: Path, gz: bool, sep: str) -> None:
    images = _write(tmp_path, "train", 30, gz=gz, sep=sep)
    data, test = read_source(str(images))
    assert test is None
    assert data.x.shape == (30, 784) and data.x.dtype == np.float32  # flattened, like builtin:digits28
    np.testing.assert_array_equal(data.x, _images(30).reshape(30, -1) / np.float32(255))
    np.testing.assert_array_equal(data.y, _labels(30))
    assert data.classes == tuple(str(i) for i in range(10))


def test_labels_file_path_also_works(tmp_path: Path) -> None:
    _write(tmp_path, "train", 12)
    data, _ = read_source(str(tmp_path / "train-labels-idx1-ubyte"))
    assert len(data) == 12


def test_gzip_detected_by_magic_without_suffix(tmp_path: Path) -> None:
    (tmp_path / "a-images-idx3-ubyte").write_bytes(gzip.compress(_idx(_images(5))))
    (tmp_path / "a-labels-idx1-ubyte").write_bytes(_idx(_labels(5)))
    data, _ = read_source(str(tmp_path / "a-images-idx3-ubyte"))
    assert len(data) == 5


@pytest.mark.parametrize("gz", [False, True])
def test_folder_gives_train_and_bundled_test(tmp_path: Path, gz: bool) -> None:
    _write(tmp_path, "train", 40, gz=gz)
    _write(tmp_path, "t10k", 10, gz=gz)
    (tmp_path / "README.txt").write_text("other files are ignored")
    data, test = read_source(str(tmp_path))
    assert test is not None
    assert len(data) == 40 and len(test) == 10 and test.sample_shape == (784,)
    assert test.classes == data.classes


def test_folder_with_train_only_and_empty_folder(tmp_path: Path) -> None:
    _write(tmp_path, "train", 10)
    data, test = read_source(str(tmp_path))
    assert len(data) == 10 and test is None
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(
        DataError, match=r"empty: folder holds no IDX training files, expected train-images-idx3-ubyte"
    ):
        read_source(str(empty))


def test_folder_missing_train_labels(tmp_path: Path) -> None:
    (tmp_path / "train-images-idx3-ubyte").write_bytes(_idx(_images(3)))
    with pytest.raises(DataError, match=r"folder has train-\* IDX files but no train-labels-idx1-ubyte"):
        read_source(str(tmp_path))


def test_missing_sibling(tmp_path: Path) -> None:
    (tmp_path / "x-images-idx3-ubyte").write_bytes(_idx(_images(3)))
    with pytest.raises(
        DataError, match=r"x-images-idx3-ubyte: its labels file x-labels-idx1-ubyte\[.gz\] was not found"
    ):
        read_source(str(tmp_path / "x-images-idx3-ubyte"))


def _bad_images(tmp_path: Path, raw: bytes, name: str = "b-images-idx3-ubyte") -> str:
    (tmp_path / name).write_bytes(raw)
    (tmp_path / "b-labels-idx1-ubyte").write_bytes(_idx(_labels(4)))
    return str(tmp_path / name)


GOOD = _idx(_images(4))


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"\x01\x02" + GOOD[2:], "wrong magic number 0102"),
        (
            GOOD[:2] + b"\x0d" + GOOD[3:],
            r"unsupported IDX element type 0x0d; only 0x08 \(unsigned byte\) is read",
        ),
        (GOOD[:3] + b"\x02" + GOOD[4:], "IDX header has 2 dimensions, expected 3"),
        (GOOD[:-1], r"truncated: header promises 3136 bytes of data \(4, 28, 28\), the file holds 3135"),
        (GOOD + b"\x00", "has trailing bytes: header promises 3136 bytes"),
        (GOOD[:10], "truncated: header ends after 6 of 12 bytes"),
        (
            GOOD[:4] + b"\xff\xff\xff\xff" + GOOD[8:],
            "truncated: header promises 3367254359280 bytes .* holds 3136$",
        ),
        (_idx(_images(5)), "holds 5 images but b-labels-idx1-ubyte holds 4 labels"),
    ],
)
def test_damaged_plain_file(tmp_path: Path, raw: bytes, message: str) -> None:
    path = _bad_images(tmp_path, raw)
    with pytest.raises(DataError, match=f"^{path}: {message}"):
        read_source(path)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (gzip.compress(GOOD)[:-12], r"corrupt gzip data \(Compressed file ended"),
        (gzip.compress(GOOD)[:-8] + b"\0" * 8, r"corrupt gzip data \(CRC check failed"),
        (b"\x1f\x8b" + b"garbage" * 10, "corrupt gzip data"),
        (b"not gzip at all", r"corrupt gzip data \(Not a gzipped file"),
        (gzip.compress(GOOD + b"extra"), "has trailing bytes after the 3136 bytes its header promises"),
        (gzip.compress(GOOD[:-100]), "truncated: data ends after 3036 of 3136 bytes"),
        (
            gzip.compress(GOOD[:4] + b"\xff\xff\xff\xff" + GOOD[8:]),
            "truncated: header promises 3367254359280 bytes .*, more than a [0-9]+-byte gzip file can hold$",
        ),
    ],
)
def test_damaged_gzip_file(tmp_path: Path, raw: bytes, message: str) -> None:
    path = _bad_images(tmp_path, raw, name="b-images-idx3-ubyte.gz")
    with pytest.raises(DataError, match=f"^{path}: {message}"):
        read_source(path)

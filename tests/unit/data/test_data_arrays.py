"""NumPy sources: .npz (both layouts) and .npy pairs (explicit and by sibling name)."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest

from skylift.data import read_source
from skylift.errors import DataError


def _xy(n: int = 12, d: int = 4, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.random((n, d)).astype(np.float32), np.arange(n) % 3


@pytest.mark.parametrize(
    ("xkey", "ykey"), [("x", "y"), ("X", "y"), ("features", "labels"), ("images", "labels")]
)
def test_npz_pair_layouts(tmp_path: Path, xkey: str, ykey: str) -> None:
    x, y = _xy()
    np.savez(tmp_path / "d.npz", **{xkey: x, ykey: y})
    data, test = read_source(str(tmp_path / "d.npz"))
    assert test is None
    np.testing.assert_array_equal(data.x, x)
    np.testing.assert_array_equal(data.y, y)
    assert data.classes == ("0", "1", "2")


def test_npz_keras_layout_bundles_the_test_pair_as_uint8_pixels(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    x_train = rng.integers(0, 256, (20, 28, 28), dtype=np.uint8)
    x_test = rng.integers(0, 256, (6, 28, 28), dtype=np.uint8)
    y_train, y_test = (np.arange(20) % 4).astype(np.uint8), np.array([3, 3, 2, 1, 0, 0], np.uint8)
    np.savez_compressed(
        tmp_path / "mnist.npz", x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test
    )
    data, test = read_source(str(tmp_path / "mnist.npz"))
    assert test is not None
    assert data.sample_shape == (28, 28) and len(data) == 20 and len(test) == 6
    np.testing.assert_array_equal(data.x, x_train / np.float32(255))  # uint8 = pixel bytes, scaled
    np.testing.assert_array_equal(test.y, y_test)
    assert test.classes == data.classes == ("0", "1", "2", "3")


def test_npz_bundled_test_label_outside_train_classes(tmp_path: Path) -> None:
    x, y = _xy()
    np.savez(tmp_path / "m.npz", x_train=x, y_train=y, x_test=x[:2], y_test=np.array([0, 7]))
    with pytest.raises(
        DataError, match=r"m.npz\[x_test\]: label '7' \(row 1\) is not one of the train classes"
    ):
        read_source(str(tmp_path / "m.npz"))


def test_npz_string_labels_and_train_only_keras_layout(tmp_path: Path) -> None:
    x, _ = _xy(4)
    np.savez(tmp_path / "s.npz", x_train=x, y_train=np.array(["b", "a", "b", "c"]))
    data, test = read_source(str(tmp_path / "s.npz"))
    assert test is None and data.classes == ("a", "b", "c")
    np.testing.assert_array_equal(data.y, [1, 0, 1, 2])


def test_npz_unknown_keys_lists_them(tmp_path: Path) -> None:
    np.savez(tmp_path / "k.npz", a=np.zeros(3), b=np.zeros(3))
    with pytest.raises(DataError, match=r"k.npz: no known array names; found \['a', 'b'\], expected x/y"):
        read_source(str(tmp_path / "k.npz"))


def test_npz_with_pickled_objects_is_refused(tmp_path: Path) -> None:
    np.savez(tmp_path / "o.npz", x=np.array([{"a": 1}, None], dtype=object), y=np.zeros(2))
    with pytest.raises(
        DataError, match=r"o.npz\[x.npy\]: holds Python objects; pickled data is never loaded"
    ):
        read_source(str(tmp_path / "o.npz"))


@pytest.mark.parametrize("cut", [0.3, 0.9])
def test_truncated_npz(tmp_path: Path, cut: float) -> None:
    x, y = _xy(200)
    np.savez(tmp_path / "full.npz", x=x, y=y)
    raw = (tmp_path / "full.npz").read_bytes()
    (tmp_path / "cut.npz").write_bytes(raw[: int(len(raw) * cut)])
    with pytest.raises(DataError, match=r"cut.npz: not a readable .npz archive \(.+\)$"):
        read_source(str(tmp_path / "cut.npz"))


def test_corrupt_npz_member_fails_its_crc(tmp_path: Path) -> None:
    x, y = _xy(200)
    np.savez(tmp_path / "c.npz", x=x, y=y)
    with zipfile.ZipFile(tmp_path / "c.npz") as archive:
        offset = archive.getinfo("x.npy").header_offset + 1000  # inside the array data
    raw = bytearray((tmp_path / "c.npz").read_bytes())
    raw[offset] ^= 0xFF
    (tmp_path / "c.npz").write_bytes(bytes(raw))
    with pytest.raises(DataError, match=r"c.npz: not a readable .npz archive .*CRC"):
        read_source(str(tmp_path / "c.npz"))


def test_npz_member_header_claiming_more_data_than_stored(tmp_path: Path) -> None:
    x, y = _xy()
    np.savez(tmp_path / "h.npz", x=x, y=y)
    raw = (tmp_path / "h.npz").read_bytes().replace(b"(12, 4)", b"(99, 4)", 1)
    (tmp_path / "h.npz").write_bytes(raw)  # the header lies before the CRC can be checked
    with pytest.raises(DataError, match=r"h.npz"):
        read_source(str(tmp_path / "h.npz"))


def test_npy_explicit_pair(tmp_path: Path) -> None:
    x, y = _xy()
    np.save(tmp_path / "feats.npy", x)
    np.save(tmp_path / "targets.npy", y.astype(np.float64))  # whole floats are class ids
    data, test = read_source(f"{tmp_path / 'feats.npy'}, {tmp_path / 'targets.npy'}")
    assert test is None
    np.testing.assert_array_equal(data.x, x)
    np.testing.assert_array_equal(data.y, y)


@pytest.mark.parametrize(
    ("features", "labels"),
    [
        ("x_train.npy", "y_train.npy"),
        ("X.npy", "y.npy"),
        ("features_a.npy", "labels_a.npy"),
        ("images.npy", "labels.npy"),
    ],
)
def test_npy_labels_found_by_sibling_name(tmp_path: Path, features: str, labels: str) -> None:
    x, y = _xy()
    np.save(tmp_path / features, x)
    np.save(tmp_path / labels, y)
    data, _ = read_source(str(tmp_path / features))
    np.testing.assert_array_equal(data.y, y)


def test_npy_without_sibling_says_how_to_name_them(tmp_path: Path) -> None:
    np.save(tmp_path / "x_train.npy", np.zeros((2, 2)))
    with pytest.raises(
        DataError, match=r"x_train.npy: no labels file found beside it \(looked for y_train.npy"
    ):
        read_source(str(tmp_path / "x_train.npy"))
    np.save(tmp_path / "data.npy", np.zeros((2, 2)))
    with pytest.raises(DataError, match=r"data.npy: no labels file found beside it; name the pair x"):
        read_source(str(tmp_path / "data.npy"))


def test_npy_pair_missing_part_and_bad_pair(tmp_path: Path) -> None:
    np.save(tmp_path / "x.npy", np.zeros((2, 2)))
    with pytest.raises(DataError, match=r"nope.npy: file not found$"):
        read_source(f"{tmp_path / 'x.npy'},{tmp_path / 'nope.npy'}")
    with pytest.raises(DataError, match=r"a comma joins exactly two .npy files"):
        read_source(f"{tmp_path / 'x.npy'},{tmp_path / 'y.csv'}")


def test_npy_truncated_trailing_and_garbage(tmp_path: Path) -> None:
    x, y = _xy()
    np.save(tmp_path / "y.npy", y)
    np.save(tmp_path / "x.npy", x)
    raw = (tmp_path / "x.npy").read_bytes()
    (tmp_path / "x.npy").write_bytes(raw[:-5])
    with pytest.raises(
        DataError, match=r"x.npy: truncated: header promises 192 bytes of float32 data, file holds 187"
    ):
        read_source(str(tmp_path / "x.npy"))
    (tmp_path / "x.npy").write_bytes(raw + b"junk")
    with pytest.raises(DataError, match=r"x.npy: has trailing bytes"):
        read_source(str(tmp_path / "x.npy"))
    (tmp_path / "x.npy").write_bytes(b"not an array at all")
    with pytest.raises(DataError, match=r"x.npy: not a valid .npy array \(.+\)$"):
        read_source(str(tmp_path / "x.npy"))
    (tmp_path / "x.npy").write_bytes(raw.replace(b"(12, 4)", b"(12000000000, 4)", 1))
    with pytest.raises(DataError, match=r"x.npy: truncated: header promises 192000000000 bytes"):
        read_source(str(tmp_path / "x.npy"))


def test_npy_fortran_order_and_1d_features(tmp_path: Path) -> None:
    x, y = _xy()
    np.save(tmp_path / "x.npy", np.asfortranarray(x))
    np.save(tmp_path / "y.npy", y)
    data, _ = read_source(str(tmp_path / "x.npy"))
    np.testing.assert_array_equal(data.x, x)
    np.save(tmp_path / "x.npy", x[:, 0])
    data, _ = read_source(str(tmp_path / "x.npy"))
    assert data.sample_shape == (1,)


def test_nan_in_features_names_the_row(tmp_path: Path) -> None:
    x, y = _xy()
    x[7, 2] = np.nan
    np.savez(tmp_path / "n.npz", x=x, y=y)
    with pytest.raises(DataError, match=r"n.npz: feature row 7 contains NaN$"):
        read_source(str(tmp_path / "n.npz"))


@pytest.mark.parametrize(
    ("x", "y", "message"),
    [
        (np.zeros((5, 2)), np.zeros(4, int), "5 feature rows but 4 labels"),
        (np.zeros((0, 2)), np.zeros(0, int), "holds no rows"),
        (np.zeros((3, 2)), np.eye(3, dtype=int), r"labels must be 1-D .* \(one-hot labels\?"),
        (np.array([["a", "b"]] * 3), np.zeros(3, int), "features must be numeric, got dtype <U1"),
        (np.zeros((3, 0)), np.zeros(3, int), "samples have no features"),
    ],
)
def test_array_validation(tmp_path: Path, x: np.ndarray, y: np.ndarray, message: str) -> None:
    np.savez(tmp_path / "v.npz", x=x, y=y)
    with pytest.raises(DataError, match=f"v.npz: {message}"):
        read_source(str(tmp_path / "v.npz"))

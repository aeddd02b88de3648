"""The public surface of skylift.data and the Dataset / Splits invariants."""

from __future__ import annotations

import re
import subprocess
import sys

import numpy as np
import pytest

import skylift.data
from skylift.data import Dataset, Splits
from skylift.errors import DataError


def test_public_api_is_pinned() -> None:
    assert sorted(skylift.data.__all__) == [
        "Dataset",
        "Splits",
        "load_splits",
        "read_source",
        "stratified_split",
    ]


def test_import_loads_no_heavy_libraries() -> None:
    heavy = "('torch', 'sklearn', 'pyarrow', 'skylift.spec')"
    code = f"import sys, skylift.data; print(sorted(m for m in {heavy} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def _ds(n: int = 6, classes: tuple[str, ...] = ("a", "b", "c")) -> Dataset:
    x = np.arange(n * 2, dtype=np.float64).reshape(n, 2)
    return Dataset(x, np.arange(n) % len(classes), classes)


def test_dataset_converts_dtypes_and_reports_shape() -> None:
    ds = _ds()
    assert ds.x.dtype == np.float32 and ds.y.dtype == np.int64
    assert len(ds) == 6 and ds.sample_shape == (2,)
    assert repr(ds) == "Dataset(n=6, sample_shape=(2,), classes=('a', 'b', 'c'))"


def test_dataset_keeps_multi_dimensional_samples() -> None:
    ds = Dataset(np.zeros((3, 1, 4, 4), np.float32), np.zeros(3, np.int64), ("z",))
    assert ds.sample_shape == (1, 4, 4)


@pytest.mark.parametrize(
    ("x", "y", "classes", "message"),
    [
        (np.zeros(3), np.zeros(3, int), ("a",), "shape (N, *sample_shape)"),
        (np.zeros((3, 2)), np.zeros((3, 1), int), ("a",), "1-D"),
        (np.zeros((3, 2)), np.zeros(3), ("a",), "integer class ids"),
        (np.zeros((3, 2)), np.zeros(2, int), ("a",), "3 feature rows but 2 labels"),
        (np.zeros((3, 2)), np.array([0, 1, 2]), ("a", "b"), "label id 2 is outside [0, 2)"),
        (np.zeros((3, 2)), np.array([0, -1, 0]), ("a", "b"), "label id -1"),
        (np.zeros((3, 2)), np.zeros(3, int), ("a", "a"), "distinct"),
        (np.zeros((3, 2)), np.zeros(3, int), (), "non-empty tuple"),
        (np.array([["a"], ["b"], ["c"]]), np.zeros(3, int), ("a",), "numeric"),
    ],
)
def test_dataset_rejects_broken_invariants(
    x: np.ndarray, y: np.ndarray, classes: tuple[str, ...], message: str
) -> None:
    with pytest.raises(DataError, match=re.escape(message)):
        Dataset(x, y, classes)


def test_dataset_names_the_first_non_finite_row() -> None:
    x = np.zeros((5, 3), np.float32)
    x[2, 1] = np.nan
    x[4, 0] = np.inf
    with pytest.raises(DataError, match=r"^feature row 2 contains NaN \(and 1 more rows\)$"):
        Dataset(x, np.zeros(5, np.int64), ("a",))
    with pytest.raises(DataError, match=r"row 0 contains an infinite value"):
        Dataset(np.array([[1e39]]), np.zeros(1, np.int64), ("a",))  # overflows float32


def test_subset_by_index_and_mask_keeps_classes() -> None:
    ds = _ds()
    picked = ds.subset(np.array([4, 1]))
    assert picked.classes == ds.classes
    np.testing.assert_array_equal(picked.y, [1, 1])
    np.testing.assert_array_equal(picked.x[:, 0], [8, 2])
    assert len(ds.subset(ds.y == 0)) == 2
    assert len(ds.subset(np.array([], dtype=np.int64))) == 0
    with pytest.raises(DataError, match=r"integer indices or a boolean mask"):
        ds.subset(np.array([0.5]))


def test_fingerprint_is_stable_and_sensitive() -> None:
    ds = _ds()
    assert ds.fingerprint() == _ds().fingerprint()
    assert len(ds.fingerprint()) == 64
    changed_x = Dataset(ds.x.copy(), ds.y, ds.classes)
    changed_x.x[0, 0] += 1
    assert changed_x.fingerprint() != ds.fingerprint()
    assert Dataset(ds.x, ds.y, ("a", "b", "d")).fingerprint() != ds.fingerprint()
    assert Dataset(ds.x.reshape(6, 2, 1), ds.y, ds.classes).fingerprint() != ds.fingerprint()
    assert Dataset(np.asfortranarray(ds.x), ds.y, ds.classes).fingerprint() == ds.fingerprint()


def test_splits_share_classes_and_shape() -> None:
    ds = _ds()
    splits = Splits(train=ds, val=ds.subset(np.array([0])), test=None)
    assert splits.classes == ("a", "b", "c")
    with pytest.raises(DataError, match=r"val classes"):
        Splits(train=ds, val=_ds(classes=("a", "b")), test=None)
    other = Dataset(np.zeros((2, 3)), np.zeros(2, np.int64), ds.classes)
    with pytest.raises(DataError, match=r"test samples have shape \(3,\), train's have \(2,\)"):
        Splits(train=ds, val=ds, test=other)

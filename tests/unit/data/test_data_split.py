"""stratified_split properties and load_splits' choice of test set."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from skylift.data import Dataset, load_splits, read_source, stratified_split
from skylift.errors import DataError
from skylift.spec import DataSpec


def _ds(labels: list[int] | np.ndarray, n_classes: int | None = None) -> Dataset:
    """Row i has feature value i, so rows can be traced through a split."""
    y = np.asarray(labels, dtype=np.int64)
    k = n_classes or int(y.max()) + 1
    return Dataset(np.arange(len(y), dtype=np.float32).reshape(-1, 1), y, tuple(str(i) for i in range(k)))


def _rows(ds: Dataset) -> np.ndarray:
    return ds.x[:, 0].astype(np.int64)


def _expected_held(n: int, fraction: float) -> int:
    k = round(fraction * n)
    if fraction > 0 and n >= 2:
        k = max(k, 1)
    return min(k, max(n - 1, 0))


def _check_split(ds: Dataset, fraction: float, seed: int) -> tuple[Dataset, Dataset]:
    rest, held = stratified_split(ds, fraction, seed)
    rows_rest, rows_held = _rows(rest), _rows(held)
    assert not set(rows_rest) & set(rows_held)  # disjoint
    assert sorted([*rows_rest, *rows_held]) == list(range(len(ds)))  # covers every row
    assert list(rows_rest) == sorted(rows_rest) and list(rows_held) == sorted(rows_held)  # original order
    np.testing.assert_array_equal(rest.y, ds.y[rows_rest])  # rows keep their labels
    counts = np.bincount(ds.y, minlength=len(ds.classes))
    held_counts = np.bincount(held.y, minlength=len(ds.classes))
    assert list(held_counts) == [_expected_held(int(n), fraction) for n in counts]
    assert rest.classes == held.classes == ds.classes
    return rest, held


def test_split_proportions_per_class() -> None:
    ds = _ds([0] * 50 + [1] * 30 + [2] * 20 + [3] * 1 + [4] * 2)
    rest, held = _check_split(ds, 0.2, seed=3)
    assert list(np.bincount(held.y)) == [10, 6, 4, 0, 1]
    assert 3 in rest.y  # a single-sample class stays in rest


def test_split_is_seeded() -> None:
    ds = _ds(np.arange(200) % 4)
    first = _rows(stratified_split(ds, 0.25, seed=7)[1])
    np.testing.assert_array_equal(first, _rows(stratified_split(ds, 0.25, seed=7)[1]))
    assert not np.array_equal(first, _rows(stratified_split(ds, 0.25, seed=8)[1]))


def test_split_fraction_zero_and_out_of_range() -> None:
    ds = _ds([0, 1, 0, 1])
    rest, held = stratified_split(ds, 0.0, seed=0)
    assert len(rest) == 4 and len(held) == 0
    with pytest.raises(DataError, match=r"fraction must be in \[0, 1\), got 1.0"):
        stratified_split(ds, 1.0, seed=0)


@settings(max_examples=60, deadline=None)
@given(
    labels=st.lists(st.integers(0, 4), min_size=1, max_size=80),
    fraction=st.floats(0.0, 0.95),
    seed=st.integers(0, 2**32 - 1),
)
def test_split_properties(labels: list[int], fraction: float, seed: int) -> None:
    ds = _ds(labels, n_classes=5)
    rest, held = _check_split(ds, fraction, seed)
    again_rest, again_held = stratified_split(ds, fraction, seed)
    np.testing.assert_array_equal(_rows(held), _rows(again_held))
    np.testing.assert_array_equal(_rows(rest), _rows(again_rest))


def _npz(path: Path, y: np.ndarray, **extra: np.ndarray) -> str:
    x = np.arange(len(y) * 3, dtype=np.float32).reshape(-1, 3)
    np.savez(path, x=x, y=y, **extra) if not extra else np.savez(path, x_train=x, y_train=y, **extra)
    return str(path)


def test_load_splits_with_test_split_then_validation_split(tmp_path: Path) -> None:
    train = _npz(tmp_path / "t.npz", np.arange(100) % 2)
    splits = load_splits(DataSpec(train=train, test_split=0.2, validation_split=0.25), seed=0)
    assert splits.test is not None
    assert (len(splits.train), len(splits.val), len(splits.test)) == (60, 20, 20)
    seen = np.concatenate([splits.train.x[:, 0], splits.val.x[:, 0], splits.test.x[:, 0]])
    assert len(np.unique(seen)) == 100
    again = load_splits(DataSpec(train=train, test_split=0.2, validation_split=0.25), seed=0)
    assert again.val.fingerprint() == splits.val.fingerprint()


def test_load_splits_without_test(tmp_path: Path) -> None:
    splits = load_splits(DataSpec(train=_npz(tmp_path / "t.npz", np.arange(50) % 5)), seed=1)
    assert splits.test is None
    assert (len(splits.train), len(splits.val)) == (45, 5)
    assert list(np.bincount(splits.val.y)) == [1] * 5


def test_load_splits_uses_bundled_test(tmp_path: Path) -> None:
    x_test = np.zeros((4, 3), np.float32)
    train = _npz(tmp_path / "m.npz", np.arange(20) % 2, x_test=x_test, y_test=np.array([1, 1, 0, 1]))
    splits = load_splits(DataSpec(train=train, test_split=0.5), seed=0)  # bundled test wins over test_split
    assert splits.test is not None and len(splits.test) == 4
    assert len(splits.train) + len(splits.val) == 20


def test_load_splits_with_test_source_mapped_onto_train_classes(tmp_path: Path) -> None:
    train = tmp_path / "train.csv"
    train.write_text("f,label\n" + "".join(f"{i},{'cat' if i % 2 else 'dog'}\n" for i in range(10)))
    test = tmp_path / "test.csv"
    test.write_text("f,label\n1,dog\n2,dog\n")
    splits = load_splits(DataSpec(train=str(train), test=str(test)), seed=0)
    assert splits.classes == ("cat", "dog")
    assert splits.test is not None
    np.testing.assert_array_equal(splits.test.y, [1, 1])
    test.write_text("f,label\n1,emu\n")
    with pytest.raises(
        DataError, match=r"test.csv: label 'emu' \(row 0\) is not one of the train classes \(cat, dog\)"
    ):
        load_splits(DataSpec(train=str(train), test=str(test)), seed=0)


def test_load_splits_test_source_with_its_own_test_pair_uses_that_pair(tmp_path: Path) -> None:
    train = _npz(tmp_path / "t.npz", np.arange(20) % 2)
    other = _npz(
        tmp_path / "o.npz", np.arange(30) % 2, x_test=np.ones((3, 3), np.float32), y_test=np.array([0, 1, 0])
    )
    splits = load_splits(DataSpec(train=train, test=other), seed=0)
    assert splits.test is not None and len(splits.test) == 3
    np.testing.assert_array_equal(splits.test.y, [0, 1, 0])
    unused = _npz(
        tmp_path / "u.npz", np.arange(6) % 3, x_test=np.ones((1, 3), np.float32), y_test=np.array([1])
    )
    splits = load_splits(DataSpec(train=train, test=unused), seed=0)  # class 2 is only in the unused part
    assert splits.test is not None and list(splits.test.y) == [1]


def test_load_splits_test_shape_mismatch(tmp_path: Path) -> None:
    train = _npz(tmp_path / "t.npz", np.arange(20) % 10)
    with pytest.raises(
        DataError, match=r"builtin:digits: test samples have shape \(64,\), train samples \(3,\)"
    ):
        load_splits(DataSpec(train=train, test="builtin:digits"), seed=0)


def test_load_splits_too_few_samples(tmp_path: Path) -> None:
    train = _npz(tmp_path / "t.npz", np.array([0, 1, 2]))
    with pytest.raises(DataError, match=r"too few samples for data.validation_split"):
        load_splits(DataSpec(train=train), seed=0)


def test_load_splits_on_builtin_digits() -> None:
    splits = load_splits(DataSpec(train="builtin:digits", test_split=0.1), seed=0)
    assert splits.test is not None
    assert len(splits.train) + len(splits.val) + len(splits.test) == 1797
    train, _ = read_source("builtin:digits")
    assert splits.classes == train.classes

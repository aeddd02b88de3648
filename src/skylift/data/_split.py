"""Seeded, stratified hold-out splits and the train/val/test assembly of a job's data spec."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from skylift.data._dataset import Dataset, Splits
from skylift.data._source import map_onto, read_source
from skylift.errors import DataError

if TYPE_CHECKING:
    from skylift.spec import DataSpec


def stratified_split(ds: Dataset, fraction: float, seed: int) -> tuple[Dataset, Dataset]:
    """(rest, held_out): seeded, stratified by class; both keep the original row order.

    A class of n_c samples gives round(fraction * n_c) to held_out (round half to even), but at
    least 1 when fraction > 0 and n_c >= 2, and never all of them: rest keeps >= 1 of every class
    it had (a class with 1 sample stays in rest). Same data, fraction and seed -> same split.
    """
    rest, held = stratified_rows(ds.y, len(ds.classes), fraction, seed)
    return ds.subset(rest), ds.subset(held)


def stratified_rows(
    y: np.ndarray, n_classes: int, fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """(rest, held_out) row indices of `stratified_split`, both sorted, for class ids `y`."""
    if not 0.0 <= fraction < 1.0:
        raise DataError(f"a hold-out fraction must be in [0, 1), got {fraction}")
    counts_C = np.bincount(y, minlength=n_classes)
    take_C = np.rint(fraction * counts_C).astype(np.int64)
    if fraction > 0:
        take_C = np.maximum(take_C, (counts_C >= 2).astype(np.int64))
    take_C = np.minimum(take_C, np.maximum(counts_C - 1, 0))
    # Rows grouped by class, random order within each class: a random permutation, stably sorted.
    perm_N = np.random.default_rng(seed).permutation(len(y))
    grouped_N = perm_N[np.argsort(y[perm_N], kind="stable")]
    starts_C = np.concatenate(([0], np.cumsum(counts_C)[:-1]))
    classes_N = y[grouped_N]
    rank_N = np.arange(len(y)) - starts_C[classes_N]  # position within its class group
    held_N = rank_N < take_C[classes_N]
    return np.sort(grouped_N[~held_N]), np.sort(grouped_N[held_N])


def load_splits(spec: DataSpec, seed: int, cache: Path | None = None) -> Splits:
    """The train/val/test sets a data spec describes.

    test = the `spec.test` source (its bundled test set when it has one, e.g. the x_test/y_test
    of a Keras .npz), else the train source's bundled test set, else a stratified `test_split` of
    train when > 0, else None. Then val = a stratified `validation_split` of the remaining train.
    Test labels are mapped onto the train set's classes. Both splits use `seed`.
    Image and audio files (`data.image`, `data.audio`) are decoded once and kept in `cache`
    (SKYLIFT_HOME/cache) when given; see `skylift.data._media_source`.
    """
    if spec.image is not None or spec.audio is not None:
        from skylift.data._media_source import load_media_splits

        return load_media_splits(spec, seed, cache)[0]
    data, bundled = read_source(spec.train, spec.label_column)
    test: Dataset | None
    if spec.test is not None:
        main, its_test = read_source(spec.test, spec.label_column)
        test = map_onto(spec.test, its_test if its_test is not None else main, data.classes)
        _same_shape(spec.test, test, data)
    elif bundled is not None:
        test = bundled
        _same_shape(f"{spec.train} (its test set)", test, data)
    elif spec.test_split > 0:
        data, test = stratified_split(data, spec.test_split, seed)
        non_empty(spec.train, test, "test_split")
    else:
        test = None
    train, val = stratified_split(data, spec.validation_split, seed)
    non_empty(spec.train, val, "validation_split")
    return Splits(train=train, val=val, test=test)


def _same_shape(source: str, test: Dataset, train: Dataset) -> None:
    if test.sample_shape != train.sample_shape:
        raise DataError(
            f"{source}: test samples have shape {test.sample_shape}, train samples {train.sample_shape}"
        )


def non_empty(source: str, held: Dataset, field: str) -> None:
    if len(held) == 0:
        raise DataError(
            f"{source}: too few samples for data.{field}: every class has a single sample, "
            "so nothing can be held out (a class needs >= 2)"
        )

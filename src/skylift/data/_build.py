"""Raw arrays from any source -> a checked `Dataset`: label encoding and the checks all sources share."""

from __future__ import annotations

import numpy as np

from skylift.data._dataset import Dataset, pixels_to_unit
from skylift.errors import DataError

_MAX_EXACT_FLOAT_INT = 2.0**53  # beyond this a float label no longer names one integer exactly


def build_dataset(
    source: str, x: np.ndarray, y: np.ndarray, classes: tuple[str, ...] | None = None
) -> Dataset:
    """Check raw features/labels read from `source` and encode the labels (see `encode_labels`).

    1-D features become one feature per row, shape (N, 1); uint8 features are pixel bytes and are
    scaled to [0, 1] (see `pixels_to_unit`); other numeric dtypes are kept as values (as float32).
    Every error is one line starting with `source`.
    """
    x, y = np.asarray(x), np.asarray(y)
    if x.dtype.kind not in "biuf":
        raise DataError(f"{source}: features must be numeric, got dtype {x.dtype}")
    if x.ndim == 0:
        raise DataError(f"{source}: features must be an array with one row per sample, got a scalar")
    if y.ndim != 1:
        hint = " (one-hot labels? store the class ids instead)" if y.ndim == 2 and y.shape[1] > 1 else ""
        raise DataError(f"{source}: labels must be 1-D (one class per row), got shape {y.shape}{hint}")
    if len(x) != len(y):
        raise DataError(f"{source}: {len(x)} feature rows but {len(y)} labels; the counts must match")
    if len(y) == 0:
        raise DataError(f"{source}: holds no rows")
    if x.ndim == 1:
        x = x.reshape(-1, 1)
    if x[0].size == 0:
        raise DataError(f"{source}: samples have no features (shape {x.shape})")
    if x.dtype == np.uint8:
        x = pixels_to_unit(x)
    ids, names = encode_labels(source, y, classes)
    try:
        return Dataset(x, ids, names)
    except DataError as exc:
        raise DataError(f"{source}: {exc}") from None


def encode_labels(
    source: str, y: np.ndarray, classes: tuple[str, ...] | None = None
) -> tuple[np.ndarray, tuple[str, ...]]:
    """Labels -> (int64 class ids, class names).

    Without `classes`: integer labels (or whole-number floats, or bools as 0/1) that are exactly
    0..K-1 keep their ids and get names "0".."K-1"; any other integers and any strings are ranked
    by sorted unique value, named by str(value). With `classes`: each label's str() must be one of
    them (unknown -> DataError naming the label and its row).
    """
    values = _normalise(source, y)
    if classes is None:
        uniq, inverse = np.unique(values, return_inverse=True)
        if values.dtype.kind == "i" and uniq[0] == 0 and uniq[-1] == len(uniq) - 1:
            return values, tuple(str(i) for i in range(len(uniq)))
        return inverse.astype(np.int64), tuple(str(v) for v in uniq.tolist())
    uniq, inverse = np.unique(values.astype(str), return_inverse=True)
    position = {name: i for i, name in enumerate(classes)}
    uniq_ids = np.empty(len(uniq), dtype=np.int64)
    for k, name in enumerate(uniq.tolist()):  # one step per distinct label, not per sample
        if name not in position:
            row = int(np.argmax(inverse == k))
            raise DataError(
                f"{source}: label {name!r} (row {row}) is not one of the train classes {_show(classes)}"
            )
        uniq_ids[k] = position[name]
    return uniq_ids[inverse], classes


def _normalise(source: str, y: np.ndarray) -> np.ndarray:
    """Labels as int64 (integers, bools, whole floats) or as a str array (names)."""
    kind = y.dtype.kind
    if kind in "iub":
        return y.astype(np.int64)
    if kind == "f":
        with np.errstate(invalid="ignore"):  # NaN/inf fail every test below; no warning needed
            bad = ~np.isfinite(y) | (np.abs(y) >= _MAX_EXACT_FLOAT_INT) | (np.mod(y, 1) != 0)
        if bool(bad.any()):
            row = int(np.argmax(bad))
            raise DataError(
                f"{source}: label {y[row].item()!r} at row {row} is not a class; "
                "labels must be integers or names"
            )
        return y.astype(np.int64)
    if kind == "U":
        return y
    if kind == "S":
        try:
            return y.astype(str)
        except UnicodeDecodeError:
            raise DataError(f"{source}: labels are bytes that are not ASCII text") from None
    if kind == "O":
        missing = np.equal(y, np.array(None, dtype=object))
        if bool(missing.any()):
            raise DataError(f"{source}: label at row {int(np.argmax(missing))} is missing")
        return y.astype(str)
    raise DataError(f"{source}: labels must be integers or names, got dtype {y.dtype}")


def _show(classes: tuple[str, ...], limit: int = 12) -> str:
    shown = ", ".join(classes[:limit])
    return f"({shown}, ... {len(classes)} in all)" if len(classes) > limit else f"({shown})"

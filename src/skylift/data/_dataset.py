"""The in-memory `Dataset` and `Splits` types, and the one place their invariants are checked."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import numpy as np

from skylift.errors import DataError

_FINGERPRINT_VERSION = "skylift-dataset-v1"


@dataclass(frozen=True, eq=False, repr=False)
class Dataset:
    """Features and class ids of one data set, held in memory.

    Invariants, checked when built (a violation is a `DataError`): `x` is float32 of shape
    (N, *sample_shape) with every value finite; `y` is int64 of shape (N,) with values in
    [0, len(classes)); `classes` is a non-empty tuple of distinct names. Integer `y` and any
    real-valued `x` are converted; nothing else is. A Dataset may hold 0 rows (an empty split);
    sources never produce one. The arrays are not copied and stay writable: treat them as
    read-only. Equality is identity; compare contents with `fingerprint()`.
    """

    x: np.ndarray
    """Features, float32, shape (N, *sample_shape), all finite."""
    y: np.ndarray
    """Class ids, int64, shape (N,), values in [0, len(classes))."""
    classes: tuple[str, ...]
    """Class names; a class id indexes this tuple."""

    def __post_init__(self) -> None:
        x, y, classes = self.x, self.y, self.classes
        if not isinstance(x, np.ndarray) or x.ndim < 2:
            shape = getattr(x, "shape", None)
            raise DataError(f"features must be an array of shape (N, *sample_shape), got shape {shape}")
        if x.dtype.kind not in "biuf":
            raise DataError(f"features must be numeric, got dtype {x.dtype}")
        if not isinstance(y, np.ndarray) or y.ndim != 1:
            raise DataError(f"labels must be a 1-D array of class ids, got shape {getattr(y, 'shape', None)}")
        if y.dtype.kind not in "iu":
            raise DataError(f"labels must be integer class ids, got dtype {y.dtype}")
        if len(x) != len(y):
            raise DataError(f"{len(x)} feature rows but {len(y)} labels")
        if not isinstance(classes, tuple) or not classes or not all(isinstance(c, str) for c in classes):
            raise DataError(f"classes must be a non-empty tuple of names, got {classes!r}")
        if len(set(classes)) != len(classes):
            raise DataError(f"class names must be distinct, got {classes!r}")
        if len(y) and (int(y.min()) < 0 or int(y.max()) >= len(classes)):
            bad = int(y.min()) if int(y.min()) < 0 else int(y.max())
            raise DataError(f"label id {bad} is outside [0, {len(classes)}) for {len(classes)} classes")
        x32 = _to_float32(x)
        _check_finite(x32)
        object.__setattr__(self, "x", x32)
        object.__setattr__(self, "y", y.astype(np.int64, copy=False))

    def __len__(self) -> int:
        return len(self.y)

    def __repr__(self) -> str:
        return f"Dataset(n={len(self)}, sample_shape={self.sample_shape}, classes={self.classes!r})"

    @property
    def sample_shape(self) -> tuple[int, ...]:
        """Shape of one sample (the features of one row)."""
        return tuple(int(d) for d in self.x.shape[1:])

    def fingerprint(self) -> str:
        """SHA-256 hex of shapes, dtypes, feature bytes, label bytes and class names (the data hash).

        Bytes are hashed little-endian and C-ordered, so equal contents hash equal on any machine.
        """
        x = np.ascontiguousarray(self.x, dtype="<f4")
        y = np.ascontiguousarray(self.y, dtype="<i8")
        header = {
            "version": _FINGERPRINT_VERSION,
            "x": {"shape": list(x.shape), "dtype": "float32"},
            "y": {"shape": list(y.shape), "dtype": "int64"},
            "classes": list(self.classes),
        }
        h = hashlib.sha256(json.dumps(header, sort_keys=True, separators=(",", ":")).encode())
        h.update(x.data)
        h.update(y.data)
        return h.hexdigest()

    def subset(self, idx: np.ndarray) -> Dataset:
        """Rows picked by an integer index array or a boolean mask, same classes."""
        idx = np.asarray(idx)
        if idx.dtype.kind not in "iub":
            raise DataError(f"subset needs integer indices or a boolean mask, got dtype {idx.dtype}")
        return Dataset(self.x[idx], self.y[idx], self.classes)


@dataclass(frozen=True, eq=False)
class Splits:
    """Train, validation and optional test sets sharing one class list and sample shape."""

    train: Dataset
    val: Dataset
    test: Dataset | None

    def __post_init__(self) -> None:
        for name, part in (("val", self.val), ("test", self.test)):
            if part is None:
                continue
            if part.classes != self.train.classes:
                raise DataError(f"{name} classes {part.classes!r} differ from train's {self.train.classes!r}")
            if part.sample_shape != self.train.sample_shape:
                raise DataError(
                    f"{name} samples have shape {part.sample_shape}, train's have {self.train.sample_shape}"
                )

    @property
    def classes(self) -> tuple[str, ...]:
        """Class names shared by every split."""
        return self.train.classes


def pixels_to_unit(x: np.ndarray) -> np.ndarray:
    """uint8 pixel bytes -> float32 in [0, 1] (x / 255), the one scaling shared by IDX and array files."""
    return x.astype(np.float32) / np.float32(255.0)


def _to_float32(x: np.ndarray) -> np.ndarray:
    if x.dtype == np.float32:
        return x
    with np.errstate(over="ignore", invalid="ignore"):  # overflow shows up as inf, reported below
        return x.astype(np.float32)


def _check_finite(x: np.ndarray) -> None:
    """Raise naming the first row (0-based) that holds NaN or +-inf; one pass when all is well."""
    if x.size == 0 or bool(np.isfinite(x).all()):
        return
    bad_rows = np.flatnonzero(~np.isfinite(x.reshape(len(x), -1)).all(axis=1))
    row = int(bad_rows[0])
    values = x[row]
    what = "NaN" if bool(np.isnan(values).any()) else "an infinite value (or one too large for float32)"
    more = f" (and {len(bad_rows) - 1} more rows)" if len(bad_rows) > 1 else ""
    raise DataError(f"feature row {row} contains {what}{more}")

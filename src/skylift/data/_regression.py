"""Numeric features with numeric targets (regression): tables, .npz and the built-in diabetes data.

Shape legend: N rows, F features, K targets.
"""

from __future__ import annotations

import gzip
import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from skylift.data._io import first_line
from skylift.errors import DataError

# scikit-learn's diabetes study: 442 patients, 10 baseline measurements, disease progression a year later.
DIABETES_FEATURES = ("age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6")


@dataclass(frozen=True, eq=False)
class TargetTable:
    """Features x_NF float32 and targets y_NK float32, every value finite; `targets` names the K columns."""

    x: np.ndarray
    y: np.ndarray
    features: tuple[str, ...]
    targets: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.y)

    def subset(self, rows: np.ndarray) -> TargetTable:
        return TargetTable(self.x[rows], self.y[rows], self.features, self.targets)

    def fingerprint(self) -> str:
        h = hashlib.sha256(b"skylift-targets-v1")
        for a in (np.ascontiguousarray(self.x, "<f4"), np.ascontiguousarray(self.y, "<f4")):
            h.update(str(a.shape).encode())
            h.update(a.tobytes())
        h.update("\0".join((*self.features, "|", *self.targets)).encode())
        return h.hexdigest()


def read_targets(source: str, target_columns: list[str] | None) -> TargetTable:
    """Read a regression source: `builtin:diabetes`, .csv/.parquet (features = every column but the
    targets; targets default to the last column), or .npz with arrays `x` (N, F) and `y` (N,) or (N, K)."""
    text = source.strip()
    if text == "builtin:diabetes":
        return _check(text, _diabetes(), target_columns)
    path = Path(text).expanduser()
    if not path.is_file():
        raise DataError(f"{text}: file not found (regression reads builtin:diabetes, .csv, .parquet, .npz)")
    name = path.name.lower()
    if name.endswith(".npz"):
        return _check(text, _npz(path), target_columns)
    if name.endswith((".csv", ".csv.gz", ".parquet", ".pq")):
        return _check(
            text,
            _table(path, "parquet" if name.endswith((".parquet", ".pq")) else "csv", target_columns),
            None,
        )
    raise DataError(f"{text}: regression reads builtin:diabetes, .csv, .parquet or .npz files")


def _check(source: str, t: TargetTable, wanted: list[str] | None) -> TargetTable:
    if wanted is not None and list(wanted) != list(t.targets):
        raise DataError(
            f"{source}: data.target_columns {wanted} not found; its targets are {list(t.targets)}"
        )
    for name, a in (("features", t.x), ("targets", t.y)):
        bad = ~np.isfinite(a)
        if bad.any():
            row, col = (int(i) for i in np.argwhere(bad)[0])
            column = (t.features if name == "features" else t.targets)[col]
            raise DataError(f"{source}: {name} column {column!r} is NaN or infinite at row {row}")
    if len(t) < 2:
        raise DataError(f"{source}: holds {len(t)} row(s); regression needs at least 2")
    return t


def _diabetes() -> TargetTable:
    import importlib.util

    found = importlib.util.find_spec("sklearn")  # the file scikit-learn ships, without importing it
    folders = found.submodule_search_locations if found else None
    base = Path(folders[0]) / "datasets" / "data" if folders else None
    if base is None or not (base / "diabetes_data_raw.csv.gz").is_file():
        raise DataError("builtin:diabetes: the data file is missing from scikit-learn; reinstall it")
    with gzip.open(base / "diabetes_data_raw.csv.gz", "rt") as f:
        x = np.loadtxt(f, dtype=np.float32)
    with gzip.open(base / "diabetes_target.csv.gz", "rt") as f:
        y = np.loadtxt(f, dtype=np.float32).reshape(-1, 1)
    return TargetTable(x, y, DIABETES_FEATURES, ("progression",))


def _npz(path: Path) -> TargetTable:
    try:
        with np.load(path, allow_pickle=False) as z:
            if not {"x", "y"} <= set(z.files):
                raise DataError(
                    f"{path}: a regression .npz needs arrays 'x' and 'y', found {sorted(z.files)}"
                )
            x, y = z["x"], z["y"]
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: not a readable .npz file ({first_line(exc)})") from None
    if (
        x.ndim != 2
        or y.ndim not in (1, 2)
        or len(x) != len(y)
        or x.dtype.kind not in "biuf"
        or y.dtype.kind not in "biuf"
    ):
        raise DataError(f"{path}: needs numeric x (N, F) and y (N,) or (N, K), got {x.shape} and {y.shape}")
    y2 = y.reshape(len(y), -1).astype(np.float32)
    names = ("y",) if y.ndim == 1 else tuple(f"y{i}" for i in range(y2.shape[1]))
    return TargetTable(x.astype(np.float32), y2, tuple(f"x{i}" for i in range(x.shape[1])), names)


def _table(path: Path, kind: str, target_columns: list[str] | None) -> TargetTable:
    import pyarrow as pa

    from skylift.data._tables import _feature_values, _list, _read

    table = _read(path, kind)  # type: ignore[arg-type]
    names = table.column_names
    targets = list(target_columns) if target_columns else names[-1:]
    missing = [t for t in targets if t not in names]
    if missing:
        raise DataError(f"{path}: target column {missing[0]!r} not found; columns present: {_list(names)}")
    if table.num_rows == 0:
        raise DataError(f"{path}: holds no data rows")
    features = [n for n in names if n not in targets]
    if not features:
        raise DataError(f"{path}: holds only target columns, no feature columns")

    def column(name: str) -> np.ndarray:
        try:
            values = _feature_values(path, name, table.column(name))
        except pa.ArrowException as exc:
            raise DataError(f"{path}: column {name!r} is not readable ({first_line(exc)})") from None
        with np.errstate(over="ignore", invalid="ignore"):
            return values.astype(np.float32)

    x = np.stack([column(n) for n in features], axis=1)
    y = np.stack([column(n) for n in targets], axis=1)
    return TargetTable(x, y, tuple(features), tuple(targets))

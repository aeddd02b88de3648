"""Tabular files (`.csv`, `.parquet`) read with pyarrow: one label column, every other column a feature."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np

from skylift.data._build import build_dataset
from skylift.data._dataset import Dataset, pixels_to_unit
from skylift.data._io import first_line
from skylift.errors import DataError

if TYPE_CHECKING:
    import pyarrow as pa

# A cell pyarrow would have parsed as a number; the first one that does not match is the culprit.
_NUMBER_RE = r"^\s*[+-]?(\d+\.?\d*([eE][+-]?\d+)?|\.\d+([eE][+-]?\d+)?|nan|inf|infinity)\s*$"
_MAX_LISTED = 20  # column names shown in an error message


def read_table(
    path: Path, kind: Literal["csv", "parquet"], label_column: str, classes: tuple[str, ...] | None
) -> Dataset:
    """Features (every column but `label_column`, in file order) and labels from a csv/parquet file.

    Numeric and boolean columns are features; a uint8 column is pixel bytes, scaled to [0, 1] as
    for array files. An empty cell or a non-numeric feature cell is a DataError naming the column
    and its 0-based data row.
    """
    import pyarrow as pa

    table = _read(path, kind)
    try:
        return _to_dataset(path, table, label_column, classes)
    except (pa.ArrowException, UnicodeDecodeError) as exc:  # e.g. names or cells not valid UTF-8
        raise DataError(f"{path}: not a readable {kind} file ({first_line(exc)})") from None


def _to_dataset(path: Path, table: pa.Table, label_column: str, classes: tuple[str, ...] | None) -> Dataset:
    names = table.column_names
    if label_column not in names:
        raise DataError(f"{path}: label column {label_column!r} not found; columns present: {_list(names)}")
    if names.count(label_column) > 1:
        raise DataError(f"{path}: label column {label_column!r} appears more than once")
    if table.num_rows == 0:
        raise DataError(f"{path}: holds no data rows")
    features = [i for i, name in enumerate(names) if name != label_column]
    if not features:
        raise DataError(f"{path}: holds only the label column {label_column!r}, no feature columns")
    x = np.empty((table.num_rows, len(features)), dtype=np.float32)
    for j, i in enumerate(features):  # one step per column; each column is converted whole
        values = _feature_values(path, names[i], table.column(i))
        with np.errstate(over="ignore", invalid="ignore"):  # overflow becomes inf, reported by name
            x[:, j] = values
    y = _label_values(path, label_column, table.column(names.index(label_column)))
    return build_dataset(str(path), x, y, classes)


def _read(path: Path, kind: Literal["csv", "parquet"]) -> pa.Table:
    import pyarrow as pa

    if path.stat().st_size == 0:
        raise DataError(f"{path}: file is empty")
    try:
        if kind == "csv":
            import pyarrow.csv as pa_csv

            # Only an empty cell is missing; "NaN"/"inf" stay numbers and "NA" is reported as text.
            convert = pa_csv.ConvertOptions(null_values=[""], strings_can_be_null=True)
            return pa_csv.read_csv(path, convert_options=convert)
        import pyarrow.parquet as pa_parquet

        return pa_parquet.read_table(path)
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise DataError(f"{path}: not a readable {kind} file ({first_line(exc)})") from None


def _feature_values(path: Path, name: str, column: pa.ChunkedArray) -> np.ndarray:
    import pyarrow as pa
    import pyarrow.compute as pc

    column = _decoded(column)
    kind = column.type
    if pa.types.is_null(kind):
        raise DataError(f"{path}: column {name!r} is empty in every row")
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        matches = pc.match_substring_regex(column, pattern=_NUMBER_RE, ignore_case=True)
        row = pc.index(pc.fill_null(matches, True), False).as_py()
        where = f": row {row} holds {_cell(column, row)}" if row >= 0 else ""
        raise DataError(f"{path}: column {name!r} is not numeric{where}")
    if pa.types.is_decimal(kind):
        column = column.cast(pa.float64())
    elif not (pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_boolean(kind)):
        raise DataError(f"{path}: column {name!r} has type {kind}, expected numbers")
    if column.null_count:
        row = pc.index(pc.is_null(column), True).as_py()
        raise DataError(f"{path}: column {name!r} has an empty cell at row {row}")
    values = np.asarray(column.to_numpy())
    return pixels_to_unit(values) if values.dtype == np.uint8 else values


def _label_values(path: Path, name: str, column: pa.ChunkedArray) -> np.ndarray:
    import pyarrow as pa
    import pyarrow.compute as pc

    column = _decoded(column)
    if column.null_count:
        row = pc.index(pc.is_null(column), True).as_py()
        raise DataError(f"{path}: label column {name!r} is empty at row {row}")
    if pa.types.is_decimal(column.type):
        column = column.cast(pa.float64())
    return np.asarray(column.to_numpy())


def _decoded(column: pa.ChunkedArray) -> pa.ChunkedArray:
    """Dictionary-encoded (categorical) columns as plain values."""
    import pyarrow as pa

    if pa.types.is_dictionary(column.type):
        return column.cast(column.type.value_type)
    return column


def _cell(column: pa.ChunkedArray, row: int) -> str:
    text = repr(column[row].as_py())
    return text if len(text) <= 40 else text[:37] + "..."


def _list(names: list[str]) -> str:
    shown = ", ".join(names[:_MAX_LISTED])
    return f"{shown}, ... ({len(names)} in all)" if len(names) > _MAX_LISTED else shown

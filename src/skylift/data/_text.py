"""Text tables (.csv, .parquet, .jsonl): one text column, and a label column or numeric target columns.

Rows are counted from 1 in messages ("data row 1" is the first row after a csv header); a JSONL
problem names its line. Every problem is a one-line DataError naming the file.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from skylift.data._io import first_line
from skylift.data._tables import _NUMBER_RE
from skylift.data._utf8 import check_utf8
from skylift.errors import DataError

if TYPE_CHECKING:
    import pyarrow as pa

_KINDS = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet", ".jsonl": "jsonl", ".ndjson": "jsonl"}
_MAX_LISTED = 20  # column names shown in an error message


@dataclass(frozen=True)
class TextTable:
    """Texts with their raw labels (classification) or float32 targets, shape (N, K) (regression)."""

    texts: list[str]
    labels: list[str] | None
    targets: np.ndarray | None


def read_text_table(
    source: str,
    text_column: str,
    label_column: str | None = None,
    target_columns: Sequence[str] | None = None,
) -> TextTable:
    """Read the named columns of a .csv, .parquet or .jsonl (one JSON object per line) file.

    Labels are kept as strings (`"3"`, `"spam"`); targets must be finite numbers. Only the named
    columns are parsed. A text that is empty or only whitespace is refused: it carries nothing to
    learn from and is usually a broken row.
    """
    path = Path(source).expanduser()
    kind = _KINDS.get(path.suffix.lower())
    if kind is None:
        raise DataError(f"{path}: unsupported text table; accepted: .csv, .parquet, .jsonl")
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: file is empty")
    wanted = [text_column, *([label_column] if label_column else []), *(target_columns or [])]
    if len(set(wanted)) < len(wanted):
        raise DataError(f"{path}: the text, label and target columns must differ, got {wanted}")
    try:
        if kind == "jsonl":
            return _read_jsonl(path, text_column, label_column, list(target_columns or []))
        return _read_arrow(path, kind, text_column, label_column, list(target_columns or []))
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({first_line(exc)})") from None


def _read_arrow(
    path: Path, kind: str, text_column: str, label_column: str | None, target_columns: list[str]
) -> TextTable:
    import pyarrow as pa

    wanted = [text_column, *([label_column] if label_column else []), *target_columns]
    try:
        table = _arrow_table(path, kind, wanted)
    except (pa.ArrowException, UnicodeDecodeError) as exc:
        if kind == "csv":
            check_utf8(path)  # raises with the byte offset when bad bytes were the cause
        raise DataError(f"{path}: not a readable {kind} file ({first_line(exc)})") from None
    if table.num_rows == 0:
        raise DataError(f"{path}: holds no data rows")
    texts = _strings(path, f"text column {text_column!r}", table.column(text_column))
    for row, text in enumerate(texts, 1):
        if not text.strip():
            raise DataError(f"{path}: text column {text_column!r} is empty at data row {row}")
    labels = None
    if label_column:
        labels = _strings(path, f"label column {label_column!r}", table.column(label_column))
    targets = None
    if target_columns:
        targets = np.empty((table.num_rows, len(target_columns)), dtype=np.float32)
        for j, name in enumerate(target_columns):
            targets[:, j] = _numbers(path, name, table.column(name))
    return TextTable(texts, labels, targets)


def _arrow_table(path: Path, kind: str, wanted: list[str]) -> pa.Table:
    """Only the `wanted` columns of the file, after checking that each exists."""
    if kind == "parquet":
        import pyarrow.parquet as pa_parquet

        names = pa_parquet.ParquetFile(path).schema_arrow.names
        _check_present(path, wanted, names)
        return pa_parquet.read_table(path, columns=wanted)
    import pyarrow as pa
    import pyarrow.csv as pa_csv

    with pa_csv.open_csv(path) as reader:  # reads one block (1 MiB) to learn the header
        names = reader.schema.names
    _check_present(path, wanted, names)
    convert = pa_csv.ConvertOptions(
        include_columns=wanted,
        # Texts stay text ("007", "NA" are not numbers or missing); targets are parsed below.
        column_types=dict.fromkeys(wanted, pa.string()),
        null_values=[""],
        strings_can_be_null=True,
    )
    return pa_csv.read_csv(path, convert_options=convert)


def _check_present(path: Path, wanted: list[str], names: list[str]) -> None:
    for i, name in enumerate(wanted):
        if name not in names:
            role = "text" if i == 0 else "label or target"
            raise DataError(f"{path}: {role} column {name!r} not found; columns present: {_listed(names)}")


def _strings(path: Path, what: str, column: pa.ChunkedArray) -> list[str]:
    import pyarrow as pa

    if pa.types.is_dictionary(column.type):
        column = column.cast(column.type.value_type)
    values: list[Any] = column.to_pylist()
    for row, value in enumerate(values, 1):
        if value is None:
            raise DataError(f"{path}: {what} is empty at data row {row}")
        if isinstance(value, bytes):  # a binary parquet column: its bytes must be UTF-8 text
            try:
                values[row - 1] = value.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise DataError(
                    f"{path}: {what} is not UTF-8 text at data row {row} (byte {exc.start} of the cell)"
                ) from None
        elif not isinstance(value, str):
            values[row - 1] = str(value)  # integer or boolean labels, e.g. 3 -> "3"
    return values


def _numbers(path: Path, name: str, column: pa.ChunkedArray) -> np.ndarray:
    """One target column as float64 values, checked finite (also once rounded to float32)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if pa.types.is_dictionary(column.type):
        column = column.cast(column.type.value_type)
    kind = column.type
    if column.null_count:
        row = pc.index(pc.is_null(column), True).as_py() + 1
        raise DataError(f"{path}: target column {name!r} is empty at data row {row}")
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        try:
            column = pc.cast(column, pa.float64())
        except pa.ArrowInvalid:
            numeric = pc.match_substring_regex(column, pattern=_NUMBER_RE, ignore_case=True)
            row = pc.index(numeric, False).as_py()
            where = f" {_cell(column[row].as_py())} at data row {row + 1}," if row >= 0 else ""
            raise DataError(f"{path}: target column {name!r} holds{where} not a number") from None
    elif not (pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_decimal(kind)):
        raise DataError(f"{path}: target column {name!r} has type {kind}, expected numbers")
    values = np.asarray(column.cast(pa.float64()).to_numpy(), dtype=np.float64)
    with np.errstate(over="ignore"):  # a float64 beyond float32's range becomes inf: reported below
        bad = ~np.isfinite(values.astype(np.float32))
    if bad.any():
        row = int(np.argmax(bad))
        raise DataError(
            f"{path}: target column {name!r} holds {float(values[row])!r} at data row {row + 1}; "
            "targets must be finite float32 numbers"
        )
    return values


def _read_jsonl(
    path: Path, text_column: str, label_column: str | None, target_columns: list[str]
) -> TextTable:
    texts: list[str] = []
    labels: list[str] | None = [] if label_column else None
    targets: list[list[float]] = []
    offset = 0  # bytes before the current line, for the UTF-8 message
    with path.open("rb") as stream:
        for number, raw in enumerate(stream, 1):
            where = f"{path}: line {number}"
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise DataError(
                    f"{path}: not UTF-8 text: byte offset {offset + exc.start} (line {number}) "
                    f"holds {raw[exc.start : exc.start + 1]!r}; save the file as UTF-8"
                ) from None
            offset += len(raw)
            if not line.strip():
                continue  # blank lines (a trailing newline, spacing) hold no row
            row = _json_object(where, line, text_column)
            text = _field(where, row, text_column)
            if not isinstance(text, str):
                raise DataError(f"{where}: field {text_column!r} is {type(text).__name__}, expected a string")
            if not text.strip():
                raise DataError(f"{where}: text field {text_column!r} is empty")
            texts.append(text)
            if labels is not None and label_column:
                labels.append(_label(where, label_column, _field(where, row, label_column)))
            if target_columns:
                targets.append([_target(where, name, _field(where, row, name)) for name in target_columns])
    if not texts:
        raise DataError(f"{path}: holds no data rows (only blank lines)")
    array = np.asarray(targets, dtype=np.float32).reshape(len(texts), -1) if target_columns else None
    return TextTable(texts, labels, array)


def _json_object(where: str, line: str, text_column: str) -> dict[str, Any]:
    try:
        row = json.loads(line)
    except json.JSONDecodeError as exc:
        raise DataError(f"{where} is not valid JSON ({exc.msg} at column {exc.colno})") from None
    if not isinstance(row, dict):
        raise DataError(
            f"{where} is a JSON {type(row).__name__}, expected an object such as {{{text_column!r}: ...}}"
        )
    return row


def _field(where: str, row: dict[str, Any], name: str) -> Any:
    if name not in row:
        raise DataError(f"{where} has no field {name!r}; fields present: {_listed(list(row))}")
    return row[name]


def _label(where: str, name: str, value: Any) -> str:
    if value is None or value == "":
        raise DataError(f"{where}: label field {name!r} is empty")
    if isinstance(value, dict | list):
        raise DataError(f"{where}: label field {name!r} is a JSON {type(value).__name__}, expected a value")
    return str(value)


def _target(where: str, name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise DataError(f"{where}: target field {name!r} holds {_cell(value)}, not a number")
    try:
        number = float(value)
    except OverflowError:  # an integer beyond float's range
        number = math.inf
    if not (math.isfinite(number) and abs(number) <= float(np.finfo(np.float32).max)):
        raise DataError(
            f"{where}: target field {name!r} holds {value!r}; targets must be finite float32 numbers"
        )
    return number


def _cell(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _listed(names: list[str]) -> str:
    shown = ", ".join(names[:_MAX_LISTED])
    return f"{shown}, ... ({len(names)} in all)" if len(names) > _MAX_LISTED else shown or "(none)"

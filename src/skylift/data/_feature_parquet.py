"""Parquet feature files for chunked reading: streamed a batch at a time within row groups.

As for training, every column but the label column is a feature, in file order; the label
column, when present, is not read. Shape legend: n rows of a piece, F feature columns.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from skylift.data._dataset import pixels_to_unit
from skylift.data._feature_files import FeatureFile, as_features
from skylift.data._io import first_line
from skylift.errors import DataError

if TYPE_CHECKING:
    import pyarrow as pa

_BIG_GROUP_BYTES = 256 << 20  # a stored row group past 256 MiB is worth a note: memory grows with it


def _numeric(kind: pa.DataType) -> bool:
    import pyarrow as pa

    if pa.types.is_dictionary(kind):
        kind = kind.value_type
    t = pa.types
    return bool(t.is_integer(kind) or t.is_floating(kind) or t.is_boolean(kind) or t.is_decimal(kind))


class ParquetFile(FeatureFile):
    """A .parquet file streamed a batch at a time within its row groups, reading forward from where it is."""

    def __init__(self, path: Path, chunk_rows: int, label_column: str, threads: bool) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        super().__init__(path, chunk_rows)
        try:
            self._file = pq.ParquetFile(path, pre_buffer=False, buffer_size=1 << 20)  # read as it goes
            schema = self._file.schema_arrow
        except (pa.ArrowException, OSError, ValueError) as exc:
            raise DataError(f"{path}: not a readable parquet file ({first_line(exc)})") from None
        names = schema.names
        if names.count(label_column) > 1:
            raise DataError(f"{path}: label column {label_column!r} appears more than once")
        self._names = [name for name in names if name != label_column]
        if not self._names:
            raise DataError(f"{path}: holds no feature columns")
        if len(set(self._names)) != len(self._names):
            raise DataError(f"{path}: feature column names repeat; parquet columns are read by name")
        kinds = [schema.field(name).type for name in self._names]
        for name, kind in zip(self._names, kinds, strict=True):
            if not _numeric(kind):
                raise DataError(f"{path}: column {name!r} has type {kind}, expected numbers")
        t = pa.types
        self._uniform = len(set(kinds)) == 1 and (t.is_integer(kinds[0]) or t.is_floating(kinds[0]))
        meta = self._file.metadata
        self.rows, self.sample_shape = int(meta.num_rows), (len(self._names),)
        sizes = [meta.row_group(g).num_rows for g in range(meta.num_row_groups)]
        self._starts = np.concatenate(([0], np.cumsum(sizes))).astype(np.int64)
        self._threads = threads
        stored = [
            sum(meta.row_group(g).column(c).total_compressed_size for c in range(meta.num_columns))
            for g in range(meta.num_row_groups)
        ]
        self.notes: list[str] = []
        if max(stored, default=0) > _BIG_GROUP_BYTES:
            self.notes.append(
                f"{path}: row groups of up to {max(stored) / 2**20:,.0f} MiB stored; Arrow holds a row "
                "group's pages while reading it, so memory grows with them (write smaller row groups, "
                "e.g. row_group_size=65536, to keep it low)"
            )
        self._batches: Iterator[pa.RecordBatch] | None = None
        self._held: pa.RecordBatch | None = None  # the rest of a batch a chunk ended in
        self._pos = 0  # row of the file the next batch starts at
        self._batch_rows = 0

    def chunk_count(self) -> int:
        assert self.rows is not None
        return math.ceil(self.rows / self.chunk_rows)

    def pieces(self, j: int, batch_rows: int) -> Iterator[np.ndarray]:
        assert self.rows is not None
        lo = j * self.chunk_rows
        hi = min(lo + self.chunk_rows, self.rows)
        if self._batches is None or lo < self._pos or batch_rows != self._batch_rows or self._far(lo):
            self._seek(lo, batch_rows)
        while self._pos < hi:
            batch = self._next()
            start = self._pos
            self._pos += batch.num_rows
            a, b = max(lo - start, 0), min(hi, self._pos) - start
            if b <= a:
                continue
            if b - a < batch.num_rows:  # the chunk ends mid-batch: keep the rest for the next chunk
                self._pos = start + b
                self._held = batch.slice(b)
                batch = batch.slice(a, b - a)
            yield self._matrix(batch, start + a)

    def _far(self, lo: int) -> bool:
        """Whether `lo` lies in a later row group than the stream: reopening there skips decoding."""
        return int(np.searchsorted(self._starts, lo, side="right")) > int(
            np.searchsorted(self._starts, self._pos, side="right")
        )

    def _seek(self, lo: int, batch_rows: int) -> None:
        import pyarrow as pa

        g = int(np.searchsorted(self._starts, lo, side="right")) - 1
        try:
            self._batches = self._file.iter_batches(
                batch_size=batch_rows,
                row_groups=range(g, len(self._starts) - 1),
                columns=self._names,
                use_threads=self._threads,
            )
        except (pa.ArrowException, OSError, ValueError) as exc:
            raise DataError(f"{self.path}: not a readable parquet file ({first_line(exc)})") from None
        self._pos, self._batch_rows, self._held = int(self._starts[g]), batch_rows, None

    def _next(self) -> pa.RecordBatch:
        import pyarrow as pa

        if self._held is not None:
            held, self._held = self._held, None
            return held
        assert self._batches is not None
        try:
            return next(self._batches)
        except StopIteration:
            raise DataError(f"{self.path}: holds fewer rows than its metadata says ({self.rows})") from None
        except (pa.ArrowException, OSError, ValueError) as exc:
            raise DataError(f"{self.path}: not a readable parquet file ({first_line(exc)})") from None

    def _matrix(self, batch: pa.RecordBatch, first: int) -> np.ndarray:
        """(n, F) float32, column-major: each column is copied once, never transposed."""
        import pyarrow as pa
        import pyarrow.compute as pc

        for name, column in zip(self._names, batch.columns, strict=True):
            if column.null_count:
                row = first + pc.index(pc.is_null(column), True).as_py()
                raise DataError(f"{self.path}: column {name!r} has an empty cell at row {row}")
        if self._uniform:
            return as_features(np.asarray(batch.to_tensor(row_major=False)), str(self.path))
        out_FN = np.empty((batch.num_columns, batch.num_rows), dtype=np.float32)
        for j, column in enumerate(batch.columns):  # one step per column, each converted whole
            if pa.types.is_dictionary(column.type):
                column = column.cast(column.type.value_type)
            if pa.types.is_decimal(column.type):
                column = column.cast(pa.float64())
            values = np.asarray(column.to_numpy(zero_copy_only=False))
            with np.errstate(over="ignore", invalid="ignore"):
                out_FN[j] = pixels_to_unit(values) if values.dtype == np.uint8 else values
        return out_FN.T

    def close(self) -> None:
        self._batches = None
        self._held = None
        self._file.close()

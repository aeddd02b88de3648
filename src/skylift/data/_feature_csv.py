"""CSV feature files for chunked reading: plain csv cut into byte ranges at line ends, each streamed.

As for training, every column but the label column is a feature, in file order; the label
column, when present, is not parsed. Shape legend: n rows of a piece, F feature columns.
"""

from __future__ import annotations

import io
import math
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from skylift.data._feature_files import FeatureFile
from skylift.data._io import first_line
from skylift.data._tables import _NUMBER_RE
from skylift.errors import DataError

_MAX_HEADER = 16 << 20  # 16 MiB: a header line longer than this is not a csv header
_SAMPLE = 1 << 20  # bytes after the header used to estimate the bytes per csv row
_MIN_CHUNK_BYTES = 4 << 10  # 4 KiB: a floor for absurdly small chunk sizes
_CONVERSION = re.compile(
    r"In CSV column #(\d+): (?:Row #\d+: )?CSV conversion error to double: invalid value '(.*)'"
)


class _Csv(FeatureFile):
    """What plain and gzip csv share: the header, the column plan and the error messages."""

    def __init__(self, path: Path, chunk_rows: int, label_column: str, header: bytes) -> None:
        import pyarrow as pa
        import pyarrow.csv as pa_csv

        super().__init__(path, chunk_rows)
        try:
            names = pa_csv.read_csv(io.BytesIO(header)).column_names
        except (pa.ArrowException, UnicodeDecodeError) as exc:
            raise DataError(f"{path}: not a readable csv file ({first_line(exc)})") from None
        if names.count(label_column) > 1:
            raise DataError(f"{path}: label column {label_column!r} appears more than once")
        self._names = names
        self._synthetic = [f"c{i}" for i in range(len(names))]  # unique even when the header repeats a name
        self._features = [i for i, name in enumerate(names) if name != label_column]
        if not self._features:
            raise DataError(f"{path}: holds no feature columns")
        self.sample_shape = (len(self._features),)

    def _options(self, only: int | None = None) -> dict[str, Any]:
        import pyarrow as pa
        import pyarrow.csv as pa_csv

        wanted = [self._synthetic[i] for i in (self._features if only is None else [only])]
        kind = pa.float64() if only is None else pa.string()  # float64 then float32, as training rounds
        return {
            "read_options": pa_csv.ReadOptions(column_names=self._synthetic, use_threads=False),
            "convert_options": pa_csv.ConvertOptions(
                column_types=dict.fromkeys(wanted, kind),
                include_columns=wanted,
                null_values=[""],  # only an empty cell is missing; "NaN" is a number (and refused later)
                strings_can_be_null=True,
            ),
        }

    def _stream(self, open_input: Callable[[], Any], j: int, batch_rows: int) -> Iterator[np.ndarray]:
        import pyarrow as pa
        import pyarrow.compute as pc
        import pyarrow.csv as pa_csv

        bad: list[Any] = []

        def invalid(row: Any) -> str:
            bad.append(row)
            return "error"

        seen = 0
        try:
            reader = pa_csv.open_csv(
                open_input(),
                parse_options=pa_csv.ParseOptions(invalid_row_handler=invalid),
                **self._options(),
            )
            for batch in reader:
                for c, column in enumerate(batch.columns):
                    if column.null_count:
                        row = self.row_of(j, seen + pc.index(pc.is_null(column), True).as_py())
                        name = self._names[self._features[c]]
                        raise DataError(f"{self.path}: column {name!r} has an empty cell at row {row}")
                x = np.asarray(batch.to_tensor(row_major=False))
                with np.errstate(over="ignore", invalid="ignore"):
                    x32 = x.astype(np.float32)
                for lo in range(0, len(x32), batch_rows):
                    yield x32[lo : lo + batch_rows]
                seen += batch.num_rows
        except pa.ArrowInvalid as exc:
            raise self._explain(open_input, j, exc, bad) from None
        except (pa.ArrowException, OSError, UnicodeDecodeError) as exc:
            raise DataError(f"{self.path}: not a readable csv file ({first_line(exc)})") from None

    def _explain(self, open_input: Callable[[], Any], j: int, exc: Exception, bad: list[Any]) -> DataError:
        """One line naming the row (and column) of a parse or conversion error."""
        if bad:
            row = self.row_of(j, int(bad[0].number or 1) - 1)
            return DataError(
                f"{self.path}: row {row} has {bad[0].actual_columns} cells, "
                f"the header has {bad[0].expected_columns}"
            )
        match = _CONVERSION.search(str(exc))
        if match is None:
            return DataError(f"{self.path}: not a readable csv file ({first_line(exc)})")
        column = int(match[1])
        name = self._names[column]
        located = self._locate(open_input, j, column)
        where = f": row {located[0]} holds {located[1]}" if located else f" (a cell holds {match[2]!r})"
        return DataError(f"{self.path}: column {name!r} is not numeric{where}")

    def _locate(self, open_input: Callable[[], Any], j: int, column: int) -> tuple[int, str] | None:
        """(row, shown cell) of the first non-numeric cell of `column` in chunk j (error path only)."""
        import pyarrow as pa
        import pyarrow.compute as pc
        import pyarrow.csv as pa_csv

        seen = 0
        try:
            for batch in pa_csv.open_csv(open_input(), **self._options(only=column)):
                cells = batch.column(0)
                matches = pc.match_substring_regex(cells, pattern=_NUMBER_RE, ignore_case=True)
                i = pc.index(pc.fill_null(matches, True), False).as_py()
                if i >= 0:
                    text = repr(cells[i].as_py())
                    return self.row_of(j, seen + i), text if len(text) <= 40 else text[:37] + "..."
                seen += batch.num_rows
        except pa.ArrowException:
            return None
        return None


class CsvFile(_Csv):
    """A plain .csv cut into byte ranges that end at line ends, each streamed with pyarrow's reader.

    pyarrow's default (`newlines_in_values=False`, as training reads csv) means a line end always
    ends a row, so each range parses on its own and any worker can read any chunk. Chunks hold
    about `chunk_rows` rows, estimated from the first MiB of data.
    """

    def __init__(self, path: Path, chunk_rows: int, label_column: str) -> None:
        try:
            with open(path, "rb") as f:
                header = f.readline(_MAX_HEADER)
                sample = f.read(_SAMPLE)
                self._size = f.seek(0, 2)
        except OSError as exc:
            raise DataError(f"{path}: cannot read ({first_line(exc)})") from None
        if not header.strip():
            raise DataError(f"{path}: file is empty" if self._size == 0 else f"{path}: has no header line")
        if not header.endswith(b"\n") and len(header) >= _MAX_HEADER:
            raise DataError(f"{path}: first line is longer than {_MAX_HEADER >> 20} MiB; not a csv header")
        super().__init__(path, chunk_rows, label_column, header)
        self._header = len(header)
        lines = sample.count(b"\n")
        self._row_bytes = len(sample) / lines if lines else max(len(sample), 1)
        self._chunk_bytes = max(_MIN_CHUNK_BYTES, math.ceil(chunk_rows * self._row_bytes))
        self._bounds: dict[int, int] = {}

    def chunk_count(self) -> int:
        return math.ceil((self._size - self._header) / self._chunk_bytes)

    def estimated_rows(self) -> int:
        return round((self._size - self._header) / self._row_bytes)

    def _bound(self, j: int) -> int:
        """Byte offset where chunk j starts: just after the first line end at or past its nominal start."""
        if j <= 0:
            return self._header
        if j >= self.chunk_count():
            return self._size
        if j not in self._bounds:
            pos = self._header + j * self._chunk_bytes - 1
            with open(self.path, "rb") as f:
                f.seek(pos)
                while True:
                    block = f.read(1 << 16)
                    if not block:
                        self._bounds[j] = self._size
                        break
                    at = block.find(b"\n")
                    if at >= 0:
                        self._bounds[j] = pos + at + 1
                        break
                    pos += len(block)
        return self._bounds[j]

    def pieces(self, j: int, batch_rows: int) -> Iterator[np.ndarray]:
        import pyarrow as pa

        start, stop = self._bound(j), self._bound(j + 1)
        if stop <= start:
            return iter(())
        return self._stream(lambda: pa.OSFile(str(self.path)).get_stream(start, stop - start), j, batch_rows)

    def row_of(self, j: int, offset: int) -> int:
        """Counts line ends before the chunk (error path only); blank lines would shift it."""
        end, lines = self._bound(j), 0
        with open(self.path, "rb") as f:
            while f.tell() < end:
                lines += f.read(min(16 << 20, end - f.tell())).count(b"\n")
        return lines - 1 + offset


class CsvGzFile(_Csv):
    """A gzip .csv: it cannot be split without decompressing it, so the whole file is one chunk."""

    def __init__(self, path: Path, chunk_rows: int, label_column: str) -> None:
        import gzip
        import zlib

        try:
            with gzip.open(path, "rb") as f:
                header = f.readline(_MAX_HEADER)
        except (OSError, EOFError, zlib.error) as exc:
            raise DataError(f"{path}: corrupt gzip data ({first_line(exc)})") from None
        if not header.strip():
            raise DataError(f"{path}: file is empty")
        super().__init__(path, chunk_rows, label_column, header)

    def chunk_count(self) -> int:
        return 1

    def _options(self, only: int | None = None) -> dict[str, Any]:
        import pyarrow.csv as pa_csv

        options = super()._options(only)
        options["read_options"] = pa_csv.ReadOptions(
            column_names=self._synthetic, use_threads=False, skip_rows=1
        )
        return options

    def pieces(self, j: int, batch_rows: int) -> Iterator[np.ndarray]:
        import pyarrow as pa

        return self._stream(
            lambda: pa.CompressedInputStream(pa.OSFile(str(self.path)), "gzip"), j, batch_rows
        )

    def row_of(self, j: int, offset: int) -> int:
        return offset

"""Texts to predict: a .csv/.parquet/.jsonl file's text column or a .txt file's lines, as numbered chunks.

The texts are read whole when the source opens (a text column is small beside its model's
work); chunks are row ranges, each batch handed out through `prepare` (token ids for classifiers
and regressors, the texts themselves for language models). Same contract as
`skylift.data.FeatureSource` for what batch inference uses: chunk_count, read, rows, identity.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from skylift.data._text import read_text_table
from skylift.errors import DataError

TABLES = (".csv", ".parquet", ".pq", ".jsonl", ".ndjson")


class TextSource:
    """Texts in numbered chunks of `chunk_rows` rows; `read(k, b)` yields `prepare(texts)` per batch."""

    def __init__(
        self, source: str, texts: list[str], chunk_rows: int, prepare: Callable[[list[str]], Any]
    ) -> None:
        self.source = source
        self.path = Path(source.strip()).expanduser()
        self._texts = texts
        self._chunk_rows = chunk_rows
        self._prepare = prepare
        self.notes: list[str] = []

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return ()

    @property
    def features(self) -> int:
        return 0  # no numeric features: what ranks compare is the chunk count

    @property
    def chunk_count(self) -> int:
        return max(1, -(-len(self._texts) // self._chunk_rows))

    @property
    def rows(self) -> int:
        return len(self._texts)

    def estimated_rows(self) -> int:
        return len(self._texts)

    def identity(self) -> list[dict[str, Any]]:
        st = self.path.stat()
        return [{"path": str(self.path.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}]

    def read(self, k: int, batch_rows: int) -> Iterator[Any]:
        if not 0 <= k < self.chunk_count:
            raise IndexError(f"chunk {k} of {self.chunk_count}")
        lo, hi = k * self._chunk_rows, min((k + 1) * self._chunk_rows, len(self._texts))
        for start in range(lo, hi, batch_rows):
            yield self._prepare(self._texts[start : min(start + batch_rows, hi)])

    def close(self) -> None:
        pass


def read_texts(source: str, text_column: str, lines: bool) -> list[str]:
    """The texts of `source`: a table's `text_column`, or (when `lines`) each line of a .txt file."""
    path = Path(source.strip()).expanduser()
    suffix = path.suffix.lower()
    if lines and suffix == ".txt":
        return _lines(path)
    if suffix not in TABLES:
        accepted = ".csv, .parquet, .jsonl" + (" or .txt (one text per line)" if lines else "")
        raise DataError(
            f"{source}: this model reads text: give a {accepted} file, not {suffix or 'this source'}"
        )
    try:
        return read_text_table(source, text_column).texts
    except DataError as exc:
        if "column" in str(exc) and "not found" in str(exc):
            raise DataError(f"{exc} (--text-column names the text column)") from None
        raise


def _lines(path: Path) -> list[str]:
    """Every line of a UTF-8 .txt file (an empty line is a text too: it scores 0 over 0 tokens)."""
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror or exc})") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise DataError(
            f"{path}: not UTF-8 text: byte offset {exc.start} (line {line}) holds "
            f"{data[exc.start : exc.start + 1]!r}; save the file as UTF-8"
        ) from None
    found = text.split("\n")
    if found and found[-1] == "":
        found.pop()  # the newline that ends the last line starts no new one
    if not found:
        raise DataError(f"{path}: holds no lines")
    return [line.removesuffix("\r") for line in found]

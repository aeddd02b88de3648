"""Features-only sources read a chunk at a time, so memory stays bounded whatever the input size.

A source is any file training reads (.npy memory-mapped, .npz, .csv streamed, .parquet by row
groups, IDX images plain or gzip), a `features.npy,labels.npy` pair or `builtin:NAME` (labels
are ignored), or a folder of such files read in sorted name order. The source is cut into
numbered chunks that never span two files; any process can read any chunk, which is what lets
batch inference spread chunks over workers and resume after a crash.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np

from skylift.data._builtin import read_builtin
from skylift.data._feature_csv import CsvFile, CsvGzFile
from skylift.data._feature_files import FeatureFile, MemoryFile, NpyFile, NpzFile, concat_rows
from skylift.data._feature_idx import is_idx_images, is_idx_labels, open_idx
from skylift.data._feature_parquet import ParquetFile
from skylift.data._io import first_line
from skylift.errors import DataError

DEFAULT_CHUNK_ROWS = 16384
_BUILTIN = "builtin:"
_FORMS = ".npy, .npz, .csv[.gz], .parquet, IDX images (*-images-idx3-ubyte[.gz])"


class FeatureSource:
    """The features of a source, as numbered chunks of rows; labels, when the source has them, are ignored.

    Contract: opening reads headers only and checks them (every problem is a one-line DataError
    naming the file); `read(k, batch_rows)` yields chunk k's rows in order as float32 arrays of
    at most `batch_rows` rows. Every value is checked finite, each batch when the caller comes
    back for the next one (or for the end of the chunk): a NaN or inf raises DataError naming
    the file and row there, so trust a chunk's results only once it has been read to the end.
    Batches may be column-major, or copy-on-write memory maps (writing to them never changes a
    file). One open source per process; not thread-safe.
    """

    def __init__(self, source: str, files: list[FeatureFile]) -> None:
        self.source = source
        self._files = files
        first = files[0]
        for f in files[1:]:
            if int(np.prod(f.sample_shape)) != int(np.prod(first.sample_shape)):
                raise DataError(
                    f"{f.name}: samples have shape {list(f.sample_shape)}, but {first.name} has "
                    f"{list(first.sample_shape)}; every file of a folder needs the same features"
                )
        self._chunks = [(i, j) for i, f in enumerate(files) for j in range(f.chunk_count())]
        if not self._chunks:
            raise DataError(f"{source}: holds no rows")
        self._current: int | None = None

    def __enter__(self) -> FeatureSource:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"FeatureSource({self.source!r}, files={len(self._files)}, chunks={len(self._chunks)})"

    @property
    def sample_shape(self) -> tuple[int, ...]:
        """Shape of one sample (of the first file; every file has as many values per sample)."""
        return self._files[0].sample_shape

    @property
    def features(self) -> int:
        """Values per sample."""
        return int(np.prod(self.sample_shape))

    @property
    def chunk_count(self) -> int:
        return len(self._chunks)

    @property
    def rows(self) -> int | None:
        """Total rows; None when only reading the data tells (csv)."""
        counts = [f.rows for f in self._files]
        return None if any(c is None for c in counts) else sum(c for c in counts if c is not None)

    def estimated_rows(self) -> int:
        """`rows`, or an estimate from the file sizes when it is unknown."""
        return sum(f.estimated_rows() for f in self._files)

    @property
    def files(self) -> tuple[str, ...]:
        return tuple(f.name for f in self._files)

    @property
    def notes(self) -> list[str]:
        """Warnings worth printing (e.g. huge parquet row groups)."""
        return [n for f in self._files for n in getattr(f, "notes", [])]

    def identity(self) -> list[dict[str, Any]]:
        """Path, size and mtime of every file: what a resumable job keys its finished chunks on."""
        return [f.identity() for f in self._files]

    def read(self, k: int, batch_rows: int) -> Iterator[np.ndarray]:
        """Chunk k as float32 batches of `batch_rows` rows (the last one of the chunk may be shorter)."""
        if not 0 <= k < len(self._chunks):
            raise IndexError(f"chunk {k} of {len(self._chunks)}")
        i, j = self._chunks[k]
        if self._current is not None and self._current != i:
            self._files[self._current].close()  # one file open at a time
        self._current = i
        file = self._files[i]
        offset = 0
        for x in _rebatch(file.pieces(j, batch_rows), batch_rows):
            yield x
            # Checked once the caller is done with it: its pages are mapped and hot by then, so the
            # check is a pass over cached memory instead of the first, page-faulting one.
            _check_finite(x, file, j, offset)
            offset += len(x)

    def close(self) -> None:
        for f in self._files:
            f.close()
        self._current = None


def _rebatch(pieces: Iterator[np.ndarray], batch_rows: int) -> Iterator[np.ndarray]:
    """Pieces of any size -> batches of exactly batch_rows rows (the last may be shorter)."""
    held: list[np.ndarray] = []
    have = 0
    for piece in pieces:
        while len(piece):
            if not held and len(piece) >= batch_rows:
                yield piece[:batch_rows]
                piece = piece[batch_rows:]
                continue
            take = min(batch_rows - have, len(piece))
            held.append(piece[:take])
            have += take
            piece = piece[take:]
            if have == batch_rows:
                yield concat_rows(held)
                held, have = [], 0
    if held:
        yield concat_rows(held)


def _check_finite(x: np.ndarray, file: FeatureFile, j: int, offset: int) -> None:
    """A NaN or inf anywhere makes the sum non-finite: one pass when all is well, then find the row."""
    with np.errstate(all="ignore"):  # a finite sum may still overflow: the exact check settles it
        if bool(np.isfinite(x.sum())):
            return
        bad_N = ~np.isfinite(x.reshape(len(x), -1)).all(axis=1)
    if not bool(bad_N.any()):
        return
    i = int(np.argmax(bad_N))
    what = "NaN" if bool(np.isnan(x[i]).any()) else "an infinite value (or one too large for float32)"
    raise DataError(f"{file.name}: row {file.row_of(j, offset + i)} contains {what}")


def open_features(
    source: str,
    *,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    label_column: str = "label",
    use_threads: bool = True,
) -> FeatureSource:
    """Open `source` for chunked reading (headers only are read now); close it, or use it in `with`.

    `chunk_rows`: rows per chunk (csv: about that many, cut at line ends; a gzip csv is one
    chunk). `label_column`: the csv/parquet column that is not a feature (absent is fine).
    `use_threads`: let Arrow decode parquet columns on several threads.
    """
    if chunk_rows < 1:
        raise DataError(f"chunk_rows must be >= 1, got {chunk_rows}")
    text = source.strip()
    if not text:
        raise DataError(
            f"input source is empty; accepted: builtin:NAME, a file ({_FORMS}) or a folder of them"
        )
    if text.startswith(_BUILTIN):
        ds = read_builtin(text[len(_BUILTIN) :])
        return FeatureSource(text, [MemoryFile(text, ds.x, chunk_rows)])
    if "://" in text:
        raise DataError(f"{text}: remote sources are not read; copy the file locally and give its path")
    path = Path(text).expanduser()
    files: list[FeatureFile] = []
    try:
        if "," in text and not path.exists():
            members = [_pair_features(text)]
        elif not path.exists():
            raise DataError(f"{path}: file not found")
        else:
            members = _folder_files(path) if path.is_dir() else [path]
        for member in members:
            files.append(_open_file(member, chunk_rows, label_column, use_threads))
        return FeatureSource(text, files)
    except OSError as exc:  # permissions, a file vanishing between checks, ...
        _close(files)
        raise DataError(f"{text}: cannot read ({first_line(exc)})") from None
    except BaseException:
        _close(files)
        raise


def _close(files: list[FeatureFile]) -> None:
    for f in files:
        f.close()


def _pair_features(text: str) -> Path:
    parts = [Path(p.strip()).expanduser() for p in text.split(",")]
    if len(parts) != 2 or not all(p.name.lower().endswith(".npy") for p in parts):
        raise DataError(f"{text}: a comma joins exactly two .npy files, 'features.npy,labels.npy'")
    if not parts[0].is_file():
        raise DataError(f"{parts[0]}: file not found")
    return parts[0]


def _supported(name: str) -> bool:
    lower = name.lower()
    return lower.endswith((".npy", ".npz", ".csv", ".csv.gz", ".parquet", ".pq")) or is_idx_images(name)


def _folder_files(folder: Path) -> list[Path]:
    """Data files of a folder in sorted name order; hidden and `_`-prefixed names and IDX labels skipped."""
    entries = sorted(p for p in folder.iterdir() if not p.name.startswith((".", "_")))
    files = [p for p in entries if not is_idx_labels(p.name)]
    unsupported = [
        p.name + ("/" if p.is_dir() else "") for p in files if p.is_dir() or not _supported(p.name)
    ]
    if unsupported:
        shown = ", ".join(unsupported[:5]) + (
            f", ... ({len(unsupported)} in all)" if len(unsupported) > 5 else ""
        )
        raise DataError(f"{folder}: holds entries that are not data files ({shown}); accepted: {_FORMS}")
    if not files:
        raise DataError(f"{folder}: folder holds no data files; accepted: {_FORMS}")
    return files


def _open_file(path: Path, chunk_rows: int, label_column: str, use_threads: bool) -> FeatureFile:
    name = path.name.lower()
    if name.endswith(".npy"):
        return NpyFile(path, chunk_rows)
    if name.endswith(".npz"):
        return NpzFile(path, chunk_rows)
    if name.endswith(".csv"):
        return CsvFile(path, chunk_rows, label_column)
    if name.endswith(".csv.gz"):
        return CsvGzFile(path, chunk_rows, label_column)
    if name.endswith((".parquet", ".pq")):
        return ParquetFile(path, chunk_rows, label_column, use_threads)
    if is_idx_images(path.name):
        return open_idx(path, chunk_rows)
    if is_idx_labels(path.name):
        raise DataError(f"{path}: is an IDX labels file; give the images file (*-images-idx3-ubyte)")
    raise DataError(f"{path}: unsupported input; accepted: builtin:NAME, {_FORMS}, or a folder of them")

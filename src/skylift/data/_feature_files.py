"""Per-file feature readers for chunked reading: the contract, .npy (memory-mapped), .npz, in-memory.

Every reader reads headers only when built; rows are read a chunk at a time, so memory stays
bounded by one batch whatever the file size. Shape legend: n rows of a piece, S... sample shape.
"""

from __future__ import annotations

import io
import math
import mmap
import os
import zipfile
from abc import ABC, abstractmethod
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal, cast

import numpy as np

from skylift.data._arrays import _ZIP_ERRORS, _npz_key, _read_npy_header
from skylift.data._dataset import pixels_to_unit
from skylift.data._io import first_line, read_exactly
from skylift.errors import DataError

PAGE = mmap.PAGESIZE
_SKIP_BYTES = 16 << 20  # 16 MiB: the most a sequential reader holds while skipping rows
_NPZ_FEATURES = ("x", "X", "features", "images")  # feature arrays looked for in an .npz, in order


class FeatureFile(ABC):
    """One file's features, cut into chunks of `chunk_rows` rows (or of bytes, for csv).

    Contract: building one reads and checks the header only (a problem is a one-line DataError
    naming the file). `pieces(j, batch_rows)` yields chunk j's rows in file order as float32
    arrays of shape (n, *sample_shape), n <= batch_rows, possibly non-contiguous views that may
    be written to without changing the file; values are not yet checked for NaN. Chunks may be
    read in any order, but reading them in increasing order is fastest (sequential formats
    reopen the file to go back). Not thread-safe: one reader per process.
    """

    def __init__(self, path: Path, chunk_rows: int) -> None:
        self.path = path
        self.chunk_rows = chunk_rows
        self.sample_shape: tuple[int, ...] = ()
        self.rows: int | None = None
        """Rows in the file; None when only reading it all tells (csv)."""

    @property
    def name(self) -> str:
        return str(self.path)

    @abstractmethod
    def chunk_count(self) -> int:
        """Number of chunks; known without reading the data."""

    @abstractmethod
    def pieces(self, j: int, batch_rows: int) -> Iterator[np.ndarray]:
        """Rows of chunk j, in order, as float32 (n, *sample_shape) pieces of at most batch_rows rows."""

    def row_of(self, j: int, offset: int) -> int:
        """0-based data row in the file of row `offset` of chunk j (for error messages)."""
        return j * self.chunk_rows + offset

    def estimated_rows(self) -> int:
        """`rows`, or an estimate when it is unknown."""
        return self.rows if self.rows is not None else 0

    def identity(self) -> dict[str, Any]:
        """What names this file's content for resumable jobs: resolved path, size, mtime (ns)."""
        st = self.path.stat()
        return {"path": str(self.path.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}

    def close(self) -> None:  # noqa: B027 - most readers hold nothing open
        """Release open files and mappings."""


class RowFile(FeatureFile):
    """A file whose row count is known from its header: chunk j is rows [j*chunk_rows, (j+1)*chunk_rows)."""

    def chunk_count(self) -> int:
        assert self.rows is not None
        return math.ceil(self.rows / self.chunk_rows)

    def pieces(self, j: int, batch_rows: int) -> Iterator[np.ndarray]:
        assert self.rows is not None
        start = j * self.chunk_rows
        stop = min(start + self.chunk_rows, self.rows)
        for lo in range(start, stop, batch_rows):
            hi = min(lo + batch_rows, stop)
            yield self.read_rows(lo, hi)
            self.release(lo, hi)

    @abstractmethod
    def read_rows(self, lo: int, hi: int) -> np.ndarray:
        """Rows [lo, hi) as float32 (hi - lo, *sample_shape)."""

    def release(self, lo: int, hi: int) -> None:
        """Rows [lo, hi) have been used: drop what was kept for them."""


def as_features(x: np.ndarray, where: str) -> np.ndarray:
    """Raw rows -> float32 as training reads them: uint8 are pixel bytes (x / 255), other numbers values."""
    if x.dtype == np.float32:
        return x
    if x.dtype == np.uint8:
        return pixels_to_unit(x)
    if x.dtype.kind not in "biuf":
        raise DataError(f"{where}: features must be numeric, got dtype {x.dtype}")
    with np.errstate(over="ignore", invalid="ignore"):  # overflow becomes inf, reported with its row
        return x.astype(np.float32)


def concat_rows(pieces: list[np.ndarray]) -> np.ndarray:
    """Row-wise concatenation that keeps column-major pieces column-major (no transposing copy)."""
    if len(pieces) == 1:
        return pieces[0]
    if all(p.ndim == 2 and p.flags.f_contiguous and not p.flags.c_contiguous for p in pieces):
        return np.concatenate([p.T for p in pieces], axis=1).T
    return np.concatenate(pieces)


def _check_array_dtype(dtype: np.dtype[Any], shape: tuple[int, ...], where: str) -> tuple[int, ...]:
    """The sample shape of an array of features; one line when it cannot be features."""
    if dtype.hasobject:
        raise DataError(f"{where}: holds Python objects; pickled data is never loaded, store plain arrays")
    if dtype.kind not in "biuf":
        raise DataError(f"{where}: features must be numeric, got dtype {dtype}")
    if len(shape) == 0:
        raise DataError(f"{where}: features must be an array with one row per sample, got a scalar")
    sample = shape[1:] if len(shape) > 1 else (1,)  # 1-D: one feature per row, as training reads it
    if math.prod(sample) == 0:
        raise DataError(f"{where}: samples have no features (shape {shape})")
    return tuple(int(d) for d in sample)


class NpyFile(RowFile):
    """A .npy file, memory-mapped copy-on-write; pages of used rows are handed back as it goes."""

    def __init__(self, path: Path, chunk_rows: int) -> None:
        super().__init__(path, chunk_rows)
        try:
            with open(path, "rb") as stream:
                shape, fortran, dtype = _read_npy_header(cast(io.BufferedIOBase, stream), str(path))
                header = stream.tell()
                size = os.fstat(stream.fileno()).st_size
        except FileNotFoundError:
            raise DataError(f"{path}: file not found") from None
        except OSError as exc:
            raise DataError(f"{path}: cannot read ({first_line(exc)})") from None
        if any(d < 0 for d in shape):
            raise DataError(f"{path}: not a valid .npy array (negative size in shape {shape})")
        self.sample_shape = _check_array_dtype(dtype, shape, str(path))
        nbytes = math.prod(shape) * dtype.itemsize
        if header + nbytes != size:
            problem = "truncated" if header + nbytes > size else "has trailing bytes"
            raise DataError(
                f"{path}: {problem}: header promises {nbytes} bytes of {dtype} data, "
                f"file holds {size - header}"
            )
        self.rows = int(shape[0])
        self._shape, self._dtype, self._fortran, self._header = shape, dtype, fortran, header
        self._row_bytes = math.prod(self.sample_shape) * dtype.itemsize
        self._map: mmap.mmap | None = None
        self._array: np.ndarray | None = None

    def _rows_array(self) -> np.ndarray:
        if self._array is None:
            with open(self.path, "rb") as f:
                # ACCESS_COPY: writable views (torch takes them without a copy); writes never reach the file.
                self._map = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY)
            order: Literal["C", "F"] = "F" if self._fortran else "C"
            full = np.ndarray(self._shape, self._dtype, buffer=self._map, offset=self._header, order=order)
            self._array = full if full.ndim > 1 else full.reshape(-1, 1)
        return self._array

    def read_rows(self, lo: int, hi: int) -> np.ndarray:
        return as_features(self._rows_array()[lo:hi], str(self.path))

    def release(self, lo: int, hi: int) -> None:
        if self._map is None:
            return
        if self._fortran:  # a row range touches every column: drop every mapped page
            start, end = 0, len(self._map)
        else:
            start = (self._header + lo * self._row_bytes) // PAGE * PAGE
            end = self._header + hi * self._row_bytes
        if end > start:
            self._map.madvise(mmap.MADV_DONTNEED, start, end - start)

    def close(self) -> None:
        # Dropped, never closed: numpy keeps the map object, not a buffer export, under its views, so
        # closing it would unmap memory that arrays handed out may still read. It goes with the last one.
        self._array = None
        self._map = None


class SequentialFile(RowFile):
    """Rows read front to back from a stream (npz members, gzip IDX); going back reopens the stream."""

    def __init__(self, path: Path, chunk_rows: int) -> None:
        super().__init__(path, chunk_rows)
        self._stream: io.BufferedIOBase | None = None
        self._pos = 0  # next row the stream will give
        self._raw_shape: tuple[int, ...] = ()
        self._dtype: np.dtype[Any] = np.dtype(np.uint8)

    @abstractmethod
    def _open(self) -> io.BufferedIOBase:
        """A stream positioned at the first row."""

    def _row_bytes(self) -> int:
        return math.prod(self._raw_shape[1:]) * self._dtype.itemsize

    def read_rows(self, lo: int, hi: int) -> np.ndarray:
        try:
            if self._stream is None or lo < self._pos:
                self.close()
                self._stream, self._pos = self._open(), 0
            size = self._row_bytes()
            while self._pos < lo:  # skip, a bounded block at a time
                n = min(lo - self._pos, max(1, _SKIP_BYTES // max(size, 1)))
                read_exactly(self._stream, n * size, self.name, "rows")
                self._pos += n
            data = read_exactly(self._stream, (hi - lo) * size, self.name, "rows")
            self._pos = hi
            if hi == self.rows and self._stream.read(1):
                raise DataError(f"{self.name}: has trailing bytes after its {self.rows} rows")
        except _ZIP_ERRORS as exc:
            raise DataError(f"{self.name}: damaged compressed data ({first_line(exc)})") from None
        x = np.frombuffer(data, dtype=self._dtype).reshape(hi - lo, *self._raw_shape[1:])
        return as_features(x, self.name).reshape(hi - lo, *self.sample_shape)

    def close(self) -> None:
        if self._stream is not None:
            self._stream.close()
            self._stream = None


class NpzFile(SequentialFile):
    """The features array of an .npz (x, X, features or images, or its only array), read as a stream."""

    def __init__(self, path: Path, chunk_rows: int) -> None:
        super().__init__(path, chunk_rows)
        try:
            with zipfile.ZipFile(path) as archive:
                members = {_npz_key(n): n for n in archive.namelist()}
                self._member = self._pick(members)
                self.where = f"{path}[{_npz_key(self._member)}]"
                with archive.open(self._member) as stream:
                    header = _read_npy_header(cast(io.BufferedIOBase, stream), self.where)
                    header_bytes = stream.tell()
                size = archive.getinfo(self._member).file_size
        except _ZIP_ERRORS as exc:
            raise DataError(f"{path}: not a readable .npz archive ({first_line(exc)})") from None
        shape, fortran, dtype = header
        self.sample_shape = _check_array_dtype(dtype, shape, self.where)
        if fortran and len(shape) > 1:
            raise DataError(
                f"{self.where}: is stored column-major (Fortran order) and cannot be read in chunks; "
                "save it with np.ascontiguousarray"
            )
        nbytes = math.prod(shape) * dtype.itemsize
        if header_bytes + nbytes != size:
            problem = "truncated" if header_bytes + nbytes > size else "has trailing bytes"
            raise DataError(f"{self.where}: {problem}: header promises {nbytes} bytes of {dtype} data")
        self.rows, self._raw_shape, self._dtype = int(shape[0]), shape, dtype

    @property
    def name(self) -> str:
        return self.where

    def _pick(self, members: dict[str, str]) -> str:
        for key in _NPZ_FEATURES:
            if key in members:
                return members[key]
        if len(members) == 1:
            return next(iter(members.values()))
        raise DataError(
            f"{self.path}: no features array; found {sorted(members)}, expected "
            f"{', '.join(_NPZ_FEATURES)} (or an archive holding a single array)"
        )

    def _open(self) -> io.BufferedIOBase:
        archive = zipfile.ZipFile(self.path)
        stream = cast(io.BufferedIOBase, archive.open(self._member))
        _read_npy_header(stream, self.where)
        return stream


class MemoryFile(RowFile):
    """Features already in memory (`builtin:NAME`)."""

    def __init__(self, name: str, x: np.ndarray, chunk_rows: int) -> None:
        super().__init__(Path(name), chunk_rows)
        self._name, self._x = name, x
        self.rows, self.sample_shape = len(x), tuple(int(d) for d in x.shape[1:])

    @property
    def name(self) -> str:
        return self._name

    def read_rows(self, lo: int, hi: int) -> np.ndarray:
        return self._x[lo:hi]

    def identity(self) -> dict[str, Any]:
        return {"builtin": self._name}

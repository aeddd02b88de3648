"""MNIST IDX image files for chunked reading: memory-mapped when plain, streamed when gzip.

Each image is flattened to rows*cols pixels scaled to [0, 1], as training reads IDX files.
"""

from __future__ import annotations

import gzip
import io
import mmap
import os
import zlib
from pathlib import Path
from typing import BinaryIO, cast

import numpy as np

from skylift.data._dataset import pixels_to_unit
from skylift.data._feature_files import PAGE, RowFile, SequentialFile
from skylift.data._idx import IDX_NAME
from skylift.data._io import first_line, read_exactly
from skylift.errors import DataError

_UBYTE = 0x08


def _idx_header(stream: BinaryIO, path: Path) -> tuple[int, int, int]:
    """(images, rows, cols) from an IDX images header; one line for anything else."""
    head = read_exactly(cast(io.BufferedIOBase, stream), 4, str(path), "header")
    if head[0] != 0 or head[1] != 0:
        raise DataError(f"{path}: wrong magic number {head.hex()}; not an IDX file")
    if head[2] != _UBYTE:
        raise DataError(
            f"{path}: unsupported IDX element type 0x{head[2]:02x}; only 0x08 (unsigned byte) is read"
        )
    if head[3] == 1:
        raise DataError(f"{path}: is an IDX labels file; give the images file (*-images-idx3-ubyte)")
    if head[3] != 3:
        raise DataError(f"{path}: IDX header has {head[3]} dimensions, expected 3 (images)")
    dims = np.frombuffer(read_exactly(cast(io.BufferedIOBase, stream), 12, str(path), "header"), dtype=">u4")
    return int(dims[0]), int(dims[1]), int(dims[2])


def open_idx(path: Path, chunk_rows: int) -> RowFile:
    """An IDX images file: memory-mapped when plain, streamed when gzip (by name or magic)."""
    try:
        with open(path, "rb") as raw:
            gzipped = path.name.endswith(".gz") or raw.read(2) == b"\x1f\x8b"
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({first_line(exc)})") from None
    return IdxGzFile(path, chunk_rows) if gzipped else IdxFile(path, chunk_rows)


class IdxFile(RowFile):
    """Plain IDX images, memory-mapped; each image flattened to rows*cols pixels scaled to [0, 1]."""

    def __init__(self, path: Path, chunk_rows: int) -> None:
        super().__init__(path, chunk_rows)
        with open(path, "rb") as f:
            n, h, w = _idx_header(f, path)
            size = os.fstat(f.fileno()).st_size
        if 16 + n * h * w != size:
            problem = "truncated" if 16 + n * h * w > size else "has trailing bytes"
            raise DataError(
                f"{path}: {problem}: header promises {n * h * w} bytes of data, the file holds {size - 16}"
            )
        if h * w == 0:
            raise DataError(f"{path}: images have no pixels ({h}x{w})")
        self.rows, self.sample_shape = n, (h * w,)
        self._map: mmap.mmap | None = None

    def read_rows(self, lo: int, hi: int) -> np.ndarray:
        if self._map is None:
            with open(self.path, "rb") as f:
                self._map = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        width = self.sample_shape[0]
        x = np.frombuffer(self._map, dtype=np.uint8, count=(hi - lo) * width, offset=16 + lo * width)
        return pixels_to_unit(x.reshape(hi - lo, width))

    def release(self, lo: int, hi: int) -> None:
        if self._map is not None:
            start = (16 + lo * self.sample_shape[0]) // PAGE * PAGE
            self._map.madvise(mmap.MADV_DONTNEED, start, 16 + hi * self.sample_shape[0] - start)

    def close(self) -> None:
        self._map = None  # dropped, never closed: see NpyFile.close


class IdxGzFile(SequentialFile):
    """Gzip IDX images, decompressed as a stream."""

    def __init__(self, path: Path, chunk_rows: int) -> None:
        super().__init__(path, chunk_rows)
        try:
            with gzip.open(path, "rb") as f:
                n, h, w = _idx_header(cast(BinaryIO, f), path)
        except (OSError, EOFError, zlib.error) as exc:
            raise DataError(f"{path}: corrupt gzip data ({first_line(exc)})") from None
        if h * w == 0:
            raise DataError(f"{path}: images have no pixels ({h}x{w})")
        self.rows, self.sample_shape = n, (h * w,)
        self._raw_shape, self._dtype = (n, h * w), np.dtype(np.uint8)

    def _open(self) -> io.BufferedIOBase:
        stream = cast(io.BufferedIOBase, gzip.open(self.path, "rb"))  # noqa: SIM115 - the caller owns it
        stream.read(16)
        return stream


def is_idx_images(name: str) -> bool:
    match = IDX_NAME.match(name)
    return match is not None and match["role"] == "images"


def is_idx_labels(name: str) -> bool:
    match = IDX_NAME.match(name)
    return match is not None and match["role"] == "labels"

"""MNIST's IDX files (plain or gzip): the header parser, image/label pairing and folder layout.

Images come back flattened, shape (N, rows*cols) float32 in [0, 1] (pixel / 255), so MNIST read
from IDX files has the same layout as `builtin:digits28`.
"""

from __future__ import annotations

import gzip
import io
import math
import re
import zlib
from pathlib import Path

import numpy as np

from skylift.data._build import build_dataset
from skylift.data._dataset import Dataset
from skylift.data._io import first_line, read_exactly
from skylift.errors import DataError

IDX_NAME = re.compile(
    r"^(?P<stem>.+)-(?P<role>images|labels)(?P<sep>[-.])idx(?P<ndim>[13])-ubyte(?P<gz>\.gz)?$"
)
_UBYTE = 0x08  # the only IDX element type MNIST-style data sets use
_GZIP_MAGIC = b"\x1f\x8b"
_MAX_DEFLATE_RATIO = 1032  # deflate cannot expand more than ~1032x: a bound on honest headers
_ROLE_NDIM = {"images": 3, "labels": 1}
_EXPECTED = "train-images-idx3-ubyte[.gz] and train-labels-idx1-ubyte[.gz] (optionally t10k-*)"


def is_idx_name(name: str) -> bool:
    """Whether a file name looks like an IDX images or labels file."""
    return IDX_NAME.match(name) is not None


def read_idx_pair(path: Path, classes: tuple[str, ...] | None) -> Dataset:
    """Images and labels from an images or a labels file and its sibling (same stem, other role)."""
    match = IDX_NAME.match(path.name)
    if match is None:
        raise DataError(f"{path}: not an IDX file name (expected *-images-idx3-ubyte or *-labels-idx1-ubyte)")
    other = "labels" if match["role"] == "images" else "images"
    sibling = _find(path.parent, match["stem"], other, prefer_sep=match["sep"], prefer_gz=bool(match["gz"]))
    if sibling is None:
        expected = f"{match['stem']}-{other}-idx{_ROLE_NDIM[other]}-ubyte[.gz]"
        raise DataError(f"{path}: its {other} file {expected} was not found beside it")
    images, labels = (path, sibling) if match["role"] == "images" else (sibling, path)
    return _read_pair(images, labels, classes)


def read_idx_folder(folder: Path, classes: tuple[str, ...] | None) -> tuple[Dataset, Dataset | None]:
    """train-* images/labels of a folder, plus its t10k-* (or test-*) pair as the bundled test set."""
    stems = sorted({m["stem"] for p in folder.iterdir() if (m := IDX_NAME.match(p.name)) is not None})
    train_stems = [s for s in stems if s == "train" or s.endswith("-train")]
    if not train_stems:
        found = f"; IDX stems found: {', '.join(stems)}" if stems else ""
        raise DataError(f"{folder}: folder holds no IDX training files, expected {_EXPECTED}{found}")
    if len(train_stems) > 1:
        raise DataError(
            f"{folder}: folder holds several IDX training sets ({', '.join(train_stems)}); "
            "give the files directly"
        )
    train_stem = train_stems[0]
    data = _read_stem(folder, train_stem, classes)
    base = train_stem[: -len("train")]
    for test_stem in (base + "t10k", base + "test"):
        if test_stem in stems:
            return data, _read_stem(folder, test_stem, classes or data.classes)
    return data, None


def _read_stem(folder: Path, stem: str, classes: tuple[str, ...] | None) -> Dataset:
    images = _find(folder, stem, "images")
    labels = _find(folder, stem, "labels")
    if images is None or labels is None:
        missing = f"{stem}-{'images-idx3' if images is None else 'labels-idx1'}-ubyte[.gz]"
        raise DataError(f"{folder}: folder has {stem}-* IDX files but no {missing}")
    return _read_pair(images, labels, classes)


def _find(folder: Path, stem: str, role: str, prefer_sep: str = "-", prefer_gz: bool = False) -> Path | None:
    """The existing `stem`-`role` IDX file; uncompressed and '-' separated first unless told otherwise."""
    ndim = _ROLE_NDIM[role]
    seps = (prefer_sep, "." if prefer_sep == "-" else "-")
    gzs = (".gz", "") if prefer_gz else ("", ".gz")
    for sep in seps:
        for gz in gzs:
            candidate = folder / f"{stem}-{role}{sep}idx{ndim}-ubyte{gz}"
            if candidate.is_file():
                return candidate
    return None


def _read_pair(images_path: Path, labels_path: Path, classes: tuple[str, ...] | None) -> Dataset:
    labels = read_idx(labels_path, ndim=1)
    images = read_idx(images_path, ndim=3)
    if len(images) != len(labels):
        raise DataError(
            f"{images_path}: holds {len(images)} images but {labels_path.name} holds {len(labels)} labels"
        )
    return build_dataset(str(images_path), images.reshape(len(images), -1), labels, classes)


def read_idx(path: Path, ndim: int) -> np.ndarray:
    """The uint8 array of an IDX file (gzip detected by name or magic); header checked before reading."""
    gzipped = path.name.endswith(".gz")
    try:
        with open(path, "rb") as raw:
            size = raw.seek(0, 2)
            raw.seek(0)
            gzipped = gzipped or raw.read(2) == _GZIP_MAGIC
            raw.seek(0)
            if not gzipped:
                return _parse(raw, path, ndim, max_data=size)
            with gzip.GzipFile(fileobj=raw) as stream:
                return _parse(stream, path, ndim, max_data=size * _MAX_DEFLATE_RATIO, exact=False)
    except (OSError, EOFError, zlib.error) as exc:  # gzip.BadGzipFile is an OSError
        kind = "corrupt gzip data" if gzipped else "cannot read"
        raise DataError(f"{path}: {kind} ({first_line(exc)})") from None


def _parse(stream: io.BufferedIOBase, path: Path, ndim: int, max_data: int, exact: bool = True) -> np.ndarray:
    """Read header then data. `max_data` is the file size (exact) or an upper bound (gzip)."""
    head = read_exactly(stream, 4, str(path), "header")
    if head[0] != 0 or head[1] != 0:
        raise DataError(f"{path}: wrong magic number {head.hex()}; not an IDX file")
    if head[2] != _UBYTE:
        raise DataError(
            f"{path}: unsupported IDX element type 0x{head[2]:02x}; only 0x08 (unsigned byte) is read"
        )
    if head[3] != ndim:
        raise DataError(f"{path}: IDX header has {head[3]} dimensions, expected {ndim}")
    dims_raw = read_exactly(stream, 4 * ndim, str(path), "header")
    dims = tuple(int(d) for d in np.frombuffer(dims_raw, dtype=">u4"))  # big-endian uint32 sizes
    header = 4 + 4 * ndim
    nbytes = math.prod(dims)
    available = max_data - header
    if nbytes > available or (exact and nbytes < available):
        problem = "truncated" if nbytes > available else "has trailing bytes"
        holds = (
            f"the file holds {available}"
            if exact
            else f"more than a {max_data // _MAX_DEFLATE_RATIO}-byte gzip file can hold"
        )
        raise DataError(f"{path}: {problem}: header promises {nbytes} bytes of data {dims}, {holds}")
    data = read_exactly(stream, nbytes, str(path), "data")
    if stream.read(1):
        raise DataError(f"{path}: has trailing bytes after the {nbytes} bytes its header promises")
    return np.frombuffer(data, dtype=np.uint8).reshape(dims)

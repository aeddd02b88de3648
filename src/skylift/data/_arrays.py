"""NumPy array files: `.npz` archives and `.npy` feature/label pairs, never unpickled."""

from __future__ import annotations

import io
import math
import os
import zipfile
import zlib
from pathlib import Path
from typing import cast

import numpy as np

from skylift.data._build import build_dataset
from skylift.data._dataset import Dataset
from skylift.data._io import first_line, read_exactly
from skylift.errors import DataError

# What a damaged zip or compressed stream raises from the standard library (zipfile, zlib, lzma, bz2).
_ZIP_ERRORS = (
    zipfile.BadZipFile,
    zlib.error,
    EOFError,
    OSError,
    NotImplementedError,
    RuntimeError,
    ValueError,
)

# Key pairs accepted in an .npz, in the order tried; Keras' mnist.npz layout is checked first.
_NPZ_PAIRS = (("x", "y"), ("X", "y"), ("X", "Y"), ("features", "labels"), ("images", "labels"))
_NPZ_SPLIT = ("x_train", "y_train", "x_test", "y_test")

# Sibling naming of a labels file next to a features .npy: prefix of features -> prefix of labels.
_SIBLING_PREFIXES = (("x", "y"), ("X", "y"), ("X", "Y"), ("features", "labels"), ("images", "labels"))


def read_npz(path: Path, classes: tuple[str, ...] | None) -> tuple[Dataset, Dataset | None]:
    """Data (and a bundled test set for Keras' x_train/y_train/x_test/y_test layout) from an .npz."""
    try:
        with zipfile.ZipFile(path) as archive:
            members = {_npz_key(name): name for name in archive.namelist()}
            keys = _npz_layout(path, members)
            arrays = {key: _read_member(path, archive, members[key]) for key in keys}
    except _ZIP_ERRORS as exc:
        raise DataError(f"{path}: not a readable .npz archive ({first_line(exc)})") from None
    if len(keys) == 2:
        return build_dataset(str(path), arrays[keys[0]], arrays[keys[1]], classes), None
    data = build_dataset(f"{path}[x_train]", arrays["x_train"], arrays["y_train"], classes)
    test = None
    if "x_test" in arrays:
        test = build_dataset(f"{path}[x_test]", arrays["x_test"], arrays["y_test"], classes or data.classes)
    return data, test


def read_npy_pair(features: Path, labels: Path, classes: tuple[str, ...] | None) -> Dataset:
    """Features and labels from two .npy files."""
    x = _read_npy_file(features)
    y = _read_npy_file(labels)
    return build_dataset(f"{features},{labels}", x, y, classes)


def labels_sibling(features: Path) -> Path:
    """The labels .npy that sits beside a features .npy (x*->y*, features*->labels*, images*->labels*)."""
    name = features.name
    tried: list[str] = []
    for prefix, label_prefix in _SIBLING_PREFIXES:
        if name.startswith(prefix):
            candidate = features.with_name(label_prefix + name[len(prefix) :])
            if candidate.name not in tried:
                tried.append(candidate.name)
            if candidate.is_file():
                return candidate
    looked = f" (looked for {', '.join(tried)})" if tried else ""
    raise DataError(
        f"{features}: no labels file found beside it{looked}; name the pair x*.npy/y*.npy, "
        "features*.npy/labels*.npy or images*.npy/labels*.npy, or give both as 'features.npy,labels.npy'"
    )


def _npz_key(member: str) -> str:
    return member[: -len(".npy")] if member.endswith(".npy") else member


def _npz_layout(path: Path, members: dict[str, str]) -> tuple[str, ...]:
    """The keys to read: (x_train, y_train[, x_test, y_test]) or one features/labels pair."""
    if "x_train" in members and "y_train" in members:
        has_test = ("x_test" in members, "y_test" in members)
        if has_test[0] != has_test[1]:
            missing = "y_test" if has_test[0] else "x_test"
            raise DataError(f"{path}: has x_train/y_train and one test array but no {missing!r}")
        return _NPZ_SPLIT if all(has_test) else _NPZ_SPLIT[:2]
    for pair in _NPZ_PAIRS:
        if pair[0] in members and pair[1] in members:
            return pair
    accepted = "x/y, X/y, features/labels, images/labels or x_train/y_train[/x_test/y_test]"
    raise DataError(f"{path}: no known array names; found {sorted(members)}, expected {accepted}")


def _read_member(path: Path, archive: zipfile.ZipFile, member: str) -> np.ndarray:
    info = archive.getinfo(member)
    with archive.open(info) as stream:  # a ZipExtFile, which typeshed types as IO[bytes]
        return _read_npy_stream(cast(io.BufferedIOBase, stream), info.file_size, f"{path}[{member}]")


def _read_npy_file(path: Path) -> np.ndarray:
    try:
        with open(path, "rb") as stream:
            return _read_npy_stream(stream, os.fstat(stream.fileno()).st_size, str(path))
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({first_line(exc)})") from None


def _read_npy_stream(stream: io.BufferedIOBase, size: int, where: str) -> np.ndarray:
    """One .npy array of `size` bytes from `stream`; its header is checked before any allocation."""
    shape, fortran_order, dtype = _read_npy_header(stream, where)
    if dtype.hasobject:
        raise DataError(f"{where}: holds Python objects; pickled data is never loaded, store plain arrays")
    if any(d < 0 for d in shape):
        raise DataError(f"{where}: not a valid .npy array (negative size in shape {shape})")
    header_bytes = stream.tell()
    nbytes = math.prod(shape) * dtype.itemsize
    if header_bytes + nbytes != size:
        problem = "truncated" if header_bytes + nbytes > size else "has trailing bytes"
        raise DataError(
            f"{where}: {problem}: header promises {nbytes} bytes of {dtype} data, file holds "
            f"{size - header_bytes}"
        )
    buffer = read_exactly(stream, nbytes, where, "array data")
    if stream.read(1):  # also makes a zip member verify its CRC
        raise DataError(f"{where}: has trailing bytes after the array data")
    array = np.frombuffer(buffer, dtype=dtype)
    return array.reshape(shape, order="F" if fortran_order else "C")


def _read_npy_header(
    stream: io.BufferedIOBase, where: str
) -> tuple[tuple[int, ...], bool, np.dtype[np.generic]]:
    fmt = np.lib.format
    try:
        version = fmt.read_magic(stream)
        if version == (1, 0):
            return fmt.read_array_header_1_0(stream)
        if version == (2, 0):
            return fmt.read_array_header_2_0(stream)
    except (zipfile.BadZipFile, zlib.error, OSError):
        raise  # the stream itself is damaged; the caller names the file
    except Exception as exc:  # numpy parses the header with ast/tokenize: many error types, all "bad header"
        raise DataError(f"{where}: not a valid .npy array ({first_line(exc)})") from None
    raise DataError(f"{where}: unsupported .npy format version {version[0]}.{version[1]}")

"""Decoded media kept on disk by content: a re-run, a tuning trial or an evaluation skips decoding.

One file per (list of file contents, preprocessing settings) under `SKYLIFT_HOME/cache/media/`,
named by the SHA-256 of both: renaming or moving the files keeps the entry, editing one byte of
one file or one setting that changes the decoded array makes a new one. Images are kept as the
fitted uint8 pixels, normalised when loaded (4x smaller than float32, and another mean/std reuses
the entry); audio as its float32 log-mel features. Each file holds a header with the payload's
shape, dtype and SHA-256, checked on every read: a file that is truncated, edited or from another
format version is decoded again and replaced, never trusted. Writes are atomic (temp file, fsync,
rename).
"""

from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from skylift._atomic import atomic_open
from skylift.data._io import first_line
from skylift.errors import DataError

FORMAT = 1  # bump when the layout or what a decode yields changes: old entries are then ignored
_MAGIC = b"SKYMEDIA"
_ALIGN = 64  # payload offset: aligned for numpy
_CHUNK = 1 << 20  # bytes hashed per read


def file_digest(path: Path) -> str:
    """SHA-256 (hex) of a file's bytes, read in 1 MiB pieces."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def cache_key(digests: Sequence[str], settings: dict[str, Any]) -> str:
    """The entry's name: SHA-256 over the format, the decode settings (canonical JSON) and every
    file's digest, in order."""
    h = hashlib.sha256(f"skylift-media-v{FORMAT}\n".encode())
    h.update(json.dumps(settings, sort_keys=True, separators=(",", ":")).encode())
    for digest in digests:
        h.update(b"\n" + digest.encode("ascii"))
    return h.hexdigest()


class MediaCache:
    """Decoded arrays by key in one folder. Safe for several processes: a reader sees an old entry,
    a new one or none (atomic rename), and two writers of one key write the same bytes."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def path(self, key: str) -> Path:
        return self.folder / f"{key}.media"

    def get(self, key: str, shape: tuple[int, ...], dtype: str) -> np.ndarray | None:
        """The entry's array when it is intact and has `shape` and `dtype`; None otherwise."""
        path = self.path(key)
        try:
            with path.open("rb") as f:
                head = f.read(len(_MAGIC) + 4)
                if len(head) != len(_MAGIC) + 4 or head[: len(_MAGIC)] != _MAGIC:
                    return None
                (size,) = struct.unpack("<I", head[len(_MAGIC) :])
                header = json.loads(f.read(size))
                if (
                    header.get("format") != FORMAT
                    or header.get("dtype") != dtype
                    or tuple(header.get("shape", ())) != shape
                ):
                    return None
                f.seek(_payload_offset(size))
                count = int(np.prod(shape))
                array = np.fromfile(f, dtype=np.dtype(dtype), count=count)
                if array.size != count or f.read(1):  # truncated, or something appended
                    return None
        except (OSError, ValueError, UnicodeDecodeError, struct.error):  # missing, unreadable, edited
            return None
        if hashlib.sha256(array.data).hexdigest() != header.get("sha256"):
            return None
        return array.reshape(shape)

    def put(self, key: str, array: np.ndarray) -> None:
        """Store `array` under `key` (atomically: readers never see half an entry)."""
        data = np.ascontiguousarray(array)
        header = json.dumps(
            {
                "format": FORMAT,
                "dtype": data.dtype.name,
                "shape": list(data.shape),
                "sha256": hashlib.sha256(data.data).hexdigest(),
            }
        ).encode()
        pad = _payload_offset(len(header)) - len(_MAGIC) - 4 - len(header)
        try:
            with atomic_open(self.path(key), "wb", sync_dir=False) as out:  # remade if lost
                out.write(_MAGIC + struct.pack("<I", len(header)) + header + b"\0" * pad)
                out.write(data.data)
        except OSError as exc:
            raise DataError(f"{self.folder}: cannot write the media cache ({first_line(exc)})") from None


def _payload_offset(header_size: int) -> int:
    raw = len(_MAGIC) + 4 + header_size
    return -(-raw // _ALIGN) * _ALIGN

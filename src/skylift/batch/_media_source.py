"""Media files to predict: a folder of images or audio clips, or a list of their paths, decoded a
batch at a time with the preprocessing recorded with the model (what training applied).

Rows are files, in a fixed order: a folder's files sorted by their path relative to it (sub-folders
included, dot-names skipped; files of other types are left out and counted in a note), a list's
paths in its order (`.txt`: one path per line, blank lines skipped; `.csv`: the `path` column, or
the only column). A relative path in a list is relative to the list's folder. Each row's key (the
output's `path` column) is the path as the list writes it, or relative to the folder. Every file
is checked to exist before any work; one that does not decode ends the job with one line naming it.
Same contract as `skylift.data.FeatureSource` for what batch inference uses: chunk_count, read,
rows, identity.

Shape legend: B files of a batch   S... the model's input shape (the preprocessing's output)
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from skylift.errors import DataError

if TYPE_CHECKING:
    from skylift.data._media import Preprocessing

EXTENSIONS = {"image": (".png", ".jpg", ".jpeg", ".webp"), "audio": (".wav", ".flac")}
"""The files a folder contributes, by the model's preprocessing kind."""
LISTS = (".txt", ".csv")
KEY = "path"
"""The output's key column."""
BATCH_ROWS = 64
CHUNK_ROWS = 256
"""Defaults for media models (numeric rows: 4096 and 16384): a decoded 224x224 RGB image is 600 kB
and costs ~1000x a numeric row to prepare, so smaller chunks spread the files over the workers."""


def default_sizes(data: dict[str, Any], batch_rows: int | None, chunk_rows: int | None) -> tuple[int, int]:
    """(batch rows, chunk rows): the given ones, else the defaults for the model's input (its
    model.json "data")."""
    media = data.get("input") in EXTENSIONS
    default_batch, default_chunk = (BATCH_ROWS, CHUNK_ROWS) if media else (4096, 16384)
    return batch_rows or default_batch, chunk_rows or default_chunk


class MediaSource:
    """Files in numbered chunks of `chunk_rows`; `read(k, b)` yields (keys, float32 (B, S...)) per batch."""

    def __init__(self, source: str, prep: Preprocessing, chunk_rows: int) -> None:
        self.source = source
        self.path = Path(source.strip()).expanduser()
        self.prep = prep
        self.notes: list[str] = []
        self._keys, self._files = self._list()
        self._chunk_rows = chunk_rows

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return tuple(self.prep.shape)

    @property
    def features(self) -> int:
        return int(np.prod(self.prep.shape))

    @property
    def chunk_count(self) -> int:
        return max(1, -(-len(self._files) // self._chunk_rows))

    @property
    def rows(self) -> int:
        return len(self._files)

    def estimated_rows(self) -> int:
        return len(self._files)

    def identity(self) -> list[dict[str, Any]]:
        """The list or folder, and a hash of every file's key, size and mtime (resuming is per job)."""
        h = hashlib.sha256()
        for key, path in zip(self._keys, self._files, strict=True):
            st = path.stat()
            h.update(f"{key}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        return [{"path": str(self.path.resolve()), "files": len(self._files), "sha256": h.hexdigest()}]

    def read(self, k: int, batch_rows: int) -> Iterator[tuple[list[str], np.ndarray]]:
        if not 0 <= k < self.chunk_count:
            raise IndexError(f"chunk {k} of {self.chunk_count}")
        lo, hi = k * self._chunk_rows, min((k + 1) * self._chunk_rows, len(self._files))
        for start in range(lo, hi, batch_rows):
            stop = min(start + batch_rows, hi)
            x_BS = np.empty((stop - start, *self.prep.shape), dtype=np.float32)
            for i in range(start, stop):
                x_BS[i - start] = self.prep.decode(_read(self._files[i], self._keys[i]), self._keys[i])
            yield self._keys[start:stop], x_BS

    def close(self) -> None:
        pass

    def _list(self) -> tuple[list[str], list[Path]]:
        path = self.path
        kind = self.prep.kind
        if path.is_dir():
            keys, files = _folder(path, EXTENSIONS[kind], self.notes)
        elif path.suffix.lower() in LISTS and path.is_file():
            keys, files = _listed(path)
        elif path.exists():
            raise DataError(
                f"{self.source}: this model reads {kind} files: give a folder of them, or a .txt or .csv "
                f"list of their paths, not {path.suffix or 'this file'}"
            )
        else:
            raise DataError(f"{self.source}: file or folder not found")
        if not files:
            raise DataError(f"{self.source}: no {kind} files ({', '.join(EXTENSIONS[kind])}) found")
        return keys, files


def _folder(root: Path, suffixes: tuple[str, ...], notes: list[str]) -> tuple[list[str], list[Path]]:
    found: list[tuple[str, Path]] = []
    skipped = 0
    for folder, dirs, names in os.walk(root):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in names:
            if name.startswith("."):
                continue
            if not name.lower().endswith(suffixes):
                skipped += 1
                continue
            file = Path(folder, name)
            found.append((file.relative_to(root).as_posix(), file))
    found.sort(key=lambda kf: kf[0])
    if skipped:
        notes.append(f"{root}: skipped {skipped} file(s) that are not {', '.join(suffixes)}")
    return [k for k, _ in found], [f for _, f in found]


def _listed(path: Path) -> tuple[list[str], list[Path]]:
    """The paths of a .txt (one a line) or .csv (`path` column) list, each checked to be a file."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read the list ({exc})") from None
    if path.suffix.lower() == ".txt":
        entries = [(n, line.strip()) for n, line in enumerate(text.splitlines(), 1) if line.strip()]
    else:
        entries = _csv_paths(path, text)
    keys, files = [], []
    for line, key in entries:
        file = path.parent / Path(key).expanduser()
        if not file.is_file():
            raise DataError(f"{path} line {line}: {key}: file not found")
        keys.append(key)
        files.append(file)
    return keys, files


def _csv_paths(path: Path, text: str) -> list[tuple[int, str]]:
    rows = list(csv.reader(io.StringIO(text)))
    if not rows:
        return []
    header = [h.strip() for h in rows[0]]
    if KEY in header:
        column = header.index(KEY)
    elif len(header) == 1:
        column = 0
    else:
        raise DataError(f"{path}: a list of files needs a '{KEY}' column; the columns are {header}")
    cells = ((n, row[column].strip() if len(row) > column else "") for n, row in enumerate(rows[1:], 2))
    return [(n, cell) for n, cell in cells if cell]


def _read(file: Path, key: str) -> bytes:
    try:
        return file.read_bytes()
    except OSError as exc:
        raise DataError(f"{key}: cannot read ({exc.strerror or exc})") from None

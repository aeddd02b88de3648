"""The work folder beside the output: finished chunks as part files, a lock, and publishing the output.

`.<output name>.predict-<key>/` holds `job.json` (what the key stands for), `chunk-NNNNNN.bin`
(one per finished chunk, each written atomically) and `.lock`. A killed run leaves it behind;
the same job run again finds it by its key and skips the finished chunks. It is removed once
the output is published.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from skylift import _atomic
from skylift.errors import SpecError

_PART = re.compile(r"chunk-(\d{6,})\.bin")


class WorkDir:
    """The finished chunks of one job. Contract: only the writer rank uses it, holding its flock."""

    def __init__(self, output: Path, key: str) -> None:
        self.output = output
        self.path = output.parent / f".{output.name}.predict-{key[:16]}"
        self._lock: int | None = None

    def open(self, identity: dict[str, Any]) -> set[int]:
        """Create or reopen the folder, lock it, and return the indices of finished chunks."""
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise SpecError(f"cannot write beside the output {self.output}: {exc.strerror or exc}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise SpecError(
                f"another skylift predict is writing {self.output} (its work folder {self.path} is locked)"
            ) from None
        self._lock = fd
        job = self.path / "job.json"
        if not job.is_file():
            _atomic.write_json(job, identity)
        return {int(m[1]) for p in self.path.iterdir() if (m := _PART.fullmatch(p.name))}

    def part(self, k: int) -> Path:
        return self.path / f"chunk-{k:06d}.bin"

    def write_part(self, k: int, data: bytes) -> None:
        """Atomically: a reader sees the whole part or none. The folder is not fsynced per part: a
        rename lost in a power cut only means that chunk is computed again."""
        with _atomic.atomic_open(self.part(k), sync_dir=False) as f:
            f.write(data)

    def close(self) -> None:
        if self._lock is not None:
            os.close(self._lock)  # closing releases the flock
            self._lock = None

    def remove(self) -> None:
        self.close()
        shutil.rmtree(self.path, ignore_errors=True)


def write_staged(output: Path, writer: Callable[[IO[bytes]], None]) -> Path:
    """Run `writer` on a temp file beside `output` (a dot name), fsync it and return its path.

    The temp file is removed when writing fails; `publish` moves it into place.
    """
    fd, tmp = tempfile.mkstemp(dir=output.parent, prefix=f".{output.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp's 0600 is for secrets; an output gets the usual mode
        with os.fdopen(fd, "wb") as f:
            writer(f)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return Path(tmp)


def _umask() -> int:
    try:  # Linux reports it without changing it
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def publish(tmp: Path, output: Path, overwrite: bool) -> None:
    """Move the finished temp file to `output` in one step; without overwrite never replace a file."""
    try:
        if overwrite:
            os.replace(tmp, output)
        else:
            try:
                os.link(tmp, output)  # fails if output appeared meanwhile: no clobbering
            except FileExistsError:
                raise SpecError(f"{output} already exists; pass --overwrite to replace it") from None
            os.unlink(tmp)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    _atomic._fsync_dir(output.parent)

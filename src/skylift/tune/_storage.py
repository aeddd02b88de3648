"""Where a study lives: an Optuna journal file (default, no server) or a database URL (postgresql://...)."""

from __future__ import annotations

import random
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from skylift.errors import SpecError

if TYPE_CHECKING:
    from optuna.storages import BaseStorage

_RDB = re.compile(r"^(postgresql|postgres|mysql|sqlite)(\+\w+)?://")
JOURNAL = "journal:"


@dataclass(frozen=True)
class StorageRef:
    """A storage location as one string that every process of a study can open again."""

    url: str

    @property
    def journal_path(self) -> Path | None:
        return Path(self.url[len(JOURNAL) :]) if self.url.startswith(JOURNAL) else None

    def shown(self) -> str:
        """The URL with any password replaced by ***: safe to print and to store."""
        return re.sub(r"://([^:/@]+):[^@/]*@", r"://\1:***@", self.url)


def resolve(url: str | None, study_dir: Path) -> StorageRef:
    """The study's storage: `url`, or the journal file in its study folder. Raises SpecError."""
    if url is None:
        return StorageRef(f"{JOURNAL}{study_dir / 'journal.log'}")
    if url.startswith(JOURNAL):
        path = url[len(JOURNAL) :]
        if not path:
            raise SpecError("--storage journal:PATH needs a file path")
        return StorageRef(f"{JOURNAL}{Path(path).expanduser().resolve()}")
    if url.startswith("postgres://"):  # SQLAlchemy only knows the long scheme
        url = "postgresql://" + url[len("postgres://") :]
    if not _RDB.match(url):
        raise SpecError(
            f"--storage must be postgresql://USER:PASSWORD@HOST:PORT/DB, mysql://..., sqlite:///FILE "
            f"or journal:PATH, got {StorageRef(url).shown()!r}"
        )
    return StorageRef(url)


def exists(ref: StorageRef) -> bool:
    """Whether opening `ref` would find data (a journal file); databases are always opened."""
    path = ref.journal_path
    return path is None or path.is_file()


def open_storage(ref: StorageRef) -> BaseStorage:
    """Open (or create) the storage; an unreachable database raises SpecError (exit 2)."""
    import optuna
    from optuna.storages.journal import JournalFileBackend

    path = ref.journal_path
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        return optuna.storages.JournalStorage(JournalFileBackend(str(path)))
    attempt = 0
    while True:
        try:
            # pool_pre_ping: a server restart between two trials costs a reconnect, not a failed trial.
            return optuna.storages.RDBStorage(ref.url, engine_kwargs={"pool_pre_ping": True})
        except Exception as exc:
            # Drivers started together on a fresh database race to create Optuna's tables; the
            # loser's CREATE fails on a unique index. Its second look finds the tables made.
            attempt += 1
            if type(exc).__name__ != "IntegrityError" or attempt == 3:
                raise _unreachable(ref, exc) from None
            time.sleep(0.5 + random.random())


def _unreachable(ref: StorageRef, exc: Exception) -> SpecError:
    if isinstance(exc, ImportError):
        return SpecError(
            f"storage {ref.shown()}: missing database driver ({exc}); pip install 'psycopg[binary]'"
        )
    # SQLAlchemy's errors: refused, unknown host, bad password, no such database
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return SpecError(f"storage {ref.shown()} is unreachable: {first}")

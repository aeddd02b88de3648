"""Storage URLs: journal default, redaction, unknown schemes and unreachable databases."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from skylift.errors import SpecError
from skylift.tune._storage import StorageRef, exists, open_storage, resolve


def test_default_is_a_journal_file_in_the_study_folder(tmp_path: Path) -> None:
    ref = resolve(None, tmp_path / "s")
    assert ref.journal_path == tmp_path / "s" / "journal.log"
    assert not exists(ref) and not (tmp_path / "s").exists()  # resolving writes nothing


def test_password_is_never_shown() -> None:
    ref = resolve("postgresql://bob:hunter2@db:5432/optuna", Path("."))
    assert ref.shown() == "postgresql://bob:***@db:5432/optuna"
    assert resolve("postgres://u:p@h/d", Path(".")).url.startswith("postgresql://")


def test_unknown_scheme_is_rejected() -> None:
    with pytest.raises(SpecError, match="--storage must be"):
        resolve("redis://localhost:6379", Path("."))


def test_unreachable_database_is_a_spec_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens once closed
    with pytest.raises(SpecError, match="unreachable") as err:
        open_storage(StorageRef(f"postgresql://u:secret@127.0.0.1:{port}/x"))
    assert "secret" not in str(err.value)

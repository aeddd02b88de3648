"""read_source's dispatch: which strings are accepted and what the rest are told."""

from __future__ import annotations

from pathlib import Path

import pytest

from skylift.data import read_source
from skylift.errors import DataError


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"^.*/absent.npz: file not found$"):
        read_source(str(tmp_path / "absent.npz"))


def test_unsupported_source_lists_accepted_forms(tmp_path: Path) -> None:
    (tmp_path / "data.txt").write_text("1 2 3")
    with pytest.raises(
        DataError, match=r"data.txt: unsupported data source; accepted: builtin:NAME \(digits, digits28\)"
    ):
        read_source(str(tmp_path / "data.txt"))


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("", "data source is empty; accepted: builtin:NAME"),
        ("s3://bucket/d.npz", "remote sources are not read"),
    ],
)
def test_bad_source_strings(source: str, message: str) -> None:
    with pytest.raises(DataError, match=message):
        read_source(source)


def test_errors_are_one_line(tmp_path: Path) -> None:
    (tmp_path / "bad.parquet").write_bytes(b"\n\nnot\nparquet\n")
    with pytest.raises(DataError) as info:
        read_source(str(tmp_path / "bad.parquet"))
    assert "\n" not in str(info.value) and str(tmp_path / "bad.parquet") in str(info.value)


def test_home_is_expanded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "t.csv").write_text("a,label\n1,0\n2,1\n")
    data, _ = read_source("~/t.csv")
    assert len(data) == 2

"""Job options: output format, option checks, output path checks, and the key finished chunks live under."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import pytest

from skylift.batch._job import PredictJob, check_options, check_output, job_key, output_format
from skylift.errors import SpecError


@pytest.mark.parametrize(
    ("name", "fmt"),
    [("p.npz", "npz"), ("p.NPY", "npy"), ("p.csv", "csv"), ("p.pq", "parquet"), ("p.ndjson", "jsonl")],
)
def test_format_from_extension(name: str, fmt: str) -> None:
    assert output_format(Path(name), None) == fmt
    assert output_format(Path("anything"), "csv") == "csv"


def test_unknown_format_names_the_fix() -> None:
    with pytest.raises(
        SpecError, match=r"cannot tell the output format from the extension '.txt'.*--output-format"
    ):
        output_format(Path("p.txt"), None)
    with pytest.raises(SpecError, match="--output-format must be one of npz, npy, csv, parquet, jsonl"):
        output_format(Path("p.npz"), "xlsx")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("npz", True, 2, 1, 1, None), "give --proba or --top-k, not both"),
        (("npz", False, 0, 1, 1, None), "--top-k must be >= 1"),
        (("npz", False, 11, 1, 1, 10), "--top-k 11 exceeds the model's 10 classes"),
        (("npy", False, 2, 1, 1, None), "an .npy output holds one array: .* with --top-k"),
        (("npy", True, None, 1, 1, None), "an .npy output holds one array: .* with --proba"),
        (("npz", False, None, 0, 1, None), "--batch-rows must be >= 1, got 0"),
        (("npz", False, None, 1, 0, None), "--chunk-rows must be >= 1, got 0"),
    ],
)
def test_bad_options(args: tuple[str, bool, int | None, int, int, int | None], message: str) -> None:
    with pytest.raises(SpecError, match=message):
        check_options(*args)


def test_output_checks(tmp_path: Path) -> None:
    out = tmp_path / "new" / "deeper" / "p.npz"
    check_output(out, overwrite=False)
    assert out.parent.is_dir() and not out.exists()
    out.write_bytes(b"old")
    with pytest.raises(SpecError, match=r"p.npz already exists; pass --overwrite to replace it"):
        check_output(out, overwrite=False)
    check_output(out, overwrite=True)
    with pytest.raises(SpecError, match="is a folder; give the output file's path"):
        check_output(tmp_path, overwrite=True)
    with pytest.raises(SpecError, match="cannot create the output folder"):
        check_output(out / "sub" / "p.npz", overwrite=False)  # a file where a folder must go


def test_job_key_follows_what_changes_the_output(tmp_path: Path) -> None:
    job = PredictJob("m:1", "x.npy", str(tmp_path / "p.npz"), "npz", str(tmp_path))
    files = [{"path": "/x.npy", "size": 10, "mtime_ns": 1}]
    key = job_key(job, "w", files)
    assert key == job_key(job, "w", [dict(f) for f in files])
    assert key == job_key(replace(job, overwrite=True), "w", files)  # overwrite does not change the bytes
    for other in (
        job_key(replace(job, model="m:2"), "w", files),
        job_key(job, "w2", files),
        job_key(job, "w", [{**files[0], "mtime_ns": 2}]),
        job_key(replace(job, proba=True), "w", files),
        job_key(replace(job, chunk_rows=7), "w", files),
        job_key(replace(job, output=str(tmp_path / "q.npz")), "w", files),
    ):
        assert other != key
    assert len(key) == 64 and os.path.sep not in key

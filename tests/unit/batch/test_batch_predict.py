"""`predict` in one process: results equal model(x), every input form, resuming, bad input refused."""

from __future__ import annotations

import io
import re
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
import pytest
from rich.console import Console
from torch import nn

from skylift.batch import _launch, predict
from skylift.batch._progress import PredictDisplay
from skylift.errors import AuthError, DataError, SpecError
from skylift.security import MasterKey
from tests.unit.batch.conftest import features, reference, register_mlp


def _leftovers(folder: Path) -> list[str]:
    """Temp files and work folders (dot names) left beside an output."""
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_npy_results_equal_model_x(home: Path, mlp: nn.Module, tmp_path: Path) -> None:
    x = features(3000)
    np.save(tmp_path / "x.npy", x)
    out = tmp_path / "out" / "p.npz"
    result = predict("mnist-mlp", str(tmp_path / "x.npy"), out, chunk_rows=700, batch_rows=256, proba=True)
    assert (result.rows, result.computed_rows, result.chunks, result.resumed_chunks) == (3000, 3000, 5, 0)
    assert result.output == out and result.rows_per_s > 0
    classes, proba = reference(mlp, x)
    z = np.load(out)
    assert z["class"].dtype == np.int64
    np.testing.assert_array_equal(z["class"], classes)
    np.testing.assert_allclose(z["proba"], proba, rtol=0, atol=1e-6)
    assert z["classes"].tolist() == list("0123456789")
    assert _leftovers(out.parent) == []
    assert oct(out.stat().st_mode & 0o777) != oct(0o600)  # an output, not a secret


def test_parquet_csv_and_folder_inputs_ignore_the_label_column(
    home: Path, mlp: nn.Module, tmp_path: Path
) -> None:
    x = features(900)
    classes, _ = reference(mlp, x)
    table = pa.table({"label": np.arange(900) % 10, **{f"p{j}": x[:, j] for j in range(784)}})
    pq.write_table(table, tmp_path / "x.parquet", row_group_size=250)
    pa_csv.write_csv(table.slice(0, 300), tmp_path / "x.csv")
    folder = tmp_path / "parts"
    folder.mkdir()
    np.save(folder / "a.npy", x[:400])
    pq.write_table(table.slice(400), folder / "b.parquet")
    for source, rows in [("x.parquet", 900), ("x.csv", 300), ("parts", 900)]:
        out = tmp_path / f"{source}.npy"
        predict("mnist-mlp", str(tmp_path / source), out, chunk_rows=128)
        np.testing.assert_array_equal(np.load(out), classes[:rows], err_msg=source)


def test_named_classes_and_top_k(home: Path, tiny: nn.Module, tmp_path: Path) -> None:
    x = features(50, width=8)
    np.save(tmp_path / "x.npy", x)
    classes, proba = reference(tiny, x)
    predict("tiny", str(tmp_path / "x.npy"), tmp_path / "p.parquet", top_k=2, chunk_rows=16)
    table = pq.read_table(tmp_path / "p.parquet")
    names = np.array(["cat", "dog", "eel"])
    assert table.column("class").to_pylist() == names[classes].tolist()
    assert table.column("top1_class").to_pylist() == names[classes].tolist()
    np.testing.assert_allclose(table.column("top1_proba").to_numpy(), proba.max(1), atol=1e-6)


class _Stop:
    """A progress observer that interrupts the job after `after` chunks, as Ctrl-C would."""

    def __init__(self, after: int) -> None:
        self.left = after

    def start(self, total: int | None, done: int) -> None:
        pass

    def advance(self, rows: int) -> None:
        self.left -= 1
        if self.left == 0:
            raise KeyboardInterrupt

    def finish(self) -> None:
        pass

    def close(self) -> None:
        pass


def test_an_interrupted_run_resumes_to_the_same_bytes(
    home: Path, mlp: nn.Module, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    np.save(tmp_path / "x.npy", features(2000))
    args: dict[str, Any] = {"chunk_rows": 300, "proba": True}
    whole = tmp_path / "whole.parquet"
    predict("mnist-mlp", str(tmp_path / "x.npy"), whole, **args)
    out = tmp_path / "p.parquet"
    with monkeypatch.context() as patch, pytest.raises(KeyboardInterrupt):
        patch.setattr(_launch, "_display", lambda: _Stop(after=3))
        predict("mnist-mlp", str(tmp_path / "x.npy"), out, progress=True, **args)
    assert not out.exists()
    (work,) = [p for p in tmp_path.iterdir() if p.name.startswith(".p.parquet.predict-")]
    assert sorted(p.name for p in work.glob("chunk-*")) == [
        "chunk-000000.bin",
        "chunk-000001.bin",
        "chunk-000002.bin",
    ]
    result = predict("mnist-mlp", str(tmp_path / "x.npy"), out, **args)
    assert (result.chunks, result.resumed_chunks, result.computed_rows, result.rows) == (7, 3, 1100, 2000)
    assert out.read_bytes() == whole.read_bytes()
    assert not work.exists()


def test_changing_an_option_starts_over(
    home: Path, mlp: nn.Module, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    np.save(tmp_path / "x.npy", features(1000))
    with monkeypatch.context() as patch, pytest.raises(KeyboardInterrupt):
        patch.setattr(_launch, "_display", lambda: _Stop(after=2))
        predict("mnist-mlp", str(tmp_path / "x.npy"), tmp_path / "p.npz", chunk_rows=300, progress=True)
    result = predict("mnist-mlp", str(tmp_path / "x.npy"), tmp_path / "p.npz", chunk_rows=300, proba=True)
    assert result.resumed_chunks == 0
    assert len(_leftovers(tmp_path)) == 1  # the first job's work folder stays: it belongs to another job


@pytest.mark.parametrize(
    ("mutate", "error", "message"),
    [
        (lambda x: x.__setitem__((1234, 5), np.nan), DataError, r"x.npy: row 1234 contains NaN$"),
        (
            lambda x: x.__setitem__((1999, 0), np.inf),
            DataError,
            r"x.npy: row 1999 contains an infinite value",
        ),
    ],
)
def test_bad_rows_fail_in_one_line_without_leftovers(
    home: Path, mlp: nn.Module, tmp_path: Path, mutate: Any, error: type[Exception], message: str
) -> None:
    x = features(2000)
    mutate(x)
    np.save(tmp_path / "x.npy", x)
    with pytest.raises(error, match=message):
        predict("mnist-mlp", str(tmp_path / "x.npy"), tmp_path / "p.npz", chunk_rows=300)
    assert not (tmp_path / "p.npz").exists()
    assert _leftovers(tmp_path) == []


def test_problems_seen_up_front(home: Path, mlp: nn.Module, tmp_path: Path) -> None:
    np.save(tmp_path / "narrow.npy", features(10, width=100))
    np.save(tmp_path / "x.npy", features(10))
    x = str(tmp_path / "x.npy")
    cases: list[tuple[dict[str, Any], type[Exception], str]] = [
        (
            {"input": str(tmp_path / "narrow.npy")},
            DataError,
            r"samples have 100 features .* takes input_shape \[784\]",
        ),
        ({"model": "nope"}, Exception, "no model named 'nope'"),
        ({"model": "mnist-mlp:7"}, Exception, "mnist-mlp has no version 7"),
        ({"top_k": 11}, SpecError, "--top-k 11 exceeds the model's 10 classes"),
        ({"output": str(tmp_path / "p.npy"), "top_k": 2}, SpecError, "an .npy output holds one array"),
        ({"workers": 2, "nnodes": 2}, SpecError, "multi-node prediction needs --rdzv-endpoint"),
        ({"node_rank": 1}, SpecError, r"--node-rank must be in \[0, 0\]"),
    ]
    for change, error, message in cases:
        kwargs: dict[str, Any] = {
            "model": "mnist-mlp",
            "input": x,
            "output": str(tmp_path / "p.npz"),
            **change,
        }
        with pytest.raises(error, match=message):
            predict(**kwargs)
    (tmp_path / "p.npz").write_bytes(b"keep")
    with pytest.raises(SpecError, match=r"p.npz already exists; pass --overwrite"):
        predict("mnist-mlp", x, tmp_path / "p.npz")
    assert (tmp_path / "p.npz").read_bytes() == b"keep"
    predict("mnist-mlp", x, tmp_path / "p.npz", overwrite=True)
    assert np.load(tmp_path / "p.npz")["class"].shape == (10,)
    assert _leftovers(tmp_path) == []


def test_encrypted_model_needs_its_key(home: Path, tmp_path: Path) -> None:
    key = MasterKey.generate()
    module = register_mlp(home, key=key)
    x = features(20)
    np.save(tmp_path / "x.npy", x)
    with pytest.raises(AuthError, match="is encrypted: set SKYLIFT_MASTER_KEY or pass --key-file"):
        predict("mnist-mlp", str(tmp_path / "x.npy"), tmp_path / "p.npy")
    predict("mnist-mlp", str(tmp_path / "x.npy"), tmp_path / "p.npy", master_key=key)
    np.testing.assert_array_equal(np.load(tmp_path / "p.npy"), reference(module, x)[0])


def test_progress_display_shows_rows_rate_and_eta() -> None:
    now = [100.0]
    buffer = io.StringIO()
    display = PredictDisplay(Console(file=buffer, width=120, force_terminal=False), clock=lambda: now[0])
    display.start(10_000, 2_000)  # an estimated total; 2,000 rows finished by an earlier run
    now[0] += 1.5
    display.advance(3_000)  # 3,000 rows in 1.5 s: 2,000 rows/s, 5,000 left: 2.5 s
    mid = io.StringIO()
    Console(file=mid, width=120, force_terminal=False).print(display.progress.get_renderable())
    assert re.search(r"5,000/10,000 rows 2,000 rows/s 0:00:01 eta 0:00:02\s*$", mid.getvalue()), (
        mid.getvalue()
    )
    now[0] += 0.5
    display.advance(1_000)  # the estimate was high: 6,000 rows in all, 4,000 of them in 2 s
    display.finish()
    display.close()
    display.close()
    assert re.search(r"6,000/6,000 rows 2,000 rows/s 0:00:02 eta 0:00:00\s*$", buffer.getvalue()), (
        buffer.getvalue()
    )

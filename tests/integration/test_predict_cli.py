"""`skylift predict` through the CLI in one process: the README's commands, every bad input in one line."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from torch import nn

from skylift.cli import main
from skylift.registry import Registry
from tests.unit.batch.conftest import features, reference, register_mlp


@pytest.fixture(scope="module")
def ready(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, nn.Module]:
    home = tmp_path_factory.mktemp("cli") / "home"
    module = register_mlp(home)
    Registry(home).promote("mnist-mlp", 1, "production")
    return home, module


@pytest.fixture
def cli_home(ready: tuple[Path, nn.Module], home: Path) -> Path:
    shutil.copytree(ready[0], home)
    return home


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    try:
        code = main(list(args))
    except SystemExit as exc:  # argparse refuses bad arguments by exiting
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def test_readme_commands(
    cli_home: Path, ready: tuple[Path, nn.Module], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    x = features(600)
    classes, proba = reference(ready[1], x)
    pq.write_table(
        pa.table({f"p{j}": x[:, j] for j in range(784)}), tmp_path / "big.parquet", row_group_size=200
    )
    np.save(tmp_path / "x.npy", x)
    (tmp_path / "parts").mkdir()
    np.save(tmp_path / "parts" / "part-0.npy", x[:250])
    np.save(tmp_path / "parts" / "part-1.npy", x[250:])

    code, out, _ = run(
        capsys,
        "predict",
        "mnist-mlp@production",
        "--input",
        str(tmp_path / "big.parquet"),
        "--output",
        str(tmp_path / "preds.parquet"),
    )  # fmt: skip  (the README's --workers 2 runs in test_predict.py)
    assert code == 0
    assert re.search(
        r"predicted 600 rows in [\d.]+ s \([\d,]+ rows/s, 1 worker\(s\) x 1 node\(s\)\) -> ", out
    ), out
    assert pq.read_table(tmp_path / "preds.parquet").column("class").to_pylist() == classes.tolist()

    from skylift.batch import predict  # the README's Python example

    r = predict("mnist-mlp@production", str(tmp_path / "big.parquet"), tmp_path / "api.parquet", proba=True)
    assert (r.rows, r.resumed_chunks) == (600, 0) and r.rows_per_s > 0

    code, _, _ = run(
        capsys, "predict", "mnist-mlp:1", "--input", str(tmp_path / "x.npy"),
        "--output", str(tmp_path / "preds.csv"), "--proba",
    )  # fmt: skip
    assert code == 0
    table = pa.csv.read_csv(tmp_path / "preds.csv")
    assert table.column_names == ["class", *(f"proba_{c}" for c in range(10))]
    np.testing.assert_allclose(table.column("proba_3").to_numpy(), proba[:, 3], atol=1e-6)

    code, _, _ = run(
        capsys, "predict", "mnist-mlp", "--input", str(tmp_path / "parts"),
        "--output", str(tmp_path / "preds.jsonl"), "--top-k", "3",
    )  # fmt: skip
    assert code == 0
    lines = (tmp_path / "preds.jsonl").read_text().splitlines()
    assert len(lines) == 600 and lines[0].startswith(
        f'{{"class":{classes[0]},"top_k":[{{"class":{classes[0]},'
    )


def _bad_csv(folder: Path, cell: str) -> str:
    rows = "\n".join(",".join(["0.5"] * 784) for _ in range(30))
    body = rows.replace("0.5", cell, 1) if cell else rows + "\n0.5,0.5"
    path = folder / "bad.csv"
    path.write_text(",".join(f"p{j}" for j in range(784)) + "\n" + body + "\n")
    return str(path)


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("cell", r"bad.csv: column 'p0' is not numeric: row 0 holds 'abc'$"),
        ("cells", r"bad.csv: row 30 has 2 cells, the header has 784$"),
        ("nan", r"x.npy: row 7 contains NaN$"),
        ("narrow", r"narrow.npy: samples have 100 features \(shape \[100\]\) but model mnist-mlp:1 takes"),
        ("exists", r"p.npz already exists; pass --overwrite to replace it$"),
        ("unwritable", r"cannot create the output folder .*/file.txt"),
        ("both", r"argument --top-k: not allowed with argument --proba"),
        ("workers", r"--workers: must be a whole number >= 1, got '0'"),
        ("model", r"no model named 'nope'"),
        ("format", r"cannot tell the output format from the extension '.txt'"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_leaves_nothing(
    cli_home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], case: str, message: str
) -> None:
    x = features(20)
    if case == "nan":
        x[7, 100] = np.nan
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "narrow.npy", features(20, width=100))
    out = tmp_path / "out" / "p.npz"
    out.parent.mkdir()
    source, model, extra = str(tmp_path / "x.npy"), "mnist-mlp", ["--chunk-rows", "4"]
    if case in ("cell", "cells"):
        source = _bad_csv(tmp_path, "abc" if case == "cell" else "")
    elif case == "narrow":
        source = str(tmp_path / "narrow.npy")
    elif case == "exists":
        out.write_bytes(b"keep")
    elif case == "unwritable":
        (tmp_path / "file.txt").write_text("")
        out = tmp_path / "file.txt" / "p.npz"
    elif case == "both":
        extra += ["--proba", "--top-k", "2"]
    elif case == "workers":
        extra += ["--workers", "0"]
    elif case == "model":
        model = "nope"
    elif case == "format":
        out = out.with_suffix(".txt")
    code, _, err = run(capsys, "predict", model, "--input", source, "--output", str(out), *extra)
    assert code == 2
    assert err.count("\n") == 1 and re.search(message, err.strip()), err
    if case == "exists":
        assert out.read_bytes() == b"keep"
    else:
        assert not out.exists()
    beside = [p.name for folder in (tmp_path, tmp_path / "out") for p in folder.iterdir()]
    assert not [name for name in beside if name.startswith(".")]  # no temp file, no work folder

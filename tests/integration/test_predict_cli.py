"""`skylift predict` through the CLI in one process: the README's commands, every bad input in one line."""

from __future__ import annotations

import gzip
import json
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
        ("npy-proba", r"an .npy output holds one array: use .npz, .parquet, .csv or .jsonl with --proba$"),
        ("npy-top-k", r"an .npy output holds one array: use .npz, .parquet, .csv or .jsonl with --top-k$"),
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
    elif case.startswith("npy-"):
        out = out.with_suffix(".npy")
        extra += ["--proba"] if case == "npy-proba" else ["--top-k", "2"]
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


def _idx_images(path: Path, pixels: np.ndarray) -> None:
    """An MNIST IDX images file (magic 0x00000803, big-endian sizes, then the uint8 pixels)."""
    n, h, w = pixels.shape
    header = bytes([0, 0, 0x08, 3]) + np.array([n, h, w], dtype=">u4").tobytes()
    data = header + pixels.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(data) if path.name.endswith(".gz") else data)


def test_idx_and_npz_inputs_output_format_and_overwrite(
    cli_home: Path, ready: tuple[Path, nn.Module], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pixels = np.random.default_rng(1).integers(0, 256, size=(90, 28, 28), dtype=np.uint8)
    x = pixels.reshape(90, 784).astype(np.float32) / np.float32(255.0)  # how training reads IDX
    classes, proba = reference(ready[1], x)
    for name in ("t10k-images-idx3-ubyte", "t10k-images-idx3-ubyte.gz"):
        _idx_images(tmp_path / name, pixels)
    np.savez(tmp_path / "x.npz", x=x, y=np.zeros(90, dtype=np.int64))
    for source in ("t10k-images-idx3-ubyte", "t10k-images-idx3-ubyte.gz", "x.npz"):
        out = tmp_path / f"{source}.npz"
        code, _, err = run(
            capsys, "predict", "mnist-mlp", "--input", str(tmp_path / source), "--output", str(out),
            "--proba", "--chunk-rows", "32",
        )  # fmt: skip
        assert code == 0, err
        z = np.load(out)
        np.testing.assert_array_equal(z["class"], classes, err_msg=source)
        np.testing.assert_allclose(z["proba"], proba, rtol=0, atol=1e-6, err_msg=source)

    # --output-format overrides the extension; an existing output needs --overwrite
    out = tmp_path / "preds.out"
    args = ["predict", "mnist-mlp", "--input", str(tmp_path / "x.npz"), "--output", str(out)]
    assert run(capsys, *args, "--output-format", "jsonl")[0] == 0
    first = out.read_bytes()
    assert [json.loads(line)["class"] for line in first.decode().splitlines()] == classes.tolist()
    code, _, err = run(capsys, *args, "--output-format", "csv")
    assert code == 2 and err == f"error: {out} already exists; pass --overwrite to replace it\n"
    assert out.read_bytes() == first
    code, _, err = run(capsys, *args, "--output-format", "csv", "--overwrite")
    assert code == 0, err
    assert pa.csv.read_csv(out).column("class").to_pylist() == classes.tolist()
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_an_encrypted_model_with_key_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from skylift.security import create_master_key_file

    key_file = tmp_path / "master.key"
    home = tmp_path / "sealed"
    module = register_mlp(home, key=create_master_key_file(key_file))
    x = features(40)
    np.save(tmp_path / "x.npy", x)
    out = tmp_path / "p.npz"
    args = [
        "predict",
        "mnist-mlp",
        "--input",
        str(tmp_path / "x.npy"),
        "--output",
        str(out),
        "--home",
        str(home),
    ]
    code, _, err = run(capsys, *args)
    assert code == 2 and err.count("\n") == 1 and "mnist-mlp:1 is encrypted: set SKYLIFT_MASTER_KEY" in err
    assert not out.exists()
    code, stdout, err = run(capsys, *args, "--key-file", str(key_file))
    assert code == 0 and "predicted 40 rows" in stdout, err
    np.testing.assert_array_equal(np.load(out)["class"], reference(module, x)[0])


@pytest.mark.parametrize("damage", ["flipped byte", "plain version with a key"])
def test_a_tampered_model_is_refused_in_one_line(
    cli_home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], damage: str
) -> None:
    from skylift.security import create_master_key_file

    np.save(tmp_path / "x.npy", features(40))
    extra: list[str] = []
    if damage == "flipped byte":
        weights = cli_home / "registry" / "mnist-mlp" / "1" / "model.safetensors"
        data = bytearray(weights.read_bytes())
        data[len(data) // 2] ^= 0x01
        weights.write_bytes(bytes(data))
        message = r"mnist-mlp:1: model.safetensors: SHA-256 .* run `skylift models verify mnist-mlp:1`$"
    else:  # the registry holds a plain version, but a master key is set: it could be a swapped-in one
        create_master_key_file(tmp_path / "master.key")
        extra = ["--key-file", str(tmp_path / "master.key")]
        message = r"mnist-mlp:1 is not encrypted although a master key is set .* or use it without the key$"
    out = tmp_path / "out" / "p.npz"
    code, stdout, err = run(
        capsys, "predict", "mnist-mlp@production", "--input", str(tmp_path / "x.npy"),
        "--output", str(out), "--workers", "2", *extra,
    )  # fmt: skip
    assert code == 1 and stdout == "" and err.count("\n") == 1, err
    assert re.search(message, err.strip()), err
    assert not out.exists() and not [p for p in out.parent.iterdir()]


@pytest.mark.parametrize("output", ["/proc/skylift-out.npz", "/sys/skylift-out.npz"])
def test_an_output_nobody_can_write_is_refused_up_front(
    cli_home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], output: str
) -> None:
    """As root, permission bits never refuse a write: a kernel file system has to."""
    np.save(tmp_path / "x.npy", features(10))
    folder = Path(output).parent
    code, stdout, err = run(
        capsys, "predict", "mnist-mlp", "--input", str(tmp_path / "x.npy"), "--output", output
    )
    assert code == 2 and stdout == "", err
    assert err.startswith(f"error: cannot write the output {output}: folder {folder} is not writable (")
    assert err.count("\n") == 1
    assert not [p.name for p in folder.iterdir() if "skylift-out" in p.name]  # no output, no temp file

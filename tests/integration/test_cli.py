"""The CLI: quickstart, train, evaluate, and one clear line with exit code 2 for every bad input."""

from __future__ import annotations

import gzip
import os
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml

from skylift.cli import main
from skylift.security.apikeys import KeyStore
from tests.conftest import EXAMPLE


def _skylift(home: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SKYLIFT_HOME": str(home), "COLUMNS": "160"}
    return subprocess.run(["skylift", *args], env=env, capture_output=True, text=True, timeout=timeout)


def test_quickstart_trains_and_reports_metrics(home: Path) -> None:
    out = _skylift(home, "quickstart")
    assert out.returncode == 0, out.stderr
    assert "test (359 samples): accuracy=" in out.stdout
    for column in ("val_loss", "val_accuracy", "val_precision", "val_recall", "val_f1"):
        assert column in out.stdout
    accuracy = float(out.stdout.split("test (359 samples): accuracy=")[1].split()[0])
    assert accuracy >= 0.94
    (run,) = (home / "runs").iterdir()
    assert (run / "summary.json").is_file() and (run / "curves.png").is_file()
    # then it serves the registered model on loopback and queries it over HTTP
    assert "registered model: mnist-mlp:1" in out.stdout
    assert "predictions over HTTP" in out.stdout and "/v2/models/mnist-mlp/infer" in out.stdout
    right, sent = out.stdout.split(" correct over HTTP")[0].split()[-1].split("/")
    assert sent == "10" and int(right) >= 7
    assert "stopped" in out.stdout
    # over TLS with a fresh API key, and the curl command it prints worked against the server
    assert "Authorization: Bearer sk_" in out.stdout and "--cacert" in out.stdout
    assert '-> {"model_name":"mnist-mlp"' in out.stdout
    (key,) = KeyStore(home / "keys.json").infos()  # a key for trying things: it expires
    assert key.name.startswith("quickstart-") and key.expires is not None


def test_train_then_evaluate_prints_tables_and_writes_confusion_png(home: Path, tmp_path: Path) -> None:
    out = _skylift(home, "train", str(EXAMPLE), "--set", "train.epochs=2", "--run-id", "cli-run")
    assert out.returncode == 0, out.stderr
    assert "run folder:" in out.stdout and "epoch" in out.stdout
    ev = _skylift(home, "evaluate", "cli-run", "--data", "builtin:digits28", "--output", str(tmp_path))
    assert ev.returncode == 0, ev.stderr
    for text in (
        "accuracy",
        "precision (macro)",
        "recall (macro)",
        "f1 (macro)",
        "per class",
        "confusion matrix",
    ):
        assert text in ev.stdout
    assert (tmp_path / "confusion.png").read_bytes().startswith(b"\x89PNG")


def _write_idx(path: Path, array: np.ndarray, *, truncate: int = 0) -> None:
    header = struct.pack(">BBBB", 0, 0, 8, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + array.astype(np.uint8).tobytes()
    path.write_bytes(data[: len(data) - truncate] if truncate else data)


def _bad_data(tmp_path: Path, kind: str) -> tuple[list[str], str]:
    """(overrides, expected message part) for one kind of bad data."""
    rng = np.random.default_rng(0)
    x = rng.random((40, 784), dtype=np.float32)
    y = np.arange(40) % 10
    if kind == "missing file":
        return [f"data.train={tmp_path / 'nope.npz'}"], "not found"
    if kind == "label column absent":
        (tmp_path / "d.csv").write_text("a,b,target\n1,2,0\n3,4,1\n")
        return [
            f"data.train={tmp_path / 'd.csv'}",
            "model.input_shape=null",
        ], "label column 'label' not found; columns present: a, b, target"
    if kind == "count mismatch":
        _write_idx(tmp_path / "train-images-idx3-ubyte", (x[:5] * 255).reshape(5, 28, 28))
        _write_idx(tmp_path / "train-labels-idx1-ubyte", y[:4])
        return [
            f"data.train={tmp_path / 'train-images-idx3-ubyte'}"
        ], "holds 5 images but train-labels-idx1-ubyte holds 4"
    if kind == "truncated idx":
        _write_idx(tmp_path / "train-images-idx3-ubyte", (x[:5] * 255).reshape(5, 28, 28), truncate=100)
        _write_idx(tmp_path / "train-labels-idx1-ubyte", y[:5])
        return [f"data.train={tmp_path / 'train-images-idx3-ubyte'}"], "truncated: header promises 3920 bytes"
    if kind == "corrupt gzip idx":
        (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(b"\x00" * 64)[:20])
        _write_idx(tmp_path / "train-labels-idx1-ubyte", y[:5])
        return [f"data.train={tmp_path / 'train-images-idx3-ubyte.gz'}"], "train-images-idx3-ubyte.gz"
    if kind == "truncated npz":
        np.savez(tmp_path / "d.npz", x=x, y=y)
        blob = (tmp_path / "d.npz").read_bytes()
        (tmp_path / "d.npz").write_bytes(blob[: len(blob) // 2])
        return [f"data.train={tmp_path / 'd.npz'}"], "d.npz: not a readable .npz archive"
    if kind == "nan features":
        x[7, 3] = np.nan
        np.savez(tmp_path / "d.npz", x=x, y=y)
        return [f"data.train={tmp_path / 'd.npz'}"], "d.npz: feature row 7 contains NaN"
    if kind == "shape mismatch":
        return ["model.input_shape=[100]"], "input_shape [100]"
    raise AssertionError(kind)


SPEC_CASES = {
    "unknown field": (["train.epocs=3"], "train.epocs: unknown field"),
    "wrong type": (["train.epochs=ten"], "train.epochs: input should be a valid integer"),
    "negative batch size": (
        ["train.batch_size=-1"],
        "train.batch_size: input should be greater than or equal to 1",
    ),
    "unknown layer": (["model.layers=[{densse: {units: 10}}]"], "densse"),
    "layer shape mismatch": (
        ["model.layers=[{conv2d: {filters: 4, kernel_size: 3}}, {dense: {units: 10}}]"],
        "conv2d",
    ),
    "wrong output size": (["model.layers=[{dense: {units: 7}}]"], "10 classes"),
}
DATA_CASES = [
    "missing file",
    "label column absent",
    "count mismatch",
    "truncated idx",
    "corrupt gzip idx",
    "truncated npz",
    "nan features",
    "shape mismatch",
]


@pytest.mark.parametrize("kind", [*SPEC_CASES, *DATA_CASES])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(
    kind: str, home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    overrides, message = SPEC_CASES[kind] if kind in SPEC_CASES else _bad_data(tmp_path, kind)
    args = ["train", str(EXAMPLE), "--set", "train.epochs=1"]
    for o in overrides:
        args += ["--set", o]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert message in err
    assert not (home / "runs").exists()


def test_bad_spec_file_through_the_real_command_has_no_traceback(home: Path, tmp_path: Path) -> None:
    raw = yaml.safe_load(EXAMPLE.read_text())
    raw["train"]["batch_size"] = 0
    spec = tmp_path / "bad.yaml"
    spec.write_text(yaml.safe_dump(raw))
    out = _skylift(home, "train", str(spec))
    assert out.returncode == 2
    assert (
        out.stderr == f"error: {spec}: train.batch_size: input should be greater than or equal to 1, got 0\n"
    )
    debug = _skylift(home, "train", str(spec), "--debug")
    assert debug.returncode != 0 and "Traceback" in debug.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "the following arguments are required: COMMAND"),
        (["train"], "train needs a job spec file"),
        (["train", "--resume", "no-such-run"], "no run 'no-such-run'"),
        (["train", "--resume", "../../etc"], "run id '../../etc' is not allowed"),
        (
            ["evaluate", "nothing-here", "--data", "builtin:digits"],
            "not a checkpoint file, run folder or run id, and no model named 'nothing-here'",
        ),
        (["evaluate", "x"], "the following arguments are required: --data"),
        (["frobnicate"], "invalid choice: 'frobnicate'"),
        (["train", str(EXAMPLE), "--set", "bogus"], "--set expects FIELD=VALUE"),
        (["train", str(EXAMPLE), "--print-commands"], "--print-commands needs --nnodes N (2 or more)"),
        (
            ["train", str(EXAMPLE), "--nnodes", "2", "--rdzv-endpoint", "nohost", "--print-commands"],
            "--rdzv-endpoint must be HOST:PORT, got 'nohost'",
        ),
        (
            [
                "train",
                str(EXAMPLE),
                "--nnodes",
                "2",
                "--rdzv-endpoint",
                "h:1",
                "--set",
                "train.epochs=0",
                "--print-commands",
            ],
            "train.epochs",
        ),
        (["train", str(EXAMPLE), "--rdzv-timeout", "0"], "must be a number of seconds > 0, got '0'"),
    ],
)
def test_bad_command_lines(
    args: list[str], message: str, home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    try:
        code = main(args)
    except SystemExit as exit_:  # argparse's own errors
        code = exit_.code  # type: ignore[assignment]
    assert code == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err


def test_evaluate_refuses_a_file_that_is_not_a_checkpoint(
    home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fake = tmp_path / "evil.pt"
    fake.write_bytes(b"cos\nsystem\n(S'echo pwned'\ntR.")  # a pickle that would run a command
    assert main(["evaluate", str(fake), "--data", "builtin:digits"]) == 1
    assert "not a readable skylift checkpoint" in capsys.readouterr().err


def test_quickstart_registers_and_evaluate_takes_a_model_reference(home: Path, tmp_path: Path) -> None:
    out = _skylift(home, "quickstart", "--set", "train.epochs=2")
    assert out.returncode == 0, out.stderr
    assert "registered model: mnist-mlp:1" in out.stdout
    promote = _skylift(home, "models", "promote", "mnist-mlp:1", "production")
    assert promote.returncode == 0, promote.stderr
    ev = _skylift(
        home, "evaluate", "mnist-mlp@production", "--data", "builtin:digits28", "--output", str(tmp_path)
    )
    assert ev.returncode == 0, ev.stderr
    assert ev.stdout.startswith("model mnist-mlp:1 on builtin:digits28: 1797 samples")
    # a registered file changed on disk is refused, naming the file
    (weights,) = (home / "registry" / "mnist-mlp" / "1").glob("model.safetensors*")
    blob = bytearray(weights.read_bytes())
    blob[-1] ^= 1
    weights.write_bytes(bytes(blob))
    bad = _skylift(home, "evaluate", "mnist-mlp@production", "--data", "builtin:digits28")
    assert bad.returncode == 1 and weights.name in bad.stderr and bad.stderr.count("\n") == 1


def test_home_option_works_before_and_after_the_command(tmp_path: Path) -> None:
    for args in (
        ["--home", str(tmp_path / "a"), "quickstart"],
        ["quickstart", "--home", str(tmp_path / "b")],
    ):
        assert main([*args, "--set", "train.epochs=1", "--set", "train.register_best=false"]) == 0
    assert (tmp_path / "a" / "runs").is_dir() and (tmp_path / "b" / "runs").is_dir()
    assert not (tmp_path / "a" / "registry").exists()


def test_help_says_keys_makes_api_keys_too(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "200")  # one line per command
    with pytest.raises(SystemExit):
        main(["--help"])
    (line,) = [s for s in capsys.readouterr().out.splitlines() if s.strip().startswith("keys ")]
    assert "API keys" in line and "master key" in line

"""Training end to end: run folder, metrics, checkpoints, exact resume after a real kill."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from skylift.errors import SpecError
from skylift.spec import load_spec
from skylift.train import evaluate, fit, resume
from skylift.train.checkpoint import load
from tests.conftest import EXAMPLE

PNG = b"\x89PNG\r\n\x1a\n"


def test_run_folder_holds_everything(home: Path) -> None:
    spec = load_spec(EXAMPLE, ["train.epochs=4", "train.threads=1"])
    result = fit(spec, home=home, run_id="r1")
    run = home / "runs" / "r1"
    assert result.run_dir == run
    assert load_spec(run / "spec.yaml") == spec
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4]
    assert {"loss", "val_loss", "val_accuracy", "val_precision", "val_recall", "val_f1"} <= set(rows[0])
    summary = json.loads((run / "summary.json").read_text())
    assert summary["best_epoch"] == min(rows, key=lambda r: r["val_loss"])["epoch"]
    assert (
        summary["test"]["n"] == 359 and summary["test"]["accuracy"] > 0.8
    )  # 20% of each class of the 1797 digits
    assert (run / "curves.png").read_bytes().startswith(PNG)
    best, last = load(run / "checkpoints" / "best.pt"), load(run / "checkpoints" / "last.pt")
    assert best["meta"]["epoch"] == summary["best_epoch"] and last["meta"]["epoch"] == 4
    assert set(last) >= {"model", "optimizer", "rng", "history", "meta"}
    assert not [p for p in run.rglob("*.tmp")]  # atomic writes leave no temp files


def test_the_classic_mlp_learns_the_digits(home: Path) -> None:
    result = fit(load_spec(EXAMPLE), home=home)
    assert result.summary["test"]["accuracy"] >= 0.94  # the seed's Keras code reached 0.939 on MNIST
    assert result.history[-1]["loss"] < result.history[0]["loss"]


def test_rerunning_a_finished_run_trains_nothing_and_other_spec_is_refused(home: Path) -> None:
    spec = load_spec(EXAMPLE, ["train.epochs=2"])
    fit(spec, home=home, run_id="same")
    before = (home / "runs" / "same" / "checkpoints" / "last.pt").read_bytes()
    again = resume("same", home=str(home))
    assert [r["epoch"] for r in again.history] == [1, 2]
    assert (home / "runs" / "same" / "checkpoints" / "last.pt").read_bytes() == before
    with pytest.raises(SpecError, match="already exists with a different spec"):
        fit(load_spec(EXAMPLE, ["train.epochs=3"]), home=home, run_id="same")


def _cli(home: Path, *args: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "SKYLIFT_HOME": str(home)}
    return subprocess.Popen(
        [sys.executable, "-m", "skylift", *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def test_killed_run_resumes_to_identical_weights(home: Path) -> None:
    epochs = 30
    args = ("train", str(EXAMPLE), "--set", f"train.epochs={epochs}", "--set", "train.threads=1")
    full = _cli(home, *args, "--run-id", "full")
    assert full.wait(timeout=300) == 0

    victim = _cli(home, *args, "--run-id", "cut")
    metrics = home / "runs" / "cut" / "metrics.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and victim.poll() is None:
        if metrics.exists() and len(metrics.read_text().splitlines()) >= 3:
            break
        time.sleep(0.01)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    done = len(metrics.read_text().splitlines())
    assert 3 <= done < epochs, "the run must be cut mid-way"
    checkpoints = home / "runs" / "cut" / "checkpoints"
    (checkpoints / ".last.pt.k1ll3d.tmp").write_bytes(b"half a checkpoint")  # as a kill mid-save leaves

    resumed = _cli(home, "train", "--resume", "cut")
    assert resumed.wait(timeout=300) == 0
    assert sorted(p.name for p in checkpoints.iterdir()) == ["best.pt", "last.pt"]  # the partial is gone
    rows = [json.loads(line) for line in metrics.read_text().splitlines()]
    assert [r["epoch"] for r in rows] == list(range(1, epochs + 1))
    a = load(home / "runs" / "full" / "checkpoints" / "last.pt")
    b = load(home / "runs" / "cut" / "checkpoints" / "last.pt")
    for key, tensor in a["model"].items():
        assert torch.equal(tensor, b["model"][key]), key
    full_rows = [
        json.loads(line) for line in (home / "runs" / "full" / "metrics.jsonl").read_text().splitlines()
    ]
    assert [r["val_loss"] for r in rows] == [r["val_loss"] for r in full_rows]


def test_evaluate_a_run_and_a_checkpoint(home: Path) -> None:
    fit(load_spec(EXAMPLE, ["train.epochs=3"]), home=home, run_id="ev")
    by_run = evaluate("ev", "builtin:digits28", home=home)
    by_file = evaluate(str(home / "runs" / "ev" / "checkpoints" / "best.pt"), "builtin:digits28", home=home)
    assert by_run.report.n == 1797 and by_run.report.accuracy == by_file.report.accuracy > 0.8


def test_the_best_checkpoint_is_registered_once_per_run(home: Path) -> None:
    from skylift.registry import Registry

    result = fit(load_spec(EXAMPLE, ["train.epochs=2"]), home=home, run_id="reg")
    assert result.summary["registered"] == "mnist-mlp:1"
    assert resume("reg", home=str(home)).summary["registered"] == "mnist-mlp:1"  # not a second version
    info = Registry(home).info("mnist-mlp")
    assert info["lineage"]["run_id"] == "reg"
    assert info["metrics"]["val_loss"] == result.summary["best"]["val_loss"]
    assert [tuple(e.versions) for e in Registry(home).list()] == [(1,)]

"""`skylift tune` beyond classifiers: a regression study over warm-up, weight decay, width and dropout
(list items by index), and a tiny language-model study; the best trial is registered with its task."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml

from skylift.spec import load_spec
from tests.conftest import finish

# A few sentences of public-domain prose (Jerome K. Jerome, Three Men in a Boat, 1889).
PROSE = """There were four of us - George, and William Samuel Harris, and myself, and Montmorency.
We were sitting in my room, smoking, and talking about how bad we were - bad from a medical point
of view I mean, of course. We were all feeling seedy, and we were getting quite nervous about it.
Harris said he felt such extraordinary fits of giddiness come over him at times, that he hardly
knew what he was doing; and then George said that he had fits of giddiness too.
"""

REGRESSION: dict[str, Any] = {
    "name": "diabetes-tune",
    "task": "regression",
    "data": {"train": "builtin:diabetes", "validation_split": 0.2},
    "model": {
        "layers": [
            {"dense": {"units": 8, "activation": "relu"}},
            {"dropout": {"rate": 0.1}},
            {"dense": {"units": 1}},
        ]
    },
    "train": {
        "epochs": 3,
        "batch_size": 32,
        "optimizer": {"name": "adamw", "lr": 0.003, "weight_decay": 0.01},
        "schedule": {"warmup_steps": 5, "decay": "cosine"},
    },
    "distributed": {"workers": 1},
    "tune": {
        "metric": "val_mae",
        "sampler": "random",
        "seed": 1,
        "space": {
            "train.schedule.warmup_steps": {"int": [0, 20]},
            "train.optimizer.weight_decay": {"log_uniform": [1.0e-4, 1.0e-1]},
            "model.layers.0.dense.units": {"choice": [4, 8, 16]},
            "model.layers.1.dropout.rate": {"uniform": [0.0, 0.3]},
        },
    },
}


def _tune(home: Path, spec: dict[str, Any], *args: str) -> tuple[int, str]:
    path = home.parent / f"{spec['name']}.yaml"
    path.write_text(yaml.safe_dump(spec))
    env = {**os.environ, "SKYLIFT_HOME": str(home), "COLUMNS": "200"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "skylift", "tune", str(path), "--parallel", "1", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    code, out, _ = finish(proc, timeout=420)
    return code, out


def _study(home: Path, name: str) -> optuna.Study:
    from optuna.storages.journal import JournalFileBackend

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    path = home / "studies" / name / "journal.log"
    return optuna.load_study(
        study_name=name, storage=optuna.storages.JournalStorage(JournalFileBackend(str(path)))
    )


def _metrics(home: Path, run_id: str) -> list[dict[str, Any]]:
    lines = (home / "runs" / run_id / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def test_a_regression_study_searches_the_new_fields_and_registers_a_regressor(home: Path) -> None:
    code, out = _tune(home, REGRESSION, "--trials", "4")
    assert code == 0, out
    folder = home / "studies" / "diabetes-tune"
    best = json.loads((folder / "best.json").read_text())
    assert best["registered"] == "diabetes-tune:1" and best["direction"] == "minimize", best
    trials = _study(home, "diabetes-tune").trials
    states = [t.state.name for t in trials]
    assert len(trials) == 4 and states.count("COMPLETE") + states.count("PRUNED") == 4, states
    complete = [t for t in trials if t.state.name == "COMPLETE"]
    assert best["value"] == min(t.value for t in complete if t.value is not None)

    for t in trials:
        # each sampled value reached the trial's spec, list items included
        spec = load_spec(folder / "trials" / f"{t.number:04d}.yaml")
        assert spec.model.layers is not None
        assert spec.model.layers[0]["dense"]["units"] == t.params["model.layers.0.dense.units"]
        assert spec.model.layers[1]["dropout"]["rate"] == t.params["model.layers.1.dropout.rate"]
        assert spec.train.schedule.warmup_steps == t.params["train.schedule.warmup_steps"]
        assert spec.train.optimizer.weight_decay == t.params["train.optimizer.weight_decay"]
        assert spec.train.checkpoint.monitor == "val_mae" and spec.train.checkpoint.mode == "min"
        # the pruner saw val_mae after every epoch the trial ran (what a pruning decision rests on)
        rows = _metrics(home, t.user_attrs["run_id"])
        assert t.intermediate_values == {r["epoch"]: pytest.approx(r["val_mae"]) for r in rows}
        if t.state.name == "PRUNED":  # stopped with epochs to go; one that ran them all is complete
            assert len(rows) < 3

    model = json.loads((home / "registry" / "diabetes-tune" / "1" / "model.json").read_text())
    assert model["task"] == "regression" and model["signature"]["kind"] == "regressor"
    assert model["signature"]["targets"] == ["progression"]
    assert model["lineage"]["trial"] == best["trial"] and model["lineage"]["monitor"] == "val_mae"
    assert model["metrics"]["val_mae"] == pytest.approx(best["value"])
    assert f"best trial {best['trial']}: val_mae=" in out and "registered model: diabetes-tune:1" in out


def test_a_tiny_language_model_study_runs_and_registers_a_generator(home: Path, tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for i in range(3):
        (corpus / f"part{i}.txt").write_text(PROSE * (i + 2))
    spec = {
        "name": "tiny-lm-tune",
        "task": "language_modeling",
        "data": {"train": str(corpus), "tokenizer": {"vocab_size": 280}, "block_size": 16},
        "model": {
            "layers": [
                {"token_embedding": {"dim": 16}},
                {"decoder_block": {"heads": 4, "mlp": "swiglu", "norm": "rms"}},
                {"norm": {"kind": "rms"}},
                {"lm_head": {}},
            ]
        },
        "train": {"epochs": 2, "batch_size": 8, "optimizer": {"name": "adamw", "lr": 0.003}},
        "distributed": {"workers": 1},
        "tune": {
            "metric": "val_perplexity",
            "sampler": "random",
            "seed": 2,
            "space": {
                "train.schedule.warmup_steps": {"int": [0, 10]},
                "model.layers.0.token_embedding.dim": {"choice": [16, 32]},
                "model.layers.1.decoder_block.dropout": {"uniform": [0.0, 0.2]},
            },
        },
    }
    # --set reaches list items too: every trial gets 2 heads
    args = ("--trials", "2", "--pruner", "none", "--set", "model.layers.1.decoder_block.heads=2")
    code, out = _tune(home, spec, *args)
    assert code == 0, out
    best = json.loads((home / "studies" / "tiny-lm-tune" / "best.json").read_text())
    assert best["registered"] == "tiny-lm-tune:1" and best["direction"] == "minimize"
    trials = _study(home, "tiny-lm-tune").trials
    assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE"]
    for t in trials:
        rows = _metrics(home, t.user_attrs["run_id"])
        assert [r["epoch"] for r in rows] == [1, 2]
        for r in rows:
            assert r["val_perplexity"] == pytest.approx(math.exp(r["val_loss"]), rel=1e-9)
        trial_spec = load_spec(home / "studies" / "tiny-lm-tune" / "trials" / f"{t.number:04d}.yaml")
        assert trial_spec.model.layers is not None
        assert trial_spec.model.layers[1]["decoder_block"]["heads"] == 2
        dim = trial_spec.model.layers[0]["token_embedding"]["dim"]
        assert dim == t.params["model.layers.0.token_embedding.dim"]
    model = json.loads((home / "registry" / "tiny-lm-tune" / "1" / "model.json").read_text())
    assert model["task"] == "language_modeling" and model["signature"]["kind"] == "generator"
    assert model["metrics"]["val_perplexity"] == pytest.approx(best["value"])
    assert "tokenizer.json" in model["files"]
    # the tokens were cached under the study's home once, and every trial reused them
    assert len(list((home / "cache" / "tokens").glob("*.tokens"))) == 1

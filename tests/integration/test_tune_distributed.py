"""Trials that are themselves 2-worker DDP jobs: rank 0 reports, a prune stops every rank at once."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from skylift.registry import load_model
from skylift.train.checkpoint import load
from tests.integration.test_tune import _finish, _skylift, _study, _trial_processes

SPEC = """
name: ddp-mlp
data: {train: builtin:digits28, validation_split: 0.2}
model:
  input_shape: [784]
  layers:
    - dense: {units: 64, activation: relu}
    - dense: {units: 10}
train: {epochs: 2, batch_size: 64, seed: 0}
tune:
  # 1e-7 learns nothing: with seed 6 the random sampler draws [0.01, 0.01, 1e-7], so the third
  # trial starts after a good one has reported epoch 1, and Hyperband (one bracket at 2 epochs)
  # prunes it at epoch 1.
  space: {train.optimizer.lr: {choice: [0.01, 1.0e-7]}}
"""


def test_parallel_ddp_trials_prune_with_every_rank_stopping(home: Path, tmp_path: Path) -> None:
    spec = tmp_path / "ddp.yaml"
    spec.write_text(SPEC)
    args = ["tune", str(spec), "--trials", "3", "--parallel", "2", "--workers", "2"]
    code, out = _finish(_skylift(home, *args, "--sampler", "random", "--seed", "6", "--pruner", "hyperband"))
    assert code == 0, out
    trials = _study(home, "ddp-mlp").trials
    assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE", "PRUNED"], out
    assert trials[2].intermediate_values.keys() == {1}
    for t in trials:
        run = home / "runs" / t.user_attrs["run_id"]
        summary = json.loads((run / "summary.json").read_text())
        assert summary["workers"] == 2
        # A pruned trial stopped after epoch 1 on every rank: a rank left behind would have hung
        # in the next gradient sync and failed the trial instead of ending it cleanly.
        assert summary["stopped_early"] is (t.state.name == "PRUNED")
        assert summary["epochs"] == (1 if t.state.name == "PRUNED" else 2)
    assert _trial_processes(home) == []
    assert "registered model: ddp-mlp:1" in out


def test_trials_that_are_2_worker_fsdp_jobs_report_prune_and_register_one_file(
    home: Path, tmp_path: Path
) -> None:
    """The same study with sharded trials: every rank stops on a prune, sharded checkpoints per trial,
    and the best trial's model registered as one consolidated file that loads without FSDP."""
    from tests.integration.test_fsdp import _spec

    spec = _spec(tmp_path, name="fsdp-lm", epochs=2)
    text = spec.read_text() + "tune:\n  space: {train.optimizer.lr: {choice: [0.003, 1.0e-7]}}\n"
    spec.write_text(text)
    args = ["tune", str(spec), "--trials", "3", "--parallel", "1", "--workers", "2"]
    code, out = _finish(_skylift(home, *args, "--sampler", "random", "--seed", "6", "--pruner", "hyperband"))
    assert code == 0, out
    trials = _study(home, "fsdp-lm").trials
    assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE", "PRUNED"], out
    for t in trials:
        run = home / "runs" / t.user_attrs["run_id"]
        assert json.loads((run / "placement.json").read_text())["strategy"] == "fsdp"
        summary = json.loads((run / "summary.json").read_text())
        assert summary["workers"] == 2 and summary["epochs"] == (1 if t.state.name == "PRUNED" else 2)
    assert _trial_processes(home) == []
    assert "registered model: fsdp-lm:1" in out
    best = home / "runs" / _study(home, "fsdp-lm").best_trial.user_attrs["run_id"] / "checkpoints" / "best.pt"
    registered = load_model("fsdp-lm:1", home).module.state_dict()
    consolidated = load(best)["model"]
    assert registered.keys() == consolidated.keys()
    assert all(torch.equal(registered[k], consolidated[k]) for k in registered)

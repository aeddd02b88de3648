"""fit's per-epoch hook stops a run, and the trial hook reports to the study and prunes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import optuna

from skylift.spec import load_spec
from skylift.train.loop import fit
from skylift.tune._hook import hook_arg, pruning_hook
from skylift.tune._storage import StorageRef, open_storage
from tests.conftest import EXAMPLE


def test_on_epoch_true_stops_the_run_and_marks_it(home: Path) -> None:
    spec = load_spec(EXAMPLE, ["train.epochs=3", "train.register_best=false"])
    seen: list[int] = []

    def stop_after_one(row: dict[str, Any]) -> bool:
        seen.append(row["epoch"])
        return row["epoch"] == 1

    result = fit(spec, home=home, run_id="hooked", on_epoch=stop_after_one)
    assert seen == [1] and len(result.history) == 1
    summary = json.loads((result.run_dir / "summary.json").read_text())
    assert summary["stopped_early"] is True and summary["epochs"] == 1
    # Opened again (as an elastic restart does after a worker dies at teardown): still stopped.
    (result.run_dir / "summary.json").unlink()
    again = fit(spec, home=home, run_id="hooked")
    assert len(again.history) == 1 and again.summary["stopped_early"] is True


def test_pruning_hook_reports_and_prunes_a_worse_trial(tmp_path: Path) -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    url = f"journal:{tmp_path / 'journal.log'}"
    study = optuna.create_study(storage=open_storage(StorageRef(url)), study_name="s", direction="maximize")
    good, bad = study.ask(), study.ask()
    hooks = {
        t.number: pruning_hook(hook_arg(url, "s", t._trial_id, "val_accuracy", "hyperband", 2))
        for t in (good, bad)
    }
    assert hooks[good.number]({"epoch": 1, "val_accuracy": 0.9}) is False
    assert hooks[bad.number]({"epoch": 1, "val_accuracy": 0.1}) is True
    assert study.get_trials()[bad.number].intermediate_values == {1: 0.1}


def test_a_trial_is_never_pruned_after_its_last_epoch(tmp_path: Path) -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    url = f"journal:{tmp_path / 'journal.log'}"
    study = optuna.create_study(storage=open_storage(StorageRef(url)), study_name="s", direction="minimize")
    for _ in range(3):  # the median pruner's start-up trials: val_mae 1.0 at both epochs
        done = study.ask()
        done.report(1.0, 1)
        done.report(1.0, 2)
        study.tell(done, 1.0)
    early, late = study.ask(), study.ask()
    hooks = {
        t.number: pruning_hook(hook_arg(url, "s", t._trial_id, "val_mae", "median", 2)) for t in (early, late)
    }
    assert hooks[early.number]({"epoch": 1, "val_mae": 50.0}) is True  # far worse with an epoch to go
    assert hooks[late.number]({"epoch": 2, "val_mae": 50.0}) is False  # as bad, but complete: kept
    assert study.get_trials()[late.number].intermediate_values == {2: 50.0}

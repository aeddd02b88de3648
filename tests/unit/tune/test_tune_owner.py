"""Trials left RUNNING by a dead driver are found, failed and retried exactly once."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import optuna
import pytest

from skylift.tune import _owner
from skylift.tune._storage import StorageRef, open_storage


@pytest.fixture
def study(tmp_path: Path) -> optuna.Study:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = open_storage(StorageRef(f"journal:{tmp_path / 'journal.log'}"))
    return optuna.create_study(storage=storage, study_name="s", direction="maximize")


def _running(study: optuna.Study, owner: str | None, beat: float) -> optuna.Trial:
    trial = study.ask()
    trial.suggest_float("x", 0.0, 1.0)
    if owner is not None:
        study._storage.set_trial_system_attr(trial._trial_id, _owner.OWNER, owner)
    study._storage.set_trial_system_attr(trial._trial_id, _owner.BEAT, beat)
    return trial


def test_dead_local_driver_and_silent_remote_driver_are_reclaimed(study: optuna.Study) -> None:
    proc = subprocess.Popen(["true"])
    proc.wait()
    host = _owner.me().rsplit(":", 2)[0]
    dead = _running(study, f"{host}:{proc.pid}:1", time.time())
    alive = _running(study, _owner.me(), time.time())
    silent = _running(study, "elsewhere:1:1", time.time() - _owner.GRACE_S - 1)
    busy = _running(study, "elsewhere:2:1", time.time())
    assert sorted(_owner.reclaim(study)) == sorted([dead.number, silent.number])
    assert _owner.reclaim(study) == []  # a second look (or a second driver) retries nothing twice
    states = {t.number: t.state.name for t in study.get_trials()}
    assert states[dead.number] == states[silent.number] == "FAIL"
    assert states[alive.number] == states[busy.number] == "RUNNING"
    retry = study.ask()
    assert retry.user_attrs[_owner.RETRY_OF] in (dead.number, silent.number)
    assert retry.suggest_float("x", 0.0, 1.0) in (dead.params["x"], silent.params["x"])

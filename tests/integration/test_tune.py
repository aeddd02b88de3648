"""`skylift tune` end to end: real trial processes, resume after a kill, Ctrl-C, bad input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest

from skylift.cli import main
from tests.conftest import EXAMPLE

SHORT = ("--set", "train.epochs=2", "--sampler", "random", "--seed", "1")


def _skylift(home: Path, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "SKYLIFT_HOME": str(home), "COLUMNS": "160"}
    return subprocess.Popen(
        [sys.executable, "-m", "skylift", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def _finish(proc: subprocess.Popen[str], timeout: float = 240) -> tuple[int, str]:
    out, _ = proc.communicate(timeout=timeout)
    return proc.returncode, out


def _study(home: Path, name: str = "mnist-mlp") -> optuna.Study:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    from optuna.storages.journal import JournalFileBackend

    path = home / "studies" / name / "journal.log"
    return optuna.load_study(
        study_name=name, storage=optuna.storages.JournalStorage(JournalFileBackend(str(path)))
    )


def _trial_processes(home: Path) -> list[int]:
    """Trial processes (and their DDP workers) of studies under `home`: their output is a trial log."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            out = os.readlink(proc / "fd" / "1")
        except OSError:
            continue
        if proc.name.isdigit() and out.startswith(str(home / "studies")) and out.endswith(".log"):
            found.append(int(proc.name))
    return found


def test_tune_runs_parallel_trials_registers_the_best_and_resumes(home: Path) -> None:
    code, out = _finish(_skylift(home, "tune", str(EXAMPLE), "--trials", "3", "--parallel", "2", *SHORT))
    assert code == 0, out
    folder = home / "studies" / "mnist-mlp"
    for name in ("journal.log", "history.png", "importance.png", "best.json"):
        assert (folder / name).is_file(), name
    best = json.loads((folder / "best.json").read_text())
    assert best["registered"] == "mnist-mlp:1" and f"best trial {best['trial']}:" in out
    assert "registered model: mnist-mlp:1" in out and "train.optimizer.lr" in out
    study = _study(home)
    assert [t.state.name for t in study.trials].count("COMPLETE") + [
        t.state.name for t in study.trials
    ].count("PRUNED") == 3
    model = json.loads((home / "registry" / "mnist-mlp" / "1" / "model.json").read_text())
    assert model["lineage"]["study"] == "mnist-mlp" and model["lineage"]["trial"] == best["trial"]
    assert model["lineage"]["run_id"] == best["run_id"]
    # trial runs do not register themselves: only the study's best is in the registry
    assert sorted(p.name for p in (home / "registry" / "mnist-mlp").iterdir() if p.name.isdigit()) == ["1"]

    # The same command again: the study is complete, nothing reruns, nothing is registered twice.
    code, out = _finish(_skylift(home, "tune", str(EXAMPLE), "--trials", "3", "--parallel", "2", *SHORT))
    assert code == 0, out
    assert len(_study(home).trials) == 3 and "registered model: mnist-mlp:1" in out


def test_gp_and_cmaes_samplers_and_timeout(home: Path) -> None:
    short = ("--set", "train.epochs=1", "--pruner", "none", "--seed", "3")
    # --timeout: no new trial after 1 s, the running ones finish; far fewer than 50 trials
    args = ("tune", str(EXAMPLE), "--study", "gp", "--sampler", "gp", "--trials", "50", "--timeout", "1")
    code, out = _finish(_skylift(home, *args, "--parallel", "2", *short))
    assert code == 0 and "--timeout 1s reached" in out, out
    trials = _study(home, "gp").trials
    assert 1 <= len(trials) <= 6 and all(t.state.name == "COMPLETE" for t in trials)
    args = ("tune", str(EXAMPLE), "--study", "cma", "--sampler", "cmaes", "--trials", "3")
    code, out = _finish(_skylift(home, *args, "--parallel", "1", *short))
    assert code == 0 and "registered model: mnist-mlp:2" in out, out
    trials = _study(home, "cma").trials
    assert [t.state.name for t in trials] == ["COMPLETE"] * 3
    assert len({t.params["train.optimizer.lr"] for t in trials}) == 3


def _wait_running(home: Path, proc: subprocess.Popen[str], count: int = 1, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if len(_trial_processes(home)) >= count:
            time.sleep(1.0)  # let the trial get into training
            return
        time.sleep(0.1)
    raise AssertionError(f"no trial process started (exit {proc.poll()})")


def test_killed_study_resumes_and_ctrl_c_stops_cleanly(home: Path) -> None:
    # 50 epochs (a few seconds a trial): long enough to be caught running by the kill and the Ctrl-C.
    args = ("tune", str(EXAMPLE), "--trials", "2", "--parallel", "1", *SHORT, "--set", "train.epochs=50")
    first = _skylift(home, *args)
    _wait_running(home, first)
    os.kill(first.pid, signal.SIGKILL)  # the driver dies without a word
    first.wait(timeout=30)
    # The trial notices its driver's death by itself; its output pipe closes when it has gone.
    # Generous under a loaded machine (a trial still stopping holds the pipe open).
    deadline = time.monotonic() + 90
    while _trial_processes(home) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _trial_processes(home) == [], "a trial outlived its driver"
    first.communicate(timeout=30)
    assert [t.state.name for t in _study(home).trials] == ["RUNNING"]

    second = _skylift(home, *args)  # marks the dead trial failed and retries it; then Ctrl-C
    _wait_running(home, second)
    os.kill(second.pid, signal.SIGINT)
    code, out = _finish(second, timeout=60)
    assert code == 130 and "re-run the same command to resume" in out, out
    assert "trial 0 was left running by a dead process" in out
    assert _trial_processes(home) == []

    code, out = _finish(_skylift(home, *args))
    assert code == 0, out
    trials = _study(home).trials
    states = [t.state.name for t in trials]
    assert states[:2] == ["FAIL", "FAIL"] and trials[1].user_attrs["retry_of"] == 0
    assert trials[2].user_attrs["retry_of"] == 1 and trials[2].params == trials[0].params
    assert sum(s in ("COMPLETE", "PRUNED") for s in states) == 2 and "WAITING" not in states
    assert "registered model: mnist-mlp:1" in out


def _run(home: Path, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = main(["--home", str(home), "tune", *args])
    return code, capsys.readouterr().err


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        (["tune.space={}"], "tune.space is empty"),
        (["tune.space={train.lr: {uniform: [0.1, 0.2]}}"], "train.lr is not a field of this spec"),
        (["tune.space={train.epochs: {int: [5, 2]}}"], "low must be <= high"),
        (["tune.space={train.optimizer.lr: {log_uniform: [0.0, 0.1]}}"], "log_uniform needs low > 0"),
        (["tune.space={train.optimizer.lr: {beta: [1, 2]}}"], "must be one of"),
    ],
)
def test_bad_space_exits_2_with_one_line_and_writes_nothing(
    home: Path, capsys: pytest.CaptureFixture[str], sets: list[str], message: str
) -> None:
    code, err = _run(home, capsys, str(EXAMPLE), *(a for s in sets for a in ("--set", s)))
    assert code == 2 and message in err and err.count("\n") == 1, err
    assert not home.exists()


def test_bad_storage_and_other_direction_exit_2(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code, err = _run(home, capsys, str(EXAMPLE), "--storage", f"postgresql://u:pw@127.0.0.1:{port}/db")
    assert code == 2 and "is unreachable" in err and err.count("\n") == 1 and "pw" not in err, err
    code, err = _run(home, capsys, str(EXAMPLE), "--storage", "redis://x")
    assert code == 2 and "--storage must be" in err
    assert not home.exists()
    # a study made to minimize, resumed to maximize
    journal = home / "studies" / "mnist-mlp" / "journal.log"
    journal.parent.mkdir(parents=True)
    from optuna.storages.journal import JournalFileBackend

    storage = optuna.storages.JournalStorage(JournalFileBackend(str(journal)))
    optuna.create_study(storage=storage, study_name="mnist-mlp", direction="minimize")
    before = journal.read_bytes()
    code, err = _run(home, capsys, str(EXAMPLE))
    assert code == 2 and "created to minimize its metric, not maximize" in err, err
    assert journal.read_bytes() == before and sorted(p.name for p in journal.parent.iterdir()) == [
        "journal.log"
    ]

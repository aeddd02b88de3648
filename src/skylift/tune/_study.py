"""The study driver: P trial processes at once, each told to Optuna when it ends; resumable.

One driver per `skylift tune`; several drivers (here or on other machines) may share a study
through its storage. Trials are processes, never threads: a trial is a whole training job.
"""

from __future__ import annotations

import math
import os
import secrets
import time
from dataclasses import dataclass, field
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from skylift import _atomic
from skylift.errors import SpecError
from skylift.home import skylift_home
from skylift.spec import JobSpec
from skylift.tune import _owner, _trial
from skylift.tune._plan import Plan

if TYPE_CHECKING:
    import optuna

    from skylift.security import MasterKey

POLL_S = 0.1  # how often the driver looks at its trial processes
STOP_WAIT_S = 20.0  # a stopped trial gets this long to exit before SIGKILL


class TuneObserver(Protocol):
    """Receives progress; the CLI draws a progress bar."""

    def start(self, study: str, total: int) -> None: ...
    def update(self, counts: dict[str, int], best: float | None) -> None: ...
    def note(self, text: str) -> None: ...


@dataclass(frozen=True)
class TrialRow:
    number: int
    state: str
    value: float | None
    params: dict[str, Any]
    seconds: float | None
    run_id: str | None
    retry_of: int | None


@dataclass
class StudyResult:
    study: str
    folder: Path
    storage: str
    metric: str
    direction: str
    trials: list[TrialRow]
    best: TrialRow | None
    ran_here: list[int] = field(default_factory=list)
    registered: str | None = None
    interrupted: bool = False
    notes: list[str] = field(default_factory=list)


@dataclass
class _Running:
    trial: optuna.Trial
    proc: BaseProcess
    run_id: str


def _counted(trials: list[optuna.trial.FrozenTrial]) -> int:
    """Trials that use up the budget: all but waiting ones and failures already retried."""
    from optuna.trial import TrialState

    retried = {t.user_attrs.get(_owner.RETRY_OF) for t in trials}
    return sum(1 for t in trials if t.state != TrialState.WAITING and t.number not in retried)


def _counts(trials: list[optuna.trial.FrozenTrial]) -> dict[str, int]:
    out = {"complete": 0, "pruned": 0, "failed": 0, "running": 0}
    names = {"COMPLETE": "complete", "PRUNED": "pruned", "FAIL": "failed", "RUNNING": "running"}
    for t in trials:
        key = names.get(t.state.name)
        if key:
            out[key] += 1
    return out


def _best(study: optuna.Study) -> optuna.trial.FrozenTrial | None:
    try:
        return study.best_trial
    except ValueError:
        return None


class _Driver:
    def __init__(self, plan: Plan, study: optuna.Study, observer: TuneObserver | None) -> None:
        self.plan, self.study, self.observer = plan, study, observer
        self.running: dict[int, _Running] = {}
        self.ran: list[int] = []
        self.notes: list[str] = []
        self.me = _owner.me()
        self.last_beat = 0.0
        self.forks = _trial.context()

    def note(self, text: str) -> None:
        self.notes.append(text)
        if self.observer:
            self.observer.note(text)

    def refresh(self) -> list[optuna.trial.FrozenTrial]:
        trials = self.study.get_trials(deepcopy=False)
        if self.observer:
            best = _best(self.study)
            self.observer.update(_counts(trials), best.value if best else None)
        return trials

    def run(self) -> bool:
        """Run trials until the budget or the timeout is spent; True when interrupted (Ctrl-C)."""
        p = self.plan
        deadline = time.monotonic() + p.timeout if p.timeout else math.inf
        for n in _owner.reclaim(self.study):
            self.note(f"trial {n} was left running by a dead process: marked failed, retried")
        trials = self.refresh()
        if self.observer:
            self.observer.start(p.study, p.trials)
        asking = True
        try:
            while True:
                if self._reap():
                    trials = self.refresh()
                if asking and time.monotonic() > deadline:
                    asking = False
                    self.note(f"--timeout {p.timeout:g}s reached: no new trials, running ones finish")
                if asking and len(self.running) < p.parallel:
                    trials = self.study.get_trials(deepcopy=False)
                    if _counted(trials) < p.trials:
                        self._start_one()
                        trials = self.refresh()
                        continue
                    asking = False
                if not self.running and not asking:
                    return False
                self._heartbeat()
                time.sleep(POLL_S)
        except KeyboardInterrupt:
            return True
        finally:
            self._stop_all()

    def _start_one(self) -> None:
        from optuna.trial import TrialState

        from skylift.tune._space import suggest, trial_spec

        p = self.plan
        trial = self.study.ask()
        storage = self.study._storage
        storage.set_trial_system_attr(trial._trial_id, _owner.OWNER, self.me)
        storage.set_trial_system_attr(trial._trial_id, _owner.BEAT, time.time())
        params = suggest(trial, p.spec.tune.space)
        run_id = f"{p.study}-t{trial.number:04d}-{secrets.token_hex(3)}"
        trial.set_user_attr("run_id", run_id)
        try:
            spec = trial_spec(p.spec, {**params, **p.forced}, source=f"trial {trial.number}")
        except SpecError as exc:
            self.note(f"trial {trial.number} failed: {exc}")
            self.study.tell(trial, state=TrialState.FAIL)
            return
        folder = p.folder / "trials"
        folder.mkdir(parents=True, exist_ok=True)
        spec_file = folder / f"{trial.number:04d}.yaml"
        _atomic.write_text(spec_file, spec.to_yaml())
        from skylift.tune._hook import hook_arg

        arg = hook_arg(p.storage.url, p.study, trial._trial_id, p.metric, p.pruner, spec.train.epochs)
        log = folder / f"{trial.number:04d}.log"
        args = (spec_file, run_id, p.home, p.workers, arg, log, os.getpid())
        proc = self.forks.Process(target=_trial.run, args=args, name=f"skylift-trial-{trial.number}")
        proc.start()
        self.running[trial.number] = _Running(trial, proc, run_id)
        self.ran.append(trial.number)

    def _reap(self) -> bool:
        done = [n for n, r in self.running.items() if not r.proc.is_alive()]
        for n in done:
            self._tell(self.running.pop(n))
        return bool(done)

    def _tell(self, r: _Running) -> None:
        from optuna.trial import TrialState

        from skylift.train.run import RunDir

        n = r.trial.number
        summary_file = RunDir.under(self.plan.home, r.run_id).summary
        if r.proc.exitcode == 0 and summary_file.is_file():
            summary = RunDir.under(self.plan.home, r.run_id).read_summary()
            value = summary.get("best", {}).get(self.plan.metric)
            if summary.get("stopped_early"):
                self._safe_tell(r.trial, state=TrialState.PRUNED)
                return
            if isinstance(value, int | float) and not math.isnan(value):
                self._safe_tell(r.trial, value=float(value))
                return
        self.note(f"trial {n} failed (exit code {r.proc.exitcode}): {self._last_line(n)}")
        self._safe_tell(r.trial, state=TrialState.FAIL)

    def _safe_tell(self, trial: optuna.Trial, value: float | None = None, state: Any = None) -> None:
        from optuna.exceptions import UpdateFinishedTrialError

        try:
            self.study.tell(trial, value, state=state)
        except UpdateFinishedTrialError:
            self.note(f"trial {trial.number} was already finished by another process")
        except RuntimeError:
            # The grid sampler calls study.stop() once the grid is covered, which Optuna allows
            # only inside study.optimize; the trial's state is recorded before that.
            pass

    def _last_line(self, n: int) -> str:
        log = self.plan.folder / "trials" / f"{n:04d}.log"
        lines = (
            [ln for ln in log.read_text(errors="replace").splitlines() if ln.strip()] if log.is_file() else []
        )
        return lines[-1][:200] if lines else f"no output (see {log})"

    def _heartbeat(self) -> None:
        now = time.time()
        if now - self.last_beat < _owner.HEARTBEAT_S:
            return
        self.last_beat = now
        for r in self.running.values():
            self.study._storage.set_trial_system_attr(r.trial._trial_id, _owner.BEAT, now)

    def _stop_all(self) -> None:
        """Stop trials still running (Ctrl-C): mark them failed and enqueue retries for a re-run."""
        from optuna.trial import TrialState

        for r in self.running.values():
            if r.proc.is_alive():
                r.proc.terminate()  # SIGTERM: the trial stops like Ctrl-C
        end = time.monotonic() + STOP_WAIT_S
        for r in self.running.values():
            r.proc.join(timeout=max(0.1, end - time.monotonic()))
            if r.proc.is_alive():
                r.proc.kill()
                r.proc.join()
            self._safe_tell(r.trial, state=TrialState.FAIL)
            self.study.enqueue_trial(r.trial.params, user_attrs={_owner.RETRY_OF: r.trial.number})
            self.note(f"trial {r.trial.number} stopped: a re-run retries it")
        self.running.clear()


def _rows(study: optuna.Study) -> list[TrialRow]:
    rows = []
    for t in study.get_trials(deepcopy=False):
        seconds = t.duration.total_seconds() if t.duration else None
        retry = t.user_attrs.get(_owner.RETRY_OF)
        rows.append(
            TrialRow(
                t.number,
                t.state.name.lower(),
                t.value,
                dict(t.params),
                seconds,
                t.user_attrs.get("run_id"),
                int(retry) if retry is not None else None,
            )
        )
    return rows


def tune(
    spec: JobSpec,
    options: Any = None,
    *,
    home: Path | str | None = None,
    observer: TuneObserver | None = None,
    master_key: MasterKey | None = None,
) -> StudyResult:
    """Run (or resume) the study of `spec.tune` with `options` (TuneOptions) over CLI-style overrides.

    Everything is validated before anything is written: a bad space, storage or a study created
    with another direction raise SpecError. At the end the best trial's model is registered.
    Trials are multiprocessing children (fork server): a script calling this needs the usual
    `if __name__ == "__main__":` guard, since each trial imports the script's main module.
    """
    from skylift.tune._finish import finish
    from skylift.tune._plan import TuneOptions, make_plan, open_study

    plan = make_plan(spec, options or TuneOptions(), skylift_home(home))
    study = open_study(plan)
    driver = _Driver(plan, study, observer)
    interrupted = driver.run()
    driver.refresh()
    result = StudyResult(
        plan.study,
        plan.folder,
        plan.storage.shown(),
        plan.metric,
        plan.direction,
        _rows(study),
        None,
        driver.ran,
        interrupted=interrupted,
        notes=driver.notes,
    )
    finish(plan, study, result, master_key)
    return result

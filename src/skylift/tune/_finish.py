"""After the trials: plots, best.json, and the best trial's model in the registry (once)."""

from __future__ import annotations

import fcntl
import json
from typing import TYPE_CHECKING

from skylift import _atomic

if TYPE_CHECKING:
    import optuna

    from skylift.security import MasterKey
    from skylift.tune._plan import Plan
    from skylift.tune._study import StudyResult, TrialRow


def finish(plan: Plan, study: optuna.Study, result: StudyResult, key: MasterKey | None) -> None:
    from skylift.tune import _plots

    result.best = _best(result.trials, plan.direction)
    _plots.history(study, plan.metric, plan.folder / "history.png")
    note = _plots.importance(study, plan.folder / "importance.png")
    if note:
        result.notes.append(note)
    if result.best is None or result.interrupted:
        return
    # Drivers sharing a study (same home) finish at about the same time: one registers.
    with (plan.folder / ".finish.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        from skylift.tune._study import _rows

        # Read again under the lock: another driver may have finished a better trial meanwhile.
        result.trials = _rows(study)
        best = result.best = _best(result.trials, plan.direction) or result.best
        record = plan.folder / "best.json"
        previous = json.loads(record.read_text()) if record.is_file() else {}
        registered = previous.get("registered") if previous.get("trial") == best.number else None
        if registered is None:
            registered = _register(plan, best.number, best.run_id, result, key)
        result.registered = registered
        _atomic.write_json(
            record,
            {
                "study": plan.study,
                "trial": best.number,
                "metric": plan.metric,
                "direction": plan.direction,
                "value": best.value,
                "params": best.params,
                "run_id": best.run_id,
                "registered": registered,
            },
        )


def _best(trials: list[TrialRow], direction: str) -> TrialRow | None:
    """The best complete trial (the first of equals), else the first complete one, else None."""
    complete = [r for r in trials if r.state == "complete"]
    scored = [r for r in complete if r.value is not None]
    if scored:
        pick = max if direction == "maximize" else min
        return pick(scored, key=lambda r: r.value or 0.0)
    return complete[0] if complete else None


def _register(
    plan: Plan, number: int, run_id: str | None, result: StudyResult, key: MasterKey | None
) -> str | None:
    from skylift.registry import Registry, run_metadata
    from skylift.train import checkpoint
    from skylift.train.run import RunDir

    run = RunDir.under(plan.home, run_id or "")
    if not run_id or not run.best.is_file() or not run.summary.is_file():
        result.notes.append(
            f"best trial {number} ran on another machine (run {run_id}): its run folder is there"
        )
        return None
    best = checkpoint.load(run.best)
    metrics, lineage = run_metadata(run.read_summary())
    lineage.update({"study": plan.study, "trial": number, "study_storage": plan.storage.shown()})
    serve = plan.spec.serve.model_dump(mode="json")
    version = Registry(plan.home, key).register(
        plan.spec.name, best["model"], best["meta"], metrics, lineage, serve
    )
    return str(version.ref)

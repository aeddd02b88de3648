"""Training: the loop, checkpoints, run folders and evaluation of trained models."""

from __future__ import annotations

from skylift.train.evaluation import Evaluation, evaluate
from skylift.train.loop import TrainObserver, TrainResult, fit

__all__ = ["Evaluation", "TrainObserver", "TrainResult", "evaluate", "fit", "resume"]


def resume(run_id: str, *, home: str | None = None, observer: TrainObserver | None = None) -> TrainResult:
    """Continue run `run_id` from its last.pt with the spec it was started with."""
    from skylift.errors import ModelNotFound
    from skylift.home import skylift_home
    from skylift.spec import load_spec
    from skylift.train.run import RunDir

    run = RunDir.under(skylift_home(home), run_id)
    if not run.spec.is_file():
        raise ModelNotFound(f"no run {run_id!r} under {run.path.parent}")
    return fit(load_spec(run.spec), home=home, run_id=run_id, observer=observer)

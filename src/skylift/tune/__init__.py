"""Hyper-parameter search: Optuna studies whose trials are whole training jobs (processes, DDP ok).

`tune(spec, TuneOptions(...))` runs or resumes the study of `spec.tune` and registers the best
trial's model; the `skylift tune` command is a thin layer over it.
"""

from __future__ import annotations

from skylift.tune._plan import TuneOptions
from skylift.tune._study import StudyResult, TrialRow, TuneObserver, tune

__all__ = ["StudyResult", "TrialRow", "TuneObserver", "TuneOptions", "tune"]

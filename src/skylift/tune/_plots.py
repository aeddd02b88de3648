"""The study's pictures: history.png (value per trial, best so far) and importance.png (fANOVA)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import TYPE_CHECKING

from skylift import _atomic

if TYPE_CHECKING:
    import optuna


def _save(fig: object, path: Path) -> None:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")  # type: ignore[attr-defined]
    plt.close(fig)  # type: ignore[arg-type]
    _atomic.write_bytes(path, buf.getvalue())


def history(study: optuna.Study, metric: str, path: Path) -> None:
    """Each finished trial's value (pruned ones at their last report) and the best so far."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.trial import TrialState

    maximize = study.direction.name == "MAXIMIZE"
    fig, ax = plt.subplots(figsize=(7, 4))
    done = [
        t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE and t.value is not None
    ]
    pruned = [
        t for t in study.get_trials(deepcopy=False) if t.state == TrialState.PRUNED and t.intermediate_values
    ]
    if done:
        ax.scatter([t.number for t in done], [float(t.value or 0.0) for t in done], s=18, label="complete")
        best: list[float] = []
        for t in sorted(done, key=lambda t: t.number):
            v = float(t.value)  # type: ignore[arg-type]
            best.append(v if not best else (max if maximize else min)(best[-1], v))
        ax.step(
            [t.number for t in sorted(done, key=lambda t: t.number)], best, where="post", label="best so far"
        )
    if pruned:
        last = [t.intermediate_values[max(t.intermediate_values)] for t in pruned]
        ax.scatter(
            [t.number for t in pruned], last, s=18, marker="x", color="grey", label="pruned (last epoch)"
        )
    ax.set_xlabel("trial")
    ax.set_ylabel(metric)
    ax.set_title(f"study {study.study_name}: {metric} ({study.direction.name.lower()})")
    if done or pruned:
        ax.legend(loc="best")
    _save(fig, path)


def importance(study: optuna.Study, path: Path) -> str | None:
    """Bar chart of each parameter's share of the value's variance; a note when it cannot be computed."""
    import warnings

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import optuna
    from optuna.trial import TrialState

    note = None
    scores: dict[str, float] = {}
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if len(complete) < 2:
        note = "parameter importance needs 2 or more complete trials"
    else:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                scores = optuna.importance.get_param_importances(study)
        except (ValueError, RuntimeError) as exc:
            note = f"parameter importance unavailable: {exc}"
    fig, ax = plt.subplots(figsize=(7, 0.6 + 0.5 * max(1, len(scores))))
    if scores:
        names = list(scores)[::-1]
        ax.barh(names, [scores[n] for n in names])
        ax.set_xlabel("importance (fANOVA share of variance)")
    else:
        ax.text(0.5, 0.5, note or "", ha="center", va="center")
        ax.set_axis_off()
    ax.set_title(f"study {study.study_name}: parameter importance")
    _save(fig, path)
    return note

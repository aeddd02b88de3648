"""Optuna studies of the home (`studies/<name>/journal.log`): trials and Optuna's own Plotly figures.

Studies kept in a database (`--storage postgresql://...`) are not found from the home and are not
listed. The journal is only read (Optuna reads it without its lock); one opened storage per study
is kept and catches up with new trials on each read.
"""

from __future__ import annotations

import json
import re
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from skylift.console._files import read_json
from skylift.errors import ModelNotFound

if TYPE_CHECKING:
    import optuna

_STUDY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")  # as `skylift tune --study` allows


@dataclass(frozen=True)
class StudyRow:
    name: str
    direction: str
    metric: str | None
    counts: dict[str, int]
    best_value: float | None
    best_trial: int | None
    registered: str | None


class Studies:
    """The studies of one home, each opened once."""

    def __init__(self, home: Path) -> None:
        self.folder = home / "studies"
        self._open: dict[str, optuna.Study] = {}

    def names(self) -> list[str]:
        if not self.folder.is_dir():
            return []
        return sorted(
            p.name for p in self.folder.iterdir() if _STUDY.match(p.name) and (p / "journal.log").is_file()
        )

    def study(self, name: str) -> optuna.Study:
        """The study `name`; ModelNotFound when there is no such journal study."""
        if name not in self._open:
            if not _STUDY.match(name) or not (self.folder / name / "journal.log").is_file():
                raise ModelNotFound(f"no study {name!r} in {self.folder}")
            import optuna
            from optuna.storages.journal import JournalFileBackend

            optuna.logging.set_verbosity(optuna.logging.WARNING)
            backend = JournalFileBackend(str(self.folder / name / "journal.log"))
            try:
                self._open[name] = optuna.load_study(
                    study_name=name, storage=optuna.storages.JournalStorage(backend)
                )
            except KeyError:
                raise ModelNotFound(
                    f"{self.folder / name / 'journal.log'} holds no study named {name!r}"
                ) from None
        return self._open[name]

    def rows(self) -> list[StudyRow]:
        return [self.row(n) for n in self.names()]

    def row(self, name: str) -> StudyRow:
        study = self.study(name)
        trials = study.get_trials(deepcopy=False)
        counts: dict[str, int] = {}
        for t in trials:
            counts[t.state.name.lower()] = counts.get(t.state.name.lower(), 0) + 1
        best = _best(study)
        record = read_json(self.folder / name / "best.json")
        registered = record.get("registered")
        return StudyRow(
            name,
            study.direction.name.lower(),
            study.user_attrs.get("metric"),
            counts,
            best.value if best else None,
            best.number if best else None,
            registered if isinstance(registered, str) else None,
        )

    def trials(self, name: str) -> list[dict[str, Any]]:
        """Each trial: number, state, value, params, seconds, its run and whether it was pruned."""
        out = []
        for t in self.study(name).get_trials(deepcopy=False):
            run_id = t.user_attrs.get("run_id")
            out.append(
                {
                    "number": t.number,
                    "state": t.state.name.lower(),
                    "value": t.value,
                    "params": {k: _plain(v) for k, v in t.params.items()},
                    "seconds": t.duration.total_seconds() if t.duration else None,
                    "run_id": run_id if isinstance(run_id, str) else None,
                    "pruned": t.state.name == "PRUNED",
                    "last_epoch": max(t.intermediate_values) if t.intermediate_values else None,
                }
            )
        return out

    def figures(self, name: str) -> dict[str, Any]:
        """Optuna's optimisation history, parameter importance and learning curves as Plotly JSON;
        a figure that cannot be drawn yet becomes a note (e.g. importance needs 2 complete trials)."""
        from optuna import visualization as vis

        study = self.study(name)
        out: dict[str, Any] = {}
        notes: dict[str, str] = {}
        complete = [t for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE"]
        drawers: dict[str, Callable[[optuna.Study], Any]] = {
            "history": vis.plot_optimization_history,
            "importance": vis.plot_param_importances,
            "intermediate": vis.plot_intermediate_values,
        }
        for key, draw in drawers.items():
            if key == "importance" and len(complete) < 2:
                notes[key] = "parameter importance needs 2 or more complete trials"
                continue
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    out[key] = json.loads(draw(study).to_json())  # numpy values made plain
            except (ValueError, RuntimeError, ZeroDivisionError) as exc:
                notes[key] = f"not available: {exc}"
        return {"figures": out, "notes": notes}

    def as_json(self, name: str) -> dict[str, Any]:
        return {"study": asdict(self.row(name)), "trials": self.trials(name)}


def _best(study: optuna.Study) -> optuna.trial.FrozenTrial | None:
    try:
        return study.best_trial
    except ValueError:
        return None


def _plain(v: Any) -> Any:
    return v if isinstance(v, str | int | float | bool) or v is None else str(v)

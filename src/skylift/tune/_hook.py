"""Rank 0 of a trial: report each epoch's metric to the study and ask whether to prune."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any

HOOK = "skylift.tune._hook:pruning_hook"


def hook_arg(storage: str, study: str, trial_id: int, metric: str, pruner: str, epochs: int) -> str:
    return json.dumps(
        {
            "storage": storage,
            "study": study,
            "trial_id": trial_id,
            "metric": metric,
            "pruner": pruner,
            "epochs": epochs,
        }
    )


def pruning_hook(arg: str) -> Callable[[dict[str, Any]], bool]:
    """`fit`'s on_epoch for a trial: report the metric at this epoch; True when the pruner says stop."""
    import optuna

    from skylift.tune._algorithms import make_pruner
    from skylift.tune._storage import StorageRef, open_storage

    a = json.loads(arg)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(
        study_name=a["study"],
        storage=open_storage(StorageRef(a["storage"])),
        pruner=make_pruner(a["pruner"], a["epochs"]),
    )
    trial = optuna.Trial(study, a["trial_id"])
    metric, last = a["metric"], int(a["epochs"])

    def on_epoch(row: dict[str, Any]) -> bool:
        value = float(row[metric])
        if math.isnan(value):
            return True  # a diverged trial: nothing to learn from more epochs
        epoch = int(row["epoch"])
        trial.report(value, epoch)
        # After the last epoch there is nothing left to save: the trial is complete, and may be the
        # best (Hyperband can still rank it below its bracket's cut at max_resource).
        return epoch < last and bool(trial.should_prune())

    return on_epoch

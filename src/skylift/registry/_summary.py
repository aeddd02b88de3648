"""What a registered version records from its training run's summary.json: metrics and lineage."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

_LINEAGE_KEYS = ("run_id", "best_epoch", "monitor", "epochs", "checkpoint")


def run_metadata(summary: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(metrics, lineage) from a run's summary.json, for `Registry.register`.

    Metrics: the best epoch's validation metrics (`val_*`) and, when the run had a test set, its
    scalar test metrics as `test_*` (the confusion matrix stays in the run folder).
    """
    metrics: dict[str, Any] = {}
    best = summary.get("best")
    if isinstance(best, Mapping):
        metrics.update({str(k): v for k, v in best.items() if _scalar(v)})
    test = summary.get("test")
    if isinstance(test, Mapping):
        metrics.update({f"test_{k}": v for k, v in test.items() if _scalar(v)})
    lineage = {k: summary[k] for k in _LINEAGE_KEYS if k in summary and _scalar(summary[k])}
    return metrics, lineage


def _scalar(value: Any) -> bool:
    return value is None or isinstance(value, str | int | float)

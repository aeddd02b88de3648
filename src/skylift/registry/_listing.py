"""What `models list` shows of a version (task, monitored metric, creation time, aliases) and its orders."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from skylift.errors import SpecError
from skylift.spec import higher_is_better

SORTS = ("version", "created", "metric")


@dataclass(frozen=True)
class VersionInfo:
    """One version as listed; read from its model.json after the manifest check."""

    name: str
    version: int
    created: str | None
    """Registration time, ISO 8601 UTC."""
    aliases: tuple[str, ...]
    monitor: str | None
    """The validation metric that picked the registered checkpoint, when its run recorded one."""
    metric: float | None
    """`monitor`'s value at the registered checkpoint."""
    problem: str | None = None
    """Why the version failed its check (nothing else of it is shown then)."""
    task: str | None = None
    """What the model does: classification, regression or language_modeling (None when damaged)."""

    @property
    def ref(self) -> str:
        return f"{self.name}:{self.version}"


def version_info(name: str, version: int, info: Mapping[str, Any], aliases: Iterable[str]) -> VersionInfo:
    """The listed fields of a verified model.json."""
    lineage, metrics = info.get("lineage"), info.get("metrics")
    lineage = lineage if isinstance(lineage, dict) else {}
    metrics = metrics if isinstance(metrics, dict) else {}
    monitor = lineage.get("monitor") if isinstance(lineage.get("monitor"), str) else None
    value = metrics.get(monitor) if monitor else None
    metric = float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None
    created = info.get("created") if isinstance(info.get("created"), str) else None
    task = str(info.get("task") or "classification")  # versions from before tasks are classifiers
    return VersionInfo(name, version, created, tuple(sorted(aliases)), monitor, metric, task=task)


def sort_versions(rows: Iterable[VersionInfo], by: str) -> list[VersionInfo]:
    """`version` ascending, `created` newest first, or `metric` best first (lower first for a loss,
    higher for a score; versions monitoring different metrics are grouped by metric name, and
    versions without one come last)."""
    if by == "version":
        return sorted(rows, key=lambda r: r.version)
    if by == "created":
        return sorted(rows, key=lambda r: (r.created or "", r.version), reverse=True)
    if by == "metric":

        def best_first(r: VersionInfo) -> tuple[bool, str, float, int]:
            if r.monitor is None or r.metric is None:
                return (True, "", 0.0, r.version)
            return (False, r.monitor, -r.metric if higher_is_better(r.monitor) else r.metric, r.version)

        return sorted(rows, key=best_first)
    raise SpecError(f"sort must be one of {', '.join(SORTS)}, got {by!r}")

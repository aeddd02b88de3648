"""Run folders as the console shows them: status, metrics history, summary, spec, logs, samples.

Only reads `SKYLIFT_HOME/runs/<run-id>/` (written atomically by training, so a reader never sees
half a file). Whether a run without summary.json still trains is judged by its last write: a
training process rewrites metrics.jsonl and last.pt every epoch.
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from skylift.console._files import as_dict, read_json, read_jsonl, read_yaml, redact, tail
from skylift.errors import ModelNotFound
from skylift.home import RUN_ID

ACTIVE_S = 120.0  # a run without summary.json counts as running while it wrote within this (or 3 epochs)
PICTURES = ("curves.png", "scatter.png", "confusion.png")  # files a run page may show
_TRIAL_RUN = re.compile(r"^(?P<study>.+)-t(?P<trial>\d{4})-[0-9a-f]{6}$")


@dataclass(frozen=True)
class RunRow:
    run_id: str
    name: str
    task: str
    status: str
    """finished, pruned (stopped early), running, or stopped (no summary and no recent write)."""
    epochs: int
    epochs_total: int | None
    monitor: str | None
    metrics: dict[str, float]
    """The best epoch's validation metrics when finished, else the last epoch's."""
    train_seconds: float
    """Sum of the epochs' training time (validation excluded)."""
    workers: int | None
    started: float
    updated: float


def run_folder(home: Path, run_id: str) -> Path:
    """The folder of `run_id`; ModelNotFound for a malformed or unknown id (never another path)."""
    if not RUN_ID.match(run_id) or ".." in run_id:
        raise ModelNotFound(f"no run {run_id!r}: run ids are letters, digits, '.', '_', '-'")
    path = home / "runs" / run_id
    if not (path / "spec.yaml").is_file() and not (path / "placement.json").is_file():
        raise ModelNotFound(f"no run {run_id!r} in {home / 'runs'}")
    return path


def _scalars(row: dict[str, Any]) -> dict[str, float]:
    return {
        k: float(v)
        for k, v in row.items()
        if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(float(v))
    }


def history(path: Path) -> list[dict[str, float]]:
    """Each epoch's scalar metrics (the per-rank memory details left out)."""
    return [_scalars(r) for r in read_jsonl(path / "metrics.jsonl") if isinstance(r, dict)]


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def row(path: Path) -> RunRow:
    spec = read_yaml(path / "spec.yaml")
    summary = read_json(path / "summary.json")
    placement = read_json(path / "placement.json")
    rows = history(path)
    files = [path / f for f in ("spec.yaml", "placement.json", "metrics.jsonl", "summary.json")]
    updated = max([_mtime(f) for f in (*files, path / "checkpoints" / "last.pt")] or [0.0])
    if summary:
        status = "pruned" if summary.get("stopped_early") else "finished"
    else:
        window = max([ACTIVE_S, *(3 * r.get("seconds", 0.0) for r in rows)])
        status = "running" if time.time() - updated < window else "stopped"
    train = as_dict(spec.get("train"))
    checkpoint = as_dict(train.get("checkpoint"))
    best = as_dict(summary.get("best"))
    metrics = _scalars(best) if best else {k: v for k, v in (rows[-1] if rows else {}).items() if "val_" in k}
    workers = summary.get("workers", placement.get("workers"))
    return RunRow(
        run_id=path.name,
        name=str(spec.get("name") or summary.get("name") or "?"),
        task=str(spec.get("task") or summary.get("task") or "classification"),
        status=status,
        epochs=len(rows),
        epochs_total=train.get("epochs") if isinstance(train.get("epochs"), int) else None,
        monitor=checkpoint.get("monitor") if isinstance(checkpoint.get("monitor"), str) else None,
        metrics=metrics,
        train_seconds=round(sum(r.get("seconds", 0.0) for r in rows), 3),
        workers=workers if isinstance(workers, int) else None,
        started=min((_mtime(f) for f in files if _mtime(f)), default=0.0),
        updated=updated,
    )


def list_runs(home: Path) -> list[RunRow]:
    """Every run, newest first."""
    folder = home / "runs"
    found = []
    for path in folder.iterdir() if folder.is_dir() else []:
        if path.is_dir() and RUN_ID.match(path.name) and (path / "spec.yaml").is_file():
            found.append(row(path))
    return sorted(found, key=lambda r: (r.started, r.run_id), reverse=True)


def detail(home: Path, run_id: str) -> dict[str, Any]:
    """What a run page draws, as JSON: the row, every epoch, the summary's results and pictures."""
    path = run_folder(home, run_id)
    summary = read_json(path / "summary.json")
    test = as_dict(summary.get("test"))
    confusion = test.get("confusion")
    classes = summary.get("classes")
    return {
        "run": asdict(row(path)),
        "history": history(path),
        "best_epoch": summary.get("best_epoch"),
        "test": _scalars(test),
        "confusion": confusion if isinstance(confusion, list) else None,
        "classes": [str(c) for c in classes] if isinstance(classes, list) else None,
        "registered": summary.get("registered") if isinstance(summary.get("registered"), str) else None,
        "pictures": [p for p in PICTURES if p != "curves.png" and (path / p).is_file()],
        "samples": [s for s in read_jsonl(path / "samples.jsonl") if isinstance(s, dict)][-6:],
    }


def spec_text(home: Path, run_id: str) -> str:
    """The resolved spec.yaml, with any password in a URL masked."""
    path = run_folder(home, run_id) / "spec.yaml"
    return redact(path.read_text(errors="replace")) if path.is_file() else ""


def logs(home: Path, run_id: str) -> list[tuple[str, str]]:
    """(name, last lines) of the run's worker and agent logs, and of its tuning trial's log."""
    path = run_folder(home, run_id)
    found = sorted(p for p in (path / "logs").rglob("*.log") if p.is_file())[:20]
    shown = [(str(p.relative_to(path)), tail(p)) for p in found]
    trial = _TRIAL_RUN.match(run_id)
    if trial:
        log = home / "studies" / trial["study"] / "trials" / f"{trial['trial']}.log"
        if log.is_file():
            shown.append((f"trial {int(trial['trial'])} of study {trial['study']}", tail(log)))
    return shown


def trial_of(run_id: str) -> tuple[str, int] | None:
    """(study, trial number) of a run a tuning trial made, from its id."""
    found = _TRIAL_RUN.match(run_id)
    return (found["study"], int(found["trial"])) if found else None


def picture(home: Path, run_id: str, name: str) -> Path:
    path = run_folder(home, run_id) / name
    if name not in PICTURES or not path.is_file():
        raise ModelNotFound(f"run {run_id} has no picture {name!r}")
    return path


def as_json(rows: list[RunRow]) -> list[dict[str, Any]]:
    return [asdict(r) for r in rows]

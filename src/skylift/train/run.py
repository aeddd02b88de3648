"""The run folder: runs/<run-id>/ with the resolved spec, metrics, summary, curves and checkpoints."""

from __future__ import annotations

import json
import secrets
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from skylift import _atomic
from skylift.errors import SpecError
from skylift.home import RUN_ID


def new_run_id(name: str) -> str:
    """`<name>-<UTC yyyymmdd-hhmmss>-<4 hex>`: sortable by time, unique across processes."""
    return f"{name}-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}-{secrets.token_hex(2)}"


def check_run_id(run_id: str) -> str:
    if not RUN_ID.match(run_id) or ".." in run_id:
        raise SpecError(f"run id {run_id!r} is not allowed: use letters, digits, '.', '_', '-' (max 128)")
    return run_id


@dataclass(frozen=True)
class RunDir:
    """Paths of one run; only rank 0 writes here."""

    path: Path

    @classmethod
    def under(cls, home: Path, run_id: str) -> RunDir:
        return cls(home / "runs" / check_run_id(run_id))

    @property
    def run_id(self) -> str:
        return self.path.name

    @property
    def spec(self) -> Path:
        return self.path / "spec.yaml"

    @property
    def placement(self) -> Path:
        """placement.json: the worker count the run started with, and why (see train.launch)."""
        return self.path / "placement.json"

    @property
    def metrics(self) -> Path:
        return self.path / "metrics.jsonl"

    @property
    def summary(self) -> Path:
        return self.path / "summary.json"

    @property
    def curves(self) -> Path:
        return self.path / "curves.png"

    @property
    def checkpoints(self) -> Path:
        """checkpoints/: last.pt and best.pt, or sharded last/best folders under FSDP (train.sharded)."""
        return self.path / "checkpoints"

    @property
    def last(self) -> Path:
        return self.path / "checkpoints" / "last.pt"

    @property
    def best(self) -> Path:
        return self.path / "checkpoints" / "best.pt"

    def write_metrics(self, history: list[dict[str, Any]]) -> None:
        """Rewrite metrics.jsonl from the checkpointed history, so each epoch appears exactly once."""
        _atomic.write_text(self.metrics, "".join(json.dumps(row, sort_keys=True) + "\n" for row in history))

    def remove_partial_writes(self) -> None:
        """Delete temp files of writes a killed process left (`.NAME.*.tmp`, see `_atomic` and
        `train.sharded`).

        Called by the one process reopening the run, so no writer of this run is alive.
        """
        for folder in (self.path, self.checkpoints):
            for tmp in folder.glob(".*.tmp"):
                if tmp.is_dir():  # a sharded checkpoint's folder (train.sharded)
                    shutil.rmtree(tmp, ignore_errors=True)
                else:
                    tmp.unlink(missing_ok=True)

    def read_summary(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.summary.read_text())
        return data

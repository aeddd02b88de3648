"""Where skylift keeps its files: SKYLIFT_HOME, default ~/.skylift."""

from __future__ import annotations

import os
import re
from pathlib import Path

RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
"""A run's folder name under SKYLIFT_HOME/runs/: it can name no other path."""


def skylift_home(explicit: str | Path | None = None) -> Path:
    """The home folder: `explicit`, else $SKYLIFT_HOME, else ~/.skylift (read when called)."""
    raw = explicit if explicit is not None else os.environ.get("SKYLIFT_HOME") or Path.home() / ".skylift"
    return Path(raw).expanduser().resolve()

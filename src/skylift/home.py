"""Where skylift keeps its files: SKYLIFT_HOME, default ~/.skylift."""

from __future__ import annotations

import os
from pathlib import Path


def skylift_home(explicit: str | Path | None = None) -> Path:
    """The home folder: `explicit`, else $SKYLIFT_HOME, else ~/.skylift (read when called)."""
    raw = explicit if explicit is not None else os.environ.get("SKYLIFT_HOME") or Path.home() / ".skylift"
    return Path(raw).expanduser().resolve()

"""Which `skylift serve` processes run on a home: one JSON record each under SKYLIFT_HOME/endpoints/.

A server writes `endpoints/<pid>.json` (atomically) once it listens and removes it when it stops
cleanly. A server that was killed leaves its record behind: readers check that the process is
still alive (and, where /proc exists, that it is the same process, not a reused pid) and skip,
then delete, a stale record. Records hold no secret: the address, the models, whether keys and
TLS are on.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from skylift import _atomic

FOLDER = "endpoints"


@dataclass(frozen=True)
class Endpoint:
    """One running `skylift serve`."""

    pid: int
    """The supervisor's process id (also the record's file name)."""
    url: str
    """Where to connect, e.g. http://127.0.0.1:8000 (a wildcard bind is reached on loopback)."""
    models: dict[str, dict[str, Any]]
    """Served name -> {"ref": as given, "version": resolved at start}."""
    replicas: int
    auth: bool
    """Whether the server asks for API keys."""
    tls: bool
    started: float = field(default_factory=time.time)
    """Start time, seconds since the epoch."""
    start_ticks: int | None = None
    """The process' start time in clock ticks since boot (/proc), to tell a reused pid apart."""


def _start_ticks(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        # Field 22; the command name (field 2) may hold spaces and parentheses, so split after it.
        return int(stat.rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def _connect_host(host: str) -> str:
    if host in ("", "0.0.0.0"):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host


def record(
    home: Path,
    host: str,
    port: int,
    *,
    models: dict[str, dict[str, Any]],
    replicas: int,
    auth: bool,
    tls: bool,
) -> Path | None:
    """Write this process' record; returns its path, or None when the home cannot be written to
    (the server runs all the same: only `skylift console` would not see it)."""
    pid = os.getpid()
    url = f"{'https' if tls else 'http'}://{_connect_host(host)}:{port}"
    found = Endpoint(pid, url, models, replicas, auth, tls, start_ticks=_start_ticks(pid))
    path = home / FOLDER / f"{pid}.json"
    try:
        _atomic.write_json(path, asdict(found))
    except OSError:
        return None
    return path


def remove(path: Path | None) -> None:
    """Delete a record written by `record` (at a clean stop)."""
    if path is not None:
        with contextlib.suppress(OSError):
            path.unlink()


def _alive(e: Endpoint) -> bool:
    try:
        os.kill(e.pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # another user's live process
    return e.start_ticks is None or _start_ticks(e.pid) in (None, e.start_ticks)


def _parse(path: Path) -> Endpoint | None:
    try:
        raw = json.loads(path.read_text())
        found = Endpoint(**raw)
        ok = (
            isinstance(found.pid, int)
            and found.pid > 0
            and isinstance(found.url, str)
            and isinstance(found.models, dict)
            and path.stem == str(found.pid)
        )
    except (OSError, ValueError, TypeError):
        return None
    return found if ok else None


def running(home: Path) -> list[Endpoint]:
    """The live servers of `home`, oldest first; stale records are skipped and deleted."""
    folder = home / FOLDER
    found = []
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        e = _parse(path)
        if e is None:
            continue  # not ours to delete: a file we cannot read
        if _alive(e):
            found.append(e)
        else:
            with contextlib.suppress(OSError):
                path.unlink()
    return sorted(found, key=lambda e: e.started)

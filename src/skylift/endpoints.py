"""Which `skylift serve` processes run on a home: one JSON record each under SKYLIFT_HOME/endpoints/.

A server writes `endpoints/<hostname>-<pid namespace>-<pid>.json` (atomically) once it listens
and removes it when it stops cleanly; a killed server leaves its record behind. A home may be shared
by several hosts (an NFS or ReadWriteMany volume mounted by pods, containers, the nodes of a
multi-host job), each with its own process table, so a record names where it was written and a
reader judges it by what it can see:

- a record of this host (same hostname, boot and pid namespace) by its process: alive, and, where
  /proc exists, the same process, not a reused pid; else it is deleted at once;
- a record of another host by its mtime, which the server refreshes every HEARTBEAT_S: listed while
  younger than FRESH_S, skipped when older, deleted only past FORGET_S, far beyond any clock skew
  between hosts, so a reader never deletes a live server's record.

Records of older versions (`<pid>.json`, no host) are read as this host's. Records hold no secret:
the addresses, the models, whether keys and TLS are on.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from skylift import _atomic, network
from skylift.errors import SpecError

FOLDER = "endpoints"
HEARTBEAT_S = 10.0  # how often a server refreshes its record's mtime
FRESH_S = 45.0  # a record of another host is listed while refreshed this recently
FORGET_S = 600.0  # ... and deleted only once untouched this long
_OUTWARD = "192.0.2.1:9"  # TEST-NET-1 (RFC 5737): no host has it, so its route is the default one
_WILDCARDS = ("", "0.0.0.0", "::")


@dataclass(frozen=True)
class Endpoint:
    """One running `skylift serve`."""

    pid: int
    """The supervisor's process id, in its host's pid namespace."""
    url: str
    """Where to connect from its own host, e.g. http://127.0.0.1:8000 (a wildcard bind on loopback)."""
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
    host: str | None = None
    """The hostname it runs on (one per pod or container); None in a record of an older version."""
    boot_id: str | None = None
    """Its kernel's boot id: the same hostname after a reboot is not the same process table."""
    pid_ns: int | None = None
    """Its pid namespace (inode): containers sharing a hostname may still number processes apart."""
    host_url: str | None = None
    """Where to connect from other hosts: a wildcard bind's address on the default route, a named
    address as bound; None when bound to loopback (or no outward address was found)."""

    @property
    def id(self) -> str:
        """The record's file name without `.json`, unique on a shared home: hostname, pid namespace
        (the containers of one pod share a hostname, each may be pid 1) and pid."""
        if self.host is None:
            return str(self.pid)
        return "-".join(str(part) for part in (_safe(self.host), self.pid_ns, self.pid) if part is not None)


_FIELDS = frozenset(f.name for f in fields(Endpoint))


def _safe(hostname: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "_", hostname)[:64] or "_"


def _here() -> tuple[str, str | None, int | None]:
    """(hostname, boot id, pid namespace) of this process: the processes its pids can judge."""
    try:
        boot: str | None = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        boot = None
    try:
        ns: int | None = os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        ns = None
    return socket.gethostname(), boot, ns


def _runs_on(e: Endpoint, here: tuple[str, str | None, int | None]) -> bool:
    return e.host is None or (e.host, e.boot_id, e.pid_ns) == here


def is_local(e: Endpoint) -> bool:
    """Whether `e` runs on this host (its pid and its loopback URL mean the same here)."""
    return _runs_on(e, _here())


def url_from_here(e: Endpoint) -> str | None:
    """Where this host connects to `e`: its loopback URL if it runs here, else its outward one."""
    return e.url if is_local(e) else e.host_url


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


def _outward_host(host: str) -> str | None:
    """The address other hosts reach a server bound to `host` at (see Endpoint.host_url)."""
    if host not in _WILDCARDS:
        return None if network.is_loopback(host) else _connect_host(host)
    try:
        return network.node_address(_OUTWARD, None).address
    except (SpecError, OSError):  # no default route: any address but loopback
        return next((a for a in network.interface_addresses().values() if not a.startswith("127.")), None)


def record(
    home: Path,
    host: str,
    port: int,
    *,
    models: dict[str, dict[str, Any]],
    replicas: int,
    auth: bool,
    tls: bool,
    started: float | None = None,
) -> Path | None:
    """Write this process' record (`started`: seconds since the epoch, default now); returns its
    path, or None when the home cannot be written to (the server runs all the same: only `skylift
    console` would not see it)."""
    pid = os.getpid()
    scheme = "https" if tls else "http"
    outward = _outward_host(host)
    hostname, boot_id, pid_ns = _here()
    found = Endpoint(
        pid, f"{scheme}://{_connect_host(host)}:{port}", models, replicas, auth, tls,
        started=time.time() if started is None else started, start_ticks=_start_ticks(pid),
        host=hostname, boot_id=boot_id, pid_ns=pid_ns,
        host_url=f"{scheme}://{outward}:{port}" if outward else None,
    )  # fmt: skip
    path = home / FOLDER / f"{found.id}.json"
    try:
        _atomic.write_json(path, asdict(found))
    except OSError:
        return None
    return path


def heartbeat(path: Path | None) -> bool:
    """Refresh a record's mtime (every HEARTBEAT_S), which readers on other hosts go by. False when
    the record is gone (a reader elsewhere took this server for dead after FORGET_S without a
    heartbeat: it was paused, or the shared home unreachable): write it again then. Other errors
    are ignored: a home gone read-only must not stop the server."""
    if path is not None:
        try:
            os.utime(path)
        except FileNotFoundError:
            return False
        except OSError:
            pass
    return True


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
        # Fields of a newer version are left out: mixed versions may share a home.
        found = Endpoint(**{k: v for k, v in raw.items() if k in _FIELDS})
        ok = (
            isinstance(found.pid, int)
            and found.pid > 0
            and isinstance(found.url, str)
            and isinstance(found.models, dict)
            and isinstance(found.host, str | None)
            and isinstance(found.host_url, str | None)
            and path.stem == found.id
        )
    except (OSError, ValueError, TypeError, AttributeError):
        return None
    return found if ok else None


def running(home: Path) -> list[Endpoint]:
    """The live servers of `home`, oldest first; stale records are skipped, and deleted when dead
    for sure (see the module's docstring)."""
    folder = home / FOLDER
    found = []
    here, now = _here(), time.time()
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        e = _parse(path)
        if e is None:
            continue  # not ours to delete: a file we cannot read
        if _runs_on(e, here):
            alive = _alive(e)
            dead = not alive
        else:
            try:
                age = now - path.stat().st_mtime
            except OSError:
                continue  # removed meanwhile
            alive, dead = age < FRESH_S, age > FORGET_S
        if alive:
            found.append(e)
        elif dead:
            with contextlib.suppress(OSError):
                path.unlink()
    return sorted(found, key=lambda e: e.started)

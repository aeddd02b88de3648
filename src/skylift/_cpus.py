"""How many cores this process may use: its CPU affinity, capped by a cgroup CPU limit.

A container or Kubernetes pod with `resources.limits.cpu: 2` on a 64-core node sees 64 cores in
its affinity mask but is throttled to 2 cores' worth of time: starting 64 torch threads there
makes every step slower. Every automatic choice of workers, replicas and threads counts cores here.
"""

from __future__ import annotations

import math
import os
from pathlib import Path, PurePosixPath

CGROUP = Path("/sys/fs/cgroup")


def usable_cores() -> int:
    """The cores in this process's affinity mask, at most its cgroup's CPU quota (rounded up)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    quota = cgroup_cpu_limit()
    return max(1, min(cores, math.ceil(quota))) if quota else max(1, cores)


def cgroup_cpu_limit(root: Path = CGROUP, membership: str | None = None) -> float | None:
    """The tightest CPU limit in cores on this process's cgroup or any parent (v2 `cpu.max`, v1
    `cpu.cfs_quota_us`), or None when there is none. `membership` is /proc/self/cgroup's text."""
    if membership is None:
        try:
            membership = Path("/proc/self/cgroup").read_text()
        except OSError:
            return None
    limits: list[float] = []
    for line in membership.splitlines():
        _, controllers, path = [*line.split(":", 2), "", ""][:3]
        if controllers == "":  # cgroup v2
            files: list[tuple[Path, Path | None]] = [(root / p / "cpu.max", None) for p in _and_parents(path)]
        elif "cpu" in controllers.split(","):
            mount = root / controllers if (root / controllers).is_dir() else root / "cpu"
            files = [
                (mount / p / "cpu.cfs_quota_us", mount / p / "cpu.cfs_period_us") for p in _and_parents(path)
            ]
        else:
            continue
        limits += [limit for quota, period in files if (limit := _limit(quota, period)) is not None]
    return min(limits, default=None)


def _and_parents(path: str) -> list[str]:
    """'/a/b' -> ['a/b', 'a', ''] (relative to the mount; a container sees its own cgroup as '/')."""
    pure = PurePosixPath("/" + path.strip("/"))
    return [str(p.relative_to("/")) if p != PurePosixPath("/") else "" for p in (pure, *pure.parents)]


def _limit(quota_file: Path, period_file: Path | None) -> float | None:
    try:
        words = quota_file.read_text().split()
        quota, period = words[0], words[1] if period_file is None else period_file.read_text().strip()
        if quota in ("max", "-1") or int(quota) <= 0 or int(period) <= 0:
            return None
        return int(quota) / int(period)
    except (OSError, ValueError, IndexError):
        return None

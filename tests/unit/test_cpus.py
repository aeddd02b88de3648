"""Cores come from the affinity mask, capped by a cgroup CPU limit (a container's `--cpus`, a pod's
`limits.cpu`): fake cgroup trees for the parsing, and one real cgroup with a 1-core quota."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from skylift._cpus import cgroup_cpu_limit, usable_cores


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_v2_takes_the_tightest_limit_of_the_cgroup_and_its_parents(tmp_path: Path) -> None:
    _write(tmp_path / "kubepods" / "cpu.max", "400000 100000\n")
    _write(tmp_path / "kubepods" / "pod1" / "cpu.max", "150000 100000\n")
    _write(tmp_path / "kubepods" / "pod1" / "c1" / "cpu.max", "max 100000\n")
    assert cgroup_cpu_limit(tmp_path, "0::/kubepods/pod1/c1\n") == 1.5


def test_v1_reads_the_cfs_quota_of_the_cpu_hierarchy(tmp_path: Path) -> None:
    _write(tmp_path / "cpu,cpuacct" / "docker" / "cpu.cfs_quota_us", "50000\n")
    _write(tmp_path / "cpu,cpuacct" / "docker" / "cpu.cfs_period_us", "100000\n")
    assert cgroup_cpu_limit(tmp_path, "12:memory:/docker\n4:cpu,cpuacct:/docker\n") == 0.5


@pytest.mark.parametrize(
    ("files", "membership"),
    [
        ({"cpu.max": "max 100000\n"}, "0::/\n"),  # unlimited
        ({"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, "3:cpu:/\n"),
        ({"cpu.max": "garbage\n"}, "0::/\n"),  # unreadable: no limit rather than a crash
        ({"cpu.max": "100000 0\n"}, "0::/\n"),
        ({}, "0::/\n"),  # no cpu controller files at all
        ({}, "not a cgroup line"),
    ],
)
def test_no_limit_when_none_is_set_or_readable(
    tmp_path: Path, files: dict[str, str], membership: str
) -> None:
    for name, text in files.items():
        _write(tmp_path / name, text)
    assert cgroup_cpu_limit(tmp_path, membership) is None


def _cgroup_with_one_core_quota() -> tuple[Path, Path]:
    """A real child cgroup limited to 1 core's time (v1 cpu hierarchy or v2): (folder, procs file)."""
    name = f"skylift-test-{uuid.uuid4().hex[:8]}"
    v1 = Path("/sys/fs/cgroup/cpu")
    if (v1 / "cpu.cfs_quota_us").exists():
        folder = v1 / name
        folder.mkdir()
        (folder / "cpu.cfs_quota_us").write_text("100000")
        (folder / "cpu.cfs_period_us").write_text("100000")
        return folder, folder / "cgroup.procs"
    v2 = Path("/sys/fs/cgroup")
    folder = v2 / name
    folder.mkdir()
    (folder / "cpu.max").write_text("100000 100000")
    return folder, folder / "cgroup.procs"


def test_a_process_in_a_real_one_core_cgroup_counts_one_core() -> None:
    assert len(os.sched_getaffinity(0)) >= 2, "this test needs a machine with at least 2 cores"
    folder, procs = _cgroup_with_one_core_quota()
    try:
        child = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "import sys; sys.stdin.readline(); import skylift._cpus as c; print(c.usable_cores())",
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        procs.write_text(str(child.pid))  # moved in before it counts
        out, _ = child.communicate("go\n", timeout=60)
        assert out.strip() == "1"
        assert usable_cores() == len(os.sched_getaffinity(0))  # this process is not limited
    finally:
        folder.rmdir()

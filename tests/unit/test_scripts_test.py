"""`scripts/test` (the README's test command) stops with one clear line when a server it needs is missing."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "test"


def _bare_path(tmp_path: Path, tools: list[str]) -> str:
    """A PATH holding only `tools`: no apt-get, no redis-server, no initdb."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in tools:
        found = shutil.which(tool)
        assert found, tool
        (bin_dir / tool).symlink_to(found)
    return str(bin_dir)


def test_without_redis_and_apt_it_fails_instead_of_promising_skipped_tests(tmp_path: Path) -> None:
    env = {**os.environ, "PATH": _bare_path(tmp_path, ["bash", "dirname", "id", "ls"])}
    proc = subprocess.run(["bash", str(SCRIPT)], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert "skipped" not in proc.stderr
    assert proc.stderr.startswith("scripts/test: the Redis cache tests need redis-server")
    assert "install redis-server and run again" in proc.stderr

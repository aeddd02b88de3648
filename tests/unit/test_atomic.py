"""Atomic writes: a writer killed at any moment leaves the old file or the new one, never half of one."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from skylift import _atomic
from skylift.train import checkpoint

WRITER = """
import sys, torch
from pathlib import Path
from skylift.train import checkpoint
path = Path(sys.argv[1])
for i in range(1, 10**6):
    checkpoint.save(path, {"model": {"w": torch.full((4_000_000,), float(i))}, "meta": {"i": i}})
    print(i, flush=True)
"""


def test_a_checkpoint_writer_killed_mid_write_leaves_a_whole_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "last.pt"
    rng = random.Random(0)
    seen = set()
    for _ in range(6):
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, text=True)
        assert proc.stdout is not None
        for _ in range(rng.randint(1, 3)):  # 1-3 saves done (so the kills land after different saves)
            proc.stdout.readline()
        time.sleep(rng.uniform(0.0, 0.1))  # a 16 MB save takes ~0.1 s: land anywhere in the next
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
        state = checkpoint.load(path)  # whole and readable, never a torn file
        w = state["model"]["w"]
        assert bool((w == state["meta"]["i"]).all())
        seen.add(state["meta"]["i"])
    assert len(seen) > 1  # kills did land after different saves
    leftovers = [p.name for p in tmp_path.iterdir() if p.name != "last.pt"]
    assert all(name.startswith(".last.pt.") and name.endswith(".tmp") for name in leftovers)


def test_a_failed_write_keeps_the_old_file_and_removes_the_temp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "summary.json"
    _atomic.write_json(path, {"v": 1})

    def disk_full(*args: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(_atomic.os, "fsync", disk_full)
    with pytest.raises(OSError, match="No space left"):
        _atomic.write_json(path, {"v": 2})
    assert path.read_text() == '{\n  "v": 1\n}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]

"""Two real processes registering the same name at once get distinct versions and complete artifacts."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from skylift.registry import Registry
from tests.conftest import ROOT
from tests.unit.registry.conftest import make_tiny

WORKER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from skylift.registry import Registry
    from tests.unit.registry.conftest import make_tiny

    home, tag, go, n = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3]), int(sys.argv[4])
    tiny = make_tiny(seed=int(tag))
    registry = Registry(home)
    (go.parent / f"ready-{tag}").touch()
    while not go.exists():  # start both writers at the same moment
        time.sleep(0.005)
    for i in range(n):
        v = registry.register("race", tiny.state, tiny.meta, {"writer": int(tag), "i": i})
        print(v.version, flush=True)
    """
)


@pytest.mark.slow
def test_concurrent_registration_by_two_processes(tmp_path: Path) -> None:
    home, go, per_writer = tmp_path / "home", tmp_path / "go", 5
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, str(home), str(tag), str(go), str(per_writer)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            cwd=ROOT,
        )
        for tag in (1, 2)
    ]
    deadline = time.monotonic() + 60
    while not all((tmp_path / f"ready-{tag}").exists() for tag in (1, 2)):
        assert time.monotonic() < deadline and all(p.poll() is None for p in procs), "workers did not start"
        time.sleep(0.01)
    go.touch()
    outputs = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err for _, err in outputs]
    claimed = [[int(line) for line in out.split()] for out, _ in outputs]
    every = sorted(claimed[0] + claimed[1])
    assert every == list(range(1, 2 * per_writer + 1))  # distinct, no gaps, no reuse

    registry = Registry(home)
    assert registry.list()[0].versions == tuple(every)
    for tag, versions in zip((1, 2), claimed, strict=True):
        expected = make_tiny(seed=tag)
        for version in versions:
            assert registry.verify(f"race:{version}") == []
            loaded = registry.load(f"race:{version}")
            assert loaded.info["metrics"]["writer"] == tag
            for name, tensor in expected.state.items():
                # allclose: batch-norm statistics were summed with another thread count there
                assert torch.allclose(loaded.module.state_dict()[name], tensor, rtol=1e-5, atol=1e-6)
    leftovers = [p.name for p in (home / "registry" / "race").iterdir() if p.name.startswith(".tmp")]
    assert leftovers == []

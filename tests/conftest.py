"""Shared fixtures: an isolated SKYLIFT_HOME per test and the example spec."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "mnist_mlp.yaml"


# Any JSON value, containers included: what a fuzz test puts where a request field belongs.
JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=10,
)


def skylift_process(home: Path, *args: str) -> subprocess.Popen[str]:
    """`python -m skylift ARGS` over `home` in its own session (a test's kill never reaches pytest)."""
    env = {**os.environ, "SKYLIFT_HOME": str(home), "COLUMNS": "120"}
    return subprocess.Popen(
        [sys.executable, "-m", "skylift", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def finish(proc: subprocess.Popen[str], timeout: float) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of a process started with start_new_session=True; on a timeout
    its whole group is killed first, so no workers outlive the test."""
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    return proc.returncode, out, err


def free_port() -> int:
    """A loopback port that was free a moment ago (closed again: nothing listens there)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh SKYLIFT_HOME, also exported so subprocesses use it."""
    h = tmp_path / "home"
    monkeypatch.setenv("SKYLIFT_HOME", str(h))
    return h

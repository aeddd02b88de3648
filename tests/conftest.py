"""Shared fixtures: an isolated SKYLIFT_HOME per test and the example spec."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "mnist_mlp.yaml"


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

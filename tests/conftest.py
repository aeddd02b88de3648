"""Shared fixtures: an isolated SKYLIFT_HOME per test and the example spec."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "mnist_mlp.yaml"


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

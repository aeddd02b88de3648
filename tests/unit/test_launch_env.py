"""What the launcher hands its spawned workers through the environment."""

from __future__ import annotations

import os

import pytest

from skylift.train.launch import _FSDP_ENV, _worker_env


def test_fsdp_workers_get_a_fixed_mmap_threshold_unless_the_user_set_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("MALLOC_MMAP_THRESHOLD_", raising=False)
    with _worker_env(_FSDP_ENV):
        assert os.environ["MALLOC_MMAP_THRESHOLD_"] == "131072"  # what the spawned workers inherit
    assert "MALLOC_MMAP_THRESHOLD_" not in os.environ  # the launching process is left as it was
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "1048576")
    with _worker_env(_FSDP_ENV):
        assert os.environ["MALLOC_MMAP_THRESHOLD_"] == "1048576"
    assert os.environ["MALLOC_MMAP_THRESHOLD_"] == "1048576"

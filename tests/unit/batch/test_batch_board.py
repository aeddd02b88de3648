"""The Board contract, run against every implementation: a dict and a real c10d TCPStore."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest

from skylift.batch._board import Board, LocalBoard, StoreBoard


@pytest.fixture(params=["local", "tcpstore"])
def board(request: pytest.FixtureRequest) -> Iterator[Board]:
    if request.param == "local":
        yield LocalBoard()
        return
    from torch.distributed import TCPStore

    store = TCPStore("127.0.0.1", 0, 1, is_master=True, wait_for_workers=False)
    yield StoreBoard(store, rank=0, world=1, timeout=timedelta(seconds=5))


def test_set_get_delete(board: Board) -> None:
    board.set("part/1", b"\x00\x01bytes")
    assert board.get("part/1") == b"\x00\x01bytes"
    board.set("part/1", b"new")
    assert board.get("part/1") == b"new"
    board.delete("part/1")
    board.delete("never-set")  # deleting a missing key is fine


def test_add_counts_from_zero(board: Board) -> None:
    assert board.add("claim/0", 0) == 0
    assert [board.add("claim/0", 1) for _ in range(3)] == [1, 2, 3]
    assert board.add("claim/0", 0) == 3
    assert board.add("other", 5) == 5

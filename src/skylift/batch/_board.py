"""Where the ranks of a prediction job meet: a key-value board (the elastic agent's store, or a dict).

Workers claim chunks with atomic counters and post results for the writer; nothing waits in
lockstep, so a rank slowed by a noisy neighbour only takes fewer chunks.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from datetime import timedelta


class Board(ABC):
    """A key-value board shared by every rank of a job.

    Contract: `set` publishes bytes under a key; `get` returns them, waiting until the key is set
    (a timeout raises); `add` atomically adds to an integer key (missing = 0) and returns the new
    value; `delete` drops a key. Safe to use from several processes; one caller per process.
    """

    rank: int = 0
    world: int = 1

    @abstractmethod
    def set(self, key: str, value: bytes) -> None: ...

    @abstractmethod
    def get(self, key: str) -> bytes: ...

    @abstractmethod
    def add(self, key: str, amount: int) -> int: ...

    @abstractmethod
    def delete(self, key: str) -> None: ...


class LocalBoard(Board):
    """One process: a dict. A `get` of a missing key is a bug (nobody else could set it)."""

    def __init__(self) -> None:
        self._values: dict[str, bytes] = {}

    def set(self, key: str, value: bytes) -> None:
        self._values[key] = bytes(value)

    def get(self, key: str) -> bytes:
        return self._values[key]

    def add(self, key: str, amount: int) -> int:
        value = int(self._values.get(key, b"0")) + amount
        self._values[key] = str(value).encode()
        return value

    def delete(self, key: str) -> None:
        self._values.pop(key, None)


class StoreBoard(Board):
    """A torch.distributed Store (the elastic agent's TCPStore, under a per-attempt prefix)."""

    def __init__(self, store: Any, rank: int, world: int, timeout: timedelta) -> None:
        self._store = store
        self._store.set_timeout(timeout)
        self.rank, self.world = rank, world

    def set(self, key: str, value: bytes) -> None:
        self._store.set(key, value)

    def get(self, key: str) -> bytes:
        return bytes(self._store.get(key))

    def add(self, key: str, amount: int) -> int:
        return int(self._store.add(key, amount))

    def delete(self, key: str) -> None:
        self._store.delete_key(key)

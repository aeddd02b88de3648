"""DistInfo: who this process is in a (possibly) distributed job, created once and passed down."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass


@dataclass(frozen=True)
class DistInfo:
    """Rank, world size, local rank and device of this process; single process by default."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: str = "cpu"

    @property
    def is_main(self) -> bool:
        """Rank 0 owns every side effect: logs, run folder, checkpoints, registry."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


@contextlib.contextmanager
def agent_store(shared: bool) -> Iterator[None]:
    """Whether the workers an elastic agent starts now share the agent's rendezvous store.

    Set for one launch and restored after it, so that one launcher's choice never leaks into a
    later launch in the same process (or into the environment of its children).
    """
    name = "TORCH_DISABLE_SHARE_RDZV_TCP_STORE"
    before = os.environ.get(name)
    os.environ[name] = "0" if shared else "1"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = before

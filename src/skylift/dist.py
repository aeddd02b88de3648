"""DistInfo: who this process is in a (possibly) distributed job, created once and passed down."""

from __future__ import annotations

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

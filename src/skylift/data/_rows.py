"""Training rows a loop takes batches from: tensors in memory, or blocks read from a file on demand.

Shape legend: N rows, b rows of one batch, S... per-row input shape, K per-row target shape.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import numpy as np
    import torch


class Rows(Protocol):
    """N (input, target) rows. `take` is the hot path: no per-row Python for in-memory rows."""

    def __len__(self) -> int: ...

    def take(self, idx_b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Rows `idx_b` (int64, on the rows' device) as (x_bS, y_bK) on that device."""
        ...

    def part(self, rows: slice) -> Rows:
        """The contiguous rows `rows` (a rank's share of validation)."""
        ...

    def to(self, device: str) -> Rows:
        """These rows with batches delivered on `device`."""
        ...


class TensorRows:
    """Rows held as two tensors; `take` is one index_select each (the in-memory fast path)."""

    def __init__(self, x_NS: torch.Tensor, y_NK: torch.Tensor) -> None:
        if len(x_NS) != len(y_NK):
            raise ValueError(f"{len(x_NS)} input rows but {len(y_NK)} target rows")
        self.x_NS, self.y_NK = x_NS, y_NK

    def __len__(self) -> int:
        return len(self.x_NS)

    def take(self, idx_b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.x_NS.index_select(0, idx_b), self.y_NK.index_select(0, idx_b)

    def part(self, rows: slice) -> TensorRows:
        return TensorRows(self.x_NS[rows], self.y_NK[rows])

    def to(self, device: str) -> TensorRows:
        return TensorRows(self.x_NS.to(device), self.y_NK.to(device))


class BlockSource(Protocol):
    """Something that reads rows by index from disk (a token file's blocks): numpy in, numpy out."""

    def __len__(self) -> int: ...

    def take(self, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...


class StreamRows:
    """Rows read from a `BlockSource` batch by batch: memory stays bounded whatever its size."""

    def __init__(self, source: BlockSource, offset: int = 0, count: int | None = None, device: str = "cpu"):
        self.source, self.offset, self.device = source, offset, device
        self.count = len(source) - offset if count is None else count

    def __len__(self) -> int:
        return self.count

    def take(self, idx_b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        import torch

        x, y = self.source.take(idx_b.cpu().numpy() + self.offset)
        return torch.from_numpy(x).to(self.device), torch.from_numpy(y).to(self.device)

    def part(self, rows: slice) -> StreamRows:
        start, stop, _ = rows.indices(self.count)
        return StreamRows(self.source, self.offset + start, max(stop - start, 0), self.device)

    def to(self, device: str) -> StreamRows:
        return StreamRows(self.source, self.offset, self.count, device)


def batches(rows: Rows, batch: int) -> Any:
    """(x_bS, y_bK) of consecutive batches of `rows` in order (evaluation)."""
    import torch

    for lo in range(0, len(rows), batch):
        yield rows.take(torch.arange(lo, min(lo + batch, len(rows)), device=_device(rows)))


def _device(rows: Rows) -> str:
    if isinstance(rows, TensorRows):
        return str(rows.x_NS.device)
    return str(getattr(rows, "device", "cpu"))

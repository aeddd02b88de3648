"""Per-rank memory report of a training job: peak memory and what the training state holds.

Peak is the process's peak resident set on CPU (it includes Python, torch and the data), the peak
allocated memory on a GPU. The state split counts what this rank itself stores: under FSDP a
parameter, its gradient and its optimizer state count their local shard only.
"""

from __future__ import annotations

import resource
import sys
from typing import TYPE_CHECKING, Any

from skylift.dist import DistInfo
from skylift.train.fsdp import MB, local_bytes

if TYPE_CHECKING:
    import torch

FIELDS = ("peak_mb", "params_mb", "grads_mb", "optimizer_mb")


def peak_bytes(device: str) -> int:
    """This process's peak memory so far: resident set on CPU, allocated on a GPU."""
    if device != "cpu":
        import torch

        return int(torch.cuda.max_memory_allocated(device))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # Linux reports KiB, macOS bytes


def state_bytes(net: torch.nn.Module, optimizer: torch.optim.Optimizer) -> tuple[int, int, int]:
    """(parameters, gradients, optimizer state) bytes this rank holds."""
    import torch

    params = list(net.parameters())
    grads = [p.grad for p in params if p.grad is not None]
    moments = [
        v for s in optimizer.state.values() for v in s.values() if isinstance(v, torch.Tensor) and v.dim() > 0
    ]
    return local_bytes(params), local_bytes(grads), local_bytes(moments)


def report(net: torch.nn.Module, optimizer: torch.optim.Optimizer, dist: DistInfo) -> list[dict[str, Any]]:
    """Every rank's {rank, peak_mb, params_mb, grads_mb, optimizer_mb}, gathered (a collective)."""
    import torch

    mine = torch.tensor([float(peak_bytes(dist.device)), *map(float, state_bytes(net, optimizer))])
    every = [mine]
    if dist.distributed:
        import torch.distributed

        mine = mine.to(dist.device)
        every = [torch.empty_like(mine) for _ in range(dist.world_size)]
        torch.distributed.all_gather(every, mine)
    return [
        {"rank": r, **{k: round(float(v) / MB, 3) for k, v in zip(FIELDS, t.cpu().tolist(), strict=True)}}
        for r, t in enumerate(every)
    ]

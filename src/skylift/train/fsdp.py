"""Sharded data parallelism (FSDP2) and activation checkpointing, applied per transformer block;
`strategy: auto`'s choice between DDP and FSDP from the memory DDP would need per worker.

Kept apart from the model definition (as torchtitan's parallelize functions are): the model
knows its blocks (`transformer_blocks`), this module decides what to do with them.
"""

from __future__ import annotations

import functools
import os
from typing import TYPE_CHECKING, Any

from skylift.dist import DistInfo

if TYPE_CHECKING:
    import torch

    from skylift.spec import JobSpec

MB = 2**20
# Per parameter, besides its own 4 bytes: Adam/AdamW keep two moments, SGD with momentum one.
OPTIMIZER_COPIES = {"adam": 2, "adamw": 2}


def checkpoint_blocks(net: torch.nn.Module) -> int:
    """Recompute each transformer block's activations in backward (non-reentrant checkpointing).

    The block's `forward` is replaced on the instance, so its parameter names and the state dict
    stay as they were. Returns the number of blocks checkpointed (0: the model has none).
    """
    from torch.utils.checkpoint import checkpoint

    from skylift.models import transformer_blocks

    blocks = transformer_blocks(net)
    for block in blocks:
        # preserve_rng_state (the default): dropout draws the same masks when recomputed
        block.forward = functools.partial(checkpoint, block.forward, use_reentrant=False)
    return len(blocks)


def shard(net: torch.nn.Module, dist: DistInfo, precision: str) -> int:
    """FSDP2: `fully_shard` each transformer block, then the root (embeddings, head, the rest).

    A block's parameters are gathered just before its forward and backward and freed after, so a
    worker holds 1/N of the model, its gradients and optimizer state plus one block at a time.
    16-bit precision gathers parameters in that dtype and reduces gradients in float32.
    Returns the number of blocks sharded on their own (0: the root is the only unit).
    """
    import torch
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    from skylift.models import transformer_blocks
    from skylift.train.precision import low_dtype

    mesh = init_device_mesh("cuda" if dist.device != "cpu" else "cpu", (dist.world_size,))
    low = low_dtype(precision)
    policy = MixedPrecisionPolicy(param_dtype=low, reduce_dtype=torch.float32 if low else None)
    blocks = transformer_blocks(net)
    for block in blocks:
        fully_shard(block, mesh=mesh, mp_policy=policy)
    fully_shard(net, mesh=mesh, mp_policy=policy)
    return len(blocks)


def machine_memory_bytes(device: str) -> int:
    """Physical memory of this machine, or of the GPU `device` names."""
    if device != "cpu":
        import torch

        return int(torch.cuda.get_device_properties(device).total_memory)
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def activation_bytes(net: torch.nn.Module, x: torch.Tensor, rows: int) -> float:
    """Bytes autograd keeps for backward at `rows` rows, measured on 2 rows of `x` and scaled.

    Every tensor saved for backward is counted once (by storage); weights are left out (they are
    counted as parameters). The model's weights, .grad and the RNG are left as they were.
    """
    import torch

    weights = {p.untyped_storage().data_ptr() for p in net.parameters()}
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in weights:
            seen[storage.data_ptr()] = storage.nbytes()
        return t

    was_training = net.training
    net.eval()
    try:
        params = [p for p in net.parameters() if p.requires_grad]
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            loss = net(x[:2]).float().sum()
        torch.autograd.grad(loss, params)
    finally:
        net.train(was_training)
    return sum(seen.values()) * rows / 2


def ddp_bytes(params: int, optimizer: str, momentum: float, activations: float) -> dict[str, float]:
    """What one DDP worker holds in float32: parameters, gradients, optimizer state, activations."""
    copies = OPTIMIZER_COPIES.get(optimizer, 1 if momentum > 0 else 0)
    return {
        "parameters": 4.0 * params,
        "gradients": 4.0 * params,
        "optimizer": 4.0 * params * copies,
        "activations": activations,
    }


def choose_strategy(need: dict[str, float], workers: int, budget: float, blocks: int) -> tuple[str, str]:
    """`strategy: auto`: FSDP when a DDP worker's estimated memory exceeds `budget` (bytes).

    One worker has nothing to shard with: DDP (a single process, no wrapping) whatever the size.
    """
    total = sum(need.values())
    parts = ", ".join(f"{k} {v / MB:,.0f}" for k, v in need.items())
    estimate = f"DDP needs ~{total / MB:,.0f} MB per worker ({parts} MB), budget {budget / MB:,.0f} MB"
    if workers < 2:
        return "ddp", f"strategy auto: ddp (one worker, nothing to shard; {estimate})"
    if total <= budget:
        return "ddp", f"strategy auto: ddp ({estimate})"
    state = need["parameters"] + need["gradients"] + need["optimizer"]
    sharded = state / workers + need["activations"]
    where = f"{blocks} transformer blocks" if blocks else "the root only: the model has no repeatable block"
    return "fsdp", (
        f"strategy auto: fsdp ({estimate}; sharded over {workers} workers ~{sharded / MB:,.0f} MB, "
        f"FSDP units: {where})"
    )


def decide(
    spec: JobSpec, net: torch.nn.Module, x: torch.Tensor, workers: int, device: str
) -> tuple[str, str]:
    """The strategy `spec` trains with on `workers` workers, and the line saying why.

    auto measures (see activation_bytes) and counts, never times: the same answer on any load.
    An explicit fsdp on a model without a repeatable block is obeyed and says so.
    """
    from skylift.models import count_parameters, transformer_blocks

    d, t = spec.distributed, spec.train
    blocks = len(transformer_blocks(net))
    if d.strategy == "fsdp":
        if blocks:
            return "fsdp", ""
        return "fsdp", (
            "strategy fsdp: the model has no repeatable block (decoder_block), so FSDP wraps the root "
            "only: each worker stores 1/N of the state but gathers the whole model for every step"
        )
    if d.strategy == "ddp":
        return "ddp", ""
    rows = max(1, t.batch_size // workers)
    need = ddp_bytes(
        count_parameters(net), t.optimizer.name, t.optimizer.momentum, activation_bytes(net, x, rows)
    )
    budget = d.memory_budget_gb * 2**30 if d.memory_budget_gb else machine_memory_bytes(device) / workers
    return choose_strategy(need, workers, budget, blocks)


def local_bytes(tensors: Any) -> int:
    """Bytes of `tensors` held by this rank: a sharded (DTensor) one counts its local shard only."""
    total = 0
    for t in tensors:
        local = t.to_local() if hasattr(t, "to_local") else t
        total += local.numel() * local.element_size()
    return total

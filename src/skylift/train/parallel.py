"""Data parallelism inside one training job: process group, DDP wrapping, sharding, exact reductions.

Shape legend: B global batch rows, b this rank's rows, C classes.
"""

from __future__ import annotations

import io
import os
import threading
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from skylift.dist import DistInfo

if TYPE_CHECKING:
    import torch

    from skylift.spec import DistributedSpec

PG_TIMEOUT_S = 120
INIT_WATCHDOG_S = 60.0  # joining the group takes ~1 s; a minute means it is stuck
INIT_HUNG_EXIT = 75  # exit code of a worker whose group join hung (EX_TEMPFAIL)
FINISH_WAIT_S = 3600  # how long the other ranks wait for rank 0's end of the run


def init_from_env(backend: str) -> DistInfo:
    """Join the process group the elastic agent described in RANK/WORLD_SIZE/LOCAL_RANK/MASTER_*.

    The only place that reads those variables: everything below gets the returned DistInfo.
    """
    import torch
    import torch.distributed as dist

    rank, world, local = (int(os.environ[k]) for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"))
    cuda = torch.cuda.is_available()
    if backend == "auto":
        backend = "nccl" if cuda else "gloo"
    device = f"cuda:{local}" if cuda and backend == "nccl" else "cpu"
    if device != "cpu":
        torch.cuda.set_device(local)
    # 2 minutes, not torch's 10 or 30: a rank that cannot connect (seen once here: a gloo pair
    # connect that never completed on a loaded machine) then fails soon enough for the elastic
    # agent to restart the workers, and no collective in the loop legitimately waits that long.
    # Seen here under load: gloo's full-mesh connect waiting forever (both ranks listening, neither
    # connected), deaf to the timeout above. A watchdog turns that into a worker failure, which the
    # elastic agent answers by restarting every worker into a fresh rendezvous.
    watchdog = threading.Timer(INIT_WATCHDOG_S, os._exit, args=(INIT_HUNG_EXIT,))
    watchdog.daemon = True
    watchdog.start()
    try:
        dist.init_process_group(backend, timeout=timedelta(seconds=PG_TIMEOUT_S))
    finally:
        watchdog.cancel()
    return DistInfo(rank=rank, world_size=world, local_rank=local, device=device)


def check_same_spec(digest_hex: str, info: DistInfo) -> None:
    """SpecError on every rank unless all ranks train the spec with this SHA-256: a node started
    with another spec file or other --set overrides would otherwise train its own variant in
    lock-step with the others, silently. Raw digest bytes travel, not pickled objects."""
    if not info.distributed:
        return
    import torch
    import torch.distributed as dist

    from skylift.errors import SpecError

    mine = torch.frombuffer(bytearray(bytes.fromhex(digest_hex)), dtype=torch.uint8)
    every = [torch.empty_like(mine) for _ in range(info.world_size)]
    dist.all_gather(every, mine)
    differ = [r for r, d in enumerate(every) if not torch.equal(d, every[0])]
    if differ:
        raise SpecError(
            f"rank(s) {', '.join(map(str, differ))} run a different spec from rank 0's (spec hash "
            f"{every[differ[0]].numpy().tobytes().hex()[:12]} vs {every[0].numpy().tobytes().hex()[:12]}): "
            "start every node with the same spec file and the same --set overrides"
        )


def shutdown(finished: bool) -> None:
    """Leave the process group; after a finished fit, all ranks leave together.

    Without the barrier the other ranks tore their gloo pairs down while rank 0 was still writing
    the summary, and about one run in ~7 one of them died in C++ teardown ("terminate called
    without an active exception", SIGABRT), which the elastic agent answered with a restart.
    After a failure there is no barrier: the other ranks may be gone.
    """
    import torch.distributed as dist

    if not dist.is_initialized():
        return
    if finished:
        # Rank 0 may still be scoring the test set and registering the model: longer than the
        # group's 120 s timeout for a big model, so this wait has its own (gloo; NCCL waits as set).
        if dist.get_backend() == "gloo":
            dist.monitored_barrier(timeout=timedelta(seconds=FINISH_WAIT_S))
        else:
            dist.barrier()
    dist.destroy_process_group()


def bucket_cap_mb(setting: float | str, model: torch.nn.Module) -> float:
    """MiB per DDP gradient bucket: `distributed.bucket_mb`, or for "auto" one bucket holding every
    gradient (a single all_reduce per step: each costs >= 1.6 ms on gloo whatever its size)."""
    if setting != "auto":
        return float(setting)
    param_mb = sum(p.numel() * p.element_size() for p in model.parameters()) / 2**20
    return max(25.0, param_mb + 1)


def sync_note(d: DistributedSpec, model: torch.nn.Module) -> dict[str, Any]:
    """How DDP will synchronise gradients, for placement.json: compression and bucket size, and why."""
    if d.bucket_mb != "auto":
        return {"gradient_compression": d.gradient_compression, "bucket_mb": d.bucket_mb, "reason": ""}
    cap = round(bucket_cap_mb("auto", model), 2)
    why = f"bucket_mb auto: {cap} (one bucket: one all_reduce per step)"
    return {"gradient_compression": d.gradient_compression, "bucket_mb": cap, "reason": why}


def wrap(model: torch.nn.Module, info: DistInfo, d: DistributedSpec) -> torch.nn.Module:
    """DDP tuned for small models, where each collective costs as much as a whole step on CPU.

    forward_sync_buffers=False: batch-norm running statistics stay per rank during an epoch and are
    averaged once before validation (`average_buffers`); the default would add a second collective
    per step (~1.7 ms on gloo). Buckets: `bucket_cap_mb`. `d.gradient_compression` fp16/bf16
    registers a communication hook that all-reduces a half-precision copy of each bucket.
    """
    import torch
    from torch.nn.parallel import DistributedDataParallel

    if d.sync_batchnorm:
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)  # type: ignore[no-untyped-call]
    ddp = DistributedDataParallel(
        model,
        device_ids=[info.local_rank] if info.device != "cpu" else None,
        forward_sync_buffers=False,
        gradient_as_bucket_view=True,
        bucket_cap_mb=bucket_cap_mb(d.bucket_mb, model),
    )
    if d.gradient_compression != "none":
        ddp.register_comm_hook(None, _compress_hook(d.gradient_compression, info.device))
    return ddp


def _compress_hook(kind: str, device: str) -> Any:
    """The DDP communication hook of `distributed.gradient_compression`: each bucket cast to fp16 or
    bf16, divided by the world size, all-reduced in that dtype and copied back into fp32."""
    from torch.distributed.algorithms.ddp_comm_hooks import default_hooks

    if kind == "fp16":
        return default_hooks.fp16_compress_hook
    # torch's bf16 hook refuses to register on a build without CUDA + NCCL, yet gloo sums bf16.
    return default_hooks.bf16_compress_hook if device != "cpu" else _bf16_gloo_hook()


def _bf16_gloo_hook() -> Any:
    """torch's bf16_compress_hook for gloo: the same cast, divide, all_reduce and copy back, under a
    name its CUDA-only check does not refuse."""
    import torch
    import torch.distributed as dist

    # Unannotated on purpose: DDP refuses annotations other than its own types, and under
    # `from __future__ import annotations` every annotation is a string.
    def bf16_gloo_hook(group, bucket):  # type: ignore[no-untyped-def]
        grads = bucket.buffer()
        half = grads.to(torch.bfloat16).div_(dist.get_world_size(group))
        future = dist.all_reduce(half, group=group, async_op=True).get_future()
        return future.then(lambda done: grads.copy_(done.value()[0]))  # in place: no 2nd fp32 copy

    return bf16_gloo_hook


def average_buffers(model: torch.nn.Module, info: DistInfo) -> None:
    """Average the floating-point buffers (batch-norm running statistics) over ranks, in place.

    Each rank updates its own statistics in training (no per-step buffer sync, see `wrap`); before
    validation they are made equal, so every rank scores the same model, the one rank 0 saves.
    """
    import torch
    import torch.distributed as dist

    bufs = [b for b in model.buffers() if b.is_floating_point()]
    if not info.distributed or not bufs:
        return
    flat = torch.cat([b.reshape(-1) for b in bufs])
    dist.all_reduce(flat)
    flat /= info.world_size
    for b, avg in zip(bufs, torch.split(flat, [b.numel() for b in bufs]), strict=True):
        b.copy_(avg.view_as(b))


def my_slice(rows: int, info: DistInfo) -> slice:
    """This rank's contiguous part of `rows` items: disjoint, covering all, sizes differ by <= 1."""
    return slice(info.rank * rows // info.world_size, (info.rank + 1) * rows // info.world_size)


def all_reduce_sum(t: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Sum `t` over ranks (in place); a no-op in a single process."""
    if info.distributed:
        import torch.distributed as dist

        dist.all_reduce(t)
    return t


def broadcast_state(state: dict[str, Any] | None, info: DistInfo) -> dict[str, Any] | None:
    """Rank 0's checkpoint dict (or None) on every rank, sent as torch.save bytes.

    Bytes and `weights_only=True` rather than broadcast_object_list, which would unpickle.
    """
    if not info.distributed:
        return state
    import torch
    import torch.distributed as dist

    buf = io.BytesIO()
    if info.is_main and state is not None:
        torch.save(state, buf)
    size = torch.tensor([buf.tell()], dtype=torch.int64, device=info.device)
    dist.broadcast(size, src=0)
    if int(size) == 0:
        return None
    data = torch.frombuffer(bytearray(buf.getvalue()), dtype=torch.uint8) if info.is_main else None
    if data is None:
        data = torch.empty(int(size), dtype=torch.uint8)
    data = data.to(info.device)
    dist.broadcast(data, src=0)
    if info.is_main:
        return state
    received: dict[str, Any] = torch.load(io.BytesIO(data.cpu().numpy().tobytes()), weights_only=True)
    return received

"""Mixed precision: which precision a job may train in on this machine, autocast and the fp16 scaler.

Weights, gradients and optimizer state stay float32; only the forward's matmuls run in 16 bits
(torch.autocast), and under FSDP the gathered parameters too, with gradients reduced in float32.
"""

from __future__ import annotations

import contextlib
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from skylift.errors import SpecError

if TYPE_CHECKING:
    import torch


# CPU flags (/proc/cpuinfo) of fast 16-bit matmul kernels. Without them torch emulates: bf16
# autocast trained the tiny LM ~33x slower than fp32 on this machine's CPU (no AVX512-BF16/AMX).
FAST_CPU_FLAGS = {"bf16": ("avx512_bf16", "amx_bf16"), "fp16": ("avx512_fp16", "amx_fp16")}


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> frozenset[str]:
    """The CPU's feature flags (empty where /proc/cpuinfo is not readable)."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.partition(":")[2].split())
    return frozenset()


def check_precision(precision: str, force: bool, device: str, flags: frozenset[str]) -> None:
    """Raise SpecError (one line) when `precision` would be slow on `device` and is not forced.

    On a GPU every precision is allowed (bf16 is what transformers train in there); on a CPU
    16 bits need the kernels FAST_CPU_FLAGS names, else `train.force_precision: true`.
    """
    if precision == "fp32" or device != "cpu" or force:
        return
    wanted = FAST_CPU_FLAGS[precision]
    if not flags & set(wanted):
        raise SpecError(
            f"train.precision {precision}: this CPU has no fast {precision} kernels (no {' or '.join(wanted)}"
            f" flag), so it would train many times slower than fp32; use fp32, a GPU, "
            f"or set train.force_precision: true"
        )


def low_dtype(precision: str) -> torch.dtype | None:
    """The 16-bit compute dtype of `precision`, None for fp32."""
    import torch

    return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)


def autocast(precision: str, device: str) -> AbstractContextManager[Any]:
    """The context the forward and loss run in: autocast to the 16-bit dtype, or nothing for fp32."""
    import torch

    dtype = low_dtype(precision)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type="cuda" if device != "cpu" else "cpu", dtype=dtype)


def grad_scaler(precision: str, device: str, sharded: bool) -> Any:
    """A gradient scaler for fp16 (its small range underflows gradients), else None.

    Sharded gradients need the FSDP scaler: it all-reduces "found inf" so every rank skips the same steps.
    """
    if precision != "fp16":
        return None
    kind = "cuda" if device != "cpu" else "cpu"
    if sharded:
        from torch.distributed.fsdp.sharded_grad_scaler import ShardedGradScaler

        return ShardedGradScaler(kind)
    import torch

    return torch.amp.GradScaler(kind)

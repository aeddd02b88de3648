"""Mixed precision decisions: refused on a CPU without fast 16-bit kernels unless forced, always
allowed on a GPU (decision functions only: no GPU here), and what autocast and the scaler become."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from skylift.errors import SpecError
from skylift.spec import parse_spec
from skylift.train.precision import autocast, check_precision, cpu_flags, grad_scaler, low_dtype

SLOW_CPU = frozenset({"sse4_2", "avx2", "avx512f"})


def test_cpu_flags_are_read_from_cpuinfo(tmp_path: Path) -> None:
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu avx2 avx512_bf16 amx_tile\nbugs\t: none\n")
    assert cpu_flags(info) == {"fpu", "avx2", "avx512_bf16", "amx_tile"}
    assert cpu_flags(tmp_path / "missing") == frozenset()


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_16_bits_on_a_cpu_without_fast_kernels_is_refused_in_one_line(precision: str) -> None:
    with pytest.raises(SpecError) as err:
        check_precision(precision, force=False, device="cpu", flags=SLOW_CPU)
    message = str(err.value)
    assert message.startswith(f"train.precision {precision}: this CPU has no fast {precision} kernels")
    assert "train.force_precision: true" in message and "\n" not in message


@pytest.mark.parametrize(
    ("precision", "force", "device", "flags"),
    [
        ("fp32", False, "cpu", SLOW_CPU),
        ("bf16", True, "cpu", SLOW_CPU),  # forced
        ("bf16", False, "cpu", SLOW_CPU | {"avx512_bf16"}),
        ("bf16", False, "cpu", SLOW_CPU | {"amx_bf16"}),
        ("fp16", False, "cpu", SLOW_CPU | {"avx512_fp16"}),
        ("bf16", False, "cuda:0", frozenset()),  # a GPU: bf16 is the transformer default there
        ("fp16", False, "cuda:1", frozenset()),
    ],
)
def test_allowed_precisions(precision: str, force: bool, device: str, flags: frozenset[str]) -> None:
    check_precision(precision, force, device, flags)


def test_bf16_flags_do_not_make_fp16_fast() -> None:
    with pytest.raises(SpecError):
        check_precision("fp16", force=False, device="cpu", flags=SLOW_CPU | {"avx512_bf16", "amx_bf16"})


def test_autocast_runs_matmuls_in_the_low_dtype_and_fp32_is_untouched() -> None:
    a = torch.ones(4, 4)
    with autocast("bf16", "cpu"):
        assert (a @ a).dtype == torch.bfloat16
    with autocast("fp32", "cpu"):
        assert (a @ a).dtype == torch.float32
    assert low_dtype("fp16") == torch.float16 and low_dtype("fp32") is None


def test_only_fp16_gets_a_gradient_scaler() -> None:
    assert (
        grad_scaler("fp32", "cpu", sharded=False) is None and grad_scaler("bf16", "cpu", sharded=True) is None
    )
    assert isinstance(grad_scaler("fp16", "cpu", sharded=False), torch.amp.GradScaler)
    from torch.distributed.fsdp.sharded_grad_scaler import ShardedGradScaler

    assert isinstance(grad_scaler("fp16", "cpu", sharded=True), ShardedGradScaler)


def test_precision_and_strategy_fields_are_validated() -> None:
    base = {
        "name": "m",
        "data": {"train": "builtin:digits28"},
        "model": {"layers": [{"dense": {"units": 2}}]},
    }
    spec = parse_spec(base)
    assert spec.train.precision == "fp32" and spec.distributed.strategy == "ddp"
    assert not spec.train.activation_checkpointing and not spec.train.force_precision
    with pytest.raises(SpecError, match=r"train.precision: input should be 'fp32', 'bf16' or 'fp16'"):
        parse_spec(base, ["train.precision=half"])
    with pytest.raises(SpecError, match=r"distributed.strategy: input should be 'ddp', 'fsdp' or 'auto'"):
        parse_spec(base, ["distributed.strategy=zero3"])
    with pytest.raises(SpecError, match=r"distributed.memory_budget_gb: input should be greater than 0"):
        parse_spec(base, ["distributed.memory_budget_gb=0"])

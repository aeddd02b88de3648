"""`workers: auto` decides from a step's counted FLOPs, never from timing, so load cannot change it."""

from __future__ import annotations

from pathlib import Path

import torch

from skylift.models import build_model
from skylift.spec import load_spec
from skylift.train.launch import Placement, choose_workers, place, record_placement, step_flops
from skylift.train.run import RunDir
from tests.conftest import EXAMPLE

CNN = (
    "model.layers=[{conv2d: {filters: 32, kernel_size: 3, activation: relu}},"
    " {conv2d: {filters: 64, kernel_size: 3, activation: relu}}, {maxpool: {size: 2}},"
    " {flatten: {}}, {dense: {units: 128, activation: relu}}, {dense: {units: 10}}]"
)


def _net(overrides: list[str], shape: tuple[int, ...]) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(load_spec(EXAMPLE, overrides).model, shape, 10)


def test_step_flops_counts_forward_and_backward_and_leaves_the_model_alone() -> None:
    net = _net([], (784,))
    before = {k: v.clone() for k, v in net.state_dict().items()}
    x = torch.rand(8, 784)
    rng = torch.get_rng_state()
    flops = step_flops(net, x, batch=64)
    # forward 2*rows*(784*256 + 256*128 + 128*10) multiply-adds; backward twice that (no input grad
    # for the first layer's input): exactly what torch's counter reports, the same on every call.
    assert flops == step_flops(net, x, batch=64)
    assert 60e6 < flops < 70e6
    assert net.training
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in before.items())  # batch-norm stats too
    assert all(p.grad is None for p in net.parameters())
    assert torch.equal(rng, torch.get_rng_state())  # dropout drew nothing


def test_the_mlp_stays_in_one_process_and_the_cnn_splits_over_two_cores() -> None:
    x = torch.rand(2, 784)
    mlp = step_flops(_net([], (784,)), x, batch=64)
    workers, reason = choose_workers(mlp, batch=64, cores=2, gpus=0)
    assert workers == 1
    assert reason.startswith("workers auto: 1 (a step is ~0.0645 GFLOP: split over 2 workers ~1.6 ms each")
    cnn_net = _net(["model.input_shape=[1, 28, 28]", CNN], (1, 28, 28))
    cnn = step_flops(cnn_net, torch.rand(2, 1, 28, 28), batch=64)
    workers, reason = choose_workers(cnn, batch=64, cores=2, gpus=0)
    assert workers == 2
    assert reason.startswith("workers auto: 2 (a step is ~4.58 GFLOP: ~115 ms per worker on one core")


def test_more_cores_take_more_workers_while_each_share_still_dwarfs_the_sync() -> None:
    assert choose_workers(4.58e9, batch=64, cores=16, gpus=0)[0] == 7  # 4.58e9/7/20e9 >= 32 ms
    assert choose_workers(4.58e9, batch=8, cores=16, gpus=0)[0] == 4  # 2 rows per worker at most
    assert choose_workers(1e12, batch=64, cores=1, gpus=0) == (1, "workers auto: 1 (1 core, batch 64)")


def test_with_gpus_auto_takes_one_worker_per_gpu_whatever_the_cpu_cores() -> None:
    assert choose_workers(6.4e7, batch=64, cores=2, gpus=4) == (
        4,
        "workers auto: 4 (one per GPU: 4 GPU(s), batch 64)",
    )
    assert choose_workers(6.4e7, batch=64, cores=64, gpus=1)[0] == 1
    assert choose_workers(6.4e7, batch=4, cores=2, gpus=8)[0] == 2  # 2 rows per worker at least


def test_an_existing_run_keeps_its_worker_count_and_a_change_is_said(tmp_path: Path) -> None:
    spec = load_spec(EXAMPLE, ["train.epochs=1"])
    run = RunDir(tmp_path / "r")
    record_placement(run, Placement(workers=2, reason="workers auto: 2 (...)"))
    kept = place(spec, None, None, 0, None, run=run)
    assert (kept.workers, kept.reason) == (2, "workers: 2, as run r was started")
    changed = place(spec, 1, None, 0, None, run=run)
    assert changed.workers == 1
    assert changed.reason == (
        "workers: 1, but run r was started with 2: batches now split differently, "
        "so the result will differ from an uninterrupted run"
    )
    assert place(spec, 2, None, 0, None, run=run).reason == ""  # the same count: nothing to say


def test_the_gradient_sync_line_says_the_settings_or_why_they_do_not_apply() -> None:
    from skylift.cli._train import _sync_line

    assert _sync_line(None) == ""
    explicit = {"gradient_compression": "bf16", "bucket_mb": 1.0, "reason": ""}
    assert _sync_line(explicit) == "gradient sync: compression bf16; bucket_mb 1"
    fsdp = {"gradient_compression": "none", "bucket_mb": None, "reason": "strategy auto chose fsdp, ..."}
    assert _sync_line(fsdp) == "strategy auto chose fsdp, ..."

"""Launching a training job: one plain process, or N data-parallel workers under PyTorch's elastic agent."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from skylift import _atomic, network
from skylift._cpus import usable_cores
from skylift.dist import agent_store
from skylift.errors import SkyliftError, SpecError
from skylift.home import skylift_home
from skylift.spec import DistributedSpec, JobSpec, spec_hash
from skylift.train.run import RunDir, check_run_id, new_run_id

if TYPE_CHECKING:
    from skylift.train.loop import TrainObserver, TrainResult

# 1.6 ms: the smallest gloo all_reduce measured on this 2-core machine, whatever its size.
SYNC_FLOOR_S = 1.6e-3
# 20 GFLOP/s: what one core sustained on the MNIST MLP's step here (13-50 GFLOP/s measured from the
# MLP to a CNN); used to turn a step's counted FLOPs into time, never timed per run.
CORE_FLOPS = 20e9
# 20x: DDP pays only when each worker's step compute dwarfs the gradient sync (sync <= 5%).
SYNC_MARGIN = 20


@dataclass(frozen=True)
class Placement:
    """Where a job runs: workers on this node, nodes, rendezvous, restarts."""

    workers: int
    nnodes: int = 1
    node_rank: int = 0
    rdzv_endpoint: str | None = None
    max_restarts: int = 3
    reason: str = ""
    strategy: str | None = None
    """ddp or fsdp as decided for this run; None: the spec's own (auto then decided by `fit`)."""
    strategy_reason: str = ""
    node_addr: str | None = None
    """The address or interface this node gives its peers (--node-addr); None: the route to the rendezvous."""
    rdzv_timeout_s: float = network.RENDEZVOUS_WAIT_S
    """How long a node waits for the rendezvous to answer and for every node to join it."""
    gradient_sync: dict[str, Any] | None = None
    """How DDP synchronises gradients (compression, bucket MiB, why), for placement.json; None: no DDP."""


def step_flops(net: Any, x: Any, batch: int) -> float:
    """FLOPs of one training step (forward + backward) at `batch` rows, counted by torch.

    Counted on 2 rows of `x` and scaled (every layer's cost is linear in rows), in eval mode and
    with autograd.grad, so the model's weights, buffers, .grad and the RNG are left as they were.
    The loss is the outputs' sum: its own cost is nothing next to the model's.
    """
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    was_training = net.training
    net.eval()
    try:
        params = [p for p in net.parameters() if p.requires_grad]
        with FlopCounterMode(display=False) as counter:
            loss = net(x[:2]).float().sum()
            torch.autograd.grad(loss, params)
    finally:
        net.train(was_training)
    return float(counter.get_total_flops()) * batch / 2


def choose_workers(flops: float, batch: int, cores: int, gpus: int) -> tuple[int, str]:
    """Workers for `workers: auto` from a step's counted FLOPs: the same answer on a busy or idle machine.

    With GPUs (and a backend that uses them): one worker per GPU. On CPU, N workers pay only when
    each one's share of the step (at CORE_FLOPS on its one core) is >= SYNC_MARGIN x the gradient
    sync floor; the largest such N up to the core count (and 2 rows per worker) is chosen.
    """
    gflop = f"{flops / 1e9:.3g} GFLOP"
    if gpus:
        n = max(1, min(gpus, batch // 2))
        return n, f"workers auto: {n} (one per GPU: {gpus} GPU(s), batch {batch})"
    need_ms = SYNC_MARGIN * SYNC_FLOOR_S * 1e3
    best = 1
    for n in range(2, min(cores, batch // 2) + 1):
        if flops / n / CORE_FLOPS >= SYNC_MARGIN * SYNC_FLOOR_S:
            best = n
    if best > 1:
        share_ms = flops / best / CORE_FLOPS * 1e3
        return best, (
            f"workers auto: {best} (a step is ~{gflop}: ~{share_ms:.0f} ms per worker on one core, "
            f">= {need_ms:.0f} ms, {SYNC_MARGIN}x the {SYNC_FLOOR_S * 1e3:.1f} ms gradient sync)"
        )
    if cores < 2:
        return 1, f"workers auto: 1 (1 core, batch {batch})"
    share_ms = flops / min(cores, max(batch // 2, 1)) / CORE_FLOPS * 1e3
    return 1, (
        f"workers auto: 1 (a step is ~{gflop}: split over {cores} workers ~{share_ms:.1f} ms each, "
        f"under {need_ms:.0f} ms, {SYNC_MARGIN}x the {SYNC_FLOOR_S * 1e3:.1f} ms gradient sync; "
        f"one process uses all {cores} cores)"
    )


def _recorded(run: RunDir, field: str) -> Any:
    """A field of the run's placement.json (how its first session was placed), or None."""
    try:
        return json.loads(run.placement.read_text())[field]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def recorded_workers(run: RunDir) -> int | None:
    """The worker count a run was started with (placement.json), or None for a new run."""
    workers = _recorded(run, "workers")
    return workers if isinstance(workers, int) and workers >= 1 else None


def recorded_strategy(run: RunDir) -> str | None:
    """ddp or fsdp as `strategy: auto` decided it when the run started, or None."""
    strategy = _recorded(run, "strategy")
    return strategy if strategy in ("ddp", "fsdp") else None


def place(
    spec: JobSpec,
    workers: int | None,
    nnodes: int | None,
    node_rank: int,
    rdzv: str | None,
    run: RunDir | None = None,
    home: Path | str | None = None,
) -> Placement:
    """Resolve the CLI/spec placement; raises SpecError when inconsistent.

    An existing `run` keeps the worker count it was started with unless `workers` is given (the
    reason then says the count changed: batches split differently, so results differ from an
    uninterrupted run). `workers: auto` counts a step's FLOPs instead of timing it.
    `strategy: auto` is decided once, from the memory a DDP worker would need, and an existing
    run keeps the strategy it started with (its checkpoints are in that strategy's format).
    """
    import torch

    from skylift.train import precision
    from skylift.train.fsdp import decide
    from skylift.train.loop import setup
    from skylift.train.saves import check_model

    d = spec.distributed
    nnodes = nnodes or d.nnodes
    rdzv = rdzv or d.rdzv_endpoint
    if nnodes > 1 and not rdzv:
        raise SpecError("multi-node training needs --rdzv-endpoint HOST:PORT (the same on every node)")
    if not 0 <= node_rank < nnodes:
        raise SpecError(f"--node-rank must be in [0, {nnodes - 1}], got {node_rank}")
    device = "cuda" if torch.cuda.is_available() and d.backend != "gloo" else "cpu"
    t = spec.train
    precision.check_precision(t.precision, t.force_precision, device, precision.cpu_flags())
    data, net = setup(spec, home)  # validates data and model before any process starts
    gpus = torch.cuda.device_count() if torch.cuda.is_available() and d.backend != "gloo" else 0
    before = recorded_workers(run) if run is not None else None
    chosen: int | str = workers or before or d.workers
    reason = ""
    if run is not None and before is not None and workers is None:
        reason = f"workers: {before}, as run {run.run_id} was started"
    elif run is not None and before is not None and workers != before:
        reason = (
            f"workers: {workers}, but run {run.run_id} was started with {before}: "
            "batches now split differently, so the result will differ from an uninterrupted run"
        )
    x, _ = data.train.take(torch.arange(min(2, len(data.train))))
    if chosen == "auto":
        flops = step_flops(net, x, spec.train.batch_size)
        chosen, reason = choose_workers(flops, spec.train.batch_size, usable_cores(), gpus)
    assert isinstance(chosen, int)
    world = chosen * nnodes
    strategy = recorded_strategy(run) if run is not None and d.strategy == "auto" else None
    why = f"strategy auto: {strategy}, as run {run.run_id} was started" if run and strategy else ""
    if strategy is None:
        strategy, why = decide(spec, net, x, world, device)
    if run is not None:
        check_model(run, net, strategy == "fsdp")  # a resume refused before anything is written
    if d.backend == "nccl" and not torch.cuda.is_available():
        raise SpecError("distributed.backend nccl needs GPUs and this machine has none: use gloo or auto")
    if world > 1 and d.backend != "gloo" and 0 < gpus < chosen:
        raise SpecError(
            f"{chosen} workers on this node but {gpus} GPU(s): NCCL needs one GPU per worker; "
            f"use --workers {gpus}, or distributed.backend: gloo to train on the CPU"
        )
    if world > 1 and d.sync_batchnorm and not gpus:
        raise SpecError(
            "distributed.sync_batchnorm needs CUDA (PyTorch's SyncBatchNorm does not run on CPU); "
            "on CPU each worker normalises with its own batch statistics: set it to false"
        )
    sync = _gradient_sync(d, net, world, strategy)
    if spec.train.batch_size < 2 * world:
        raise SpecError(
            f"train.batch_size {spec.train.batch_size} gives fewer than 2 rows per worker "
            f"({world} workers; batch norm needs 2): use batch_size >= {2 * world}"
        )
    return Placement(
        chosen, nnodes, node_rank, rdzv, d.max_restarts, reason, strategy, why, gradient_sync=sync
    )


def _gradient_sync(d: DistributedSpec, net: Any, world: int, strategy: str) -> dict[str, Any] | None:
    """The DDP gradient settings this run uses, for placement.json; None for one process.
    FSDP chosen by `strategy: auto` does not use them, and the record says so."""
    from skylift.train.parallel import sync_note

    if world == 1:
        return None
    if strategy == "fsdp":
        if (d.gradient_compression, d.bucket_mb) == ("none", "auto"):
            return None
        return {
            "gradient_compression": "none",
            "bucket_mb": None,
            "reason": "strategy auto chose fsdp, which reduces each block's gradients itself: "
            "distributed.gradient_compression and bucket_mb do not apply",
        }
    return sync_note(d, net)


def record_placement(run: RunDir, p: Placement) -> None:
    """Write runs/<id>/placement.json as each session starts: how many workers train it, and why
    (a resume without --workers reuses the count of the session before)."""
    run.path.mkdir(parents=True, exist_ok=True)
    record = {"workers": p.workers, "nnodes": p.nnodes, "reason": p.reason}
    if p.strategy is not None:
        record |= {"strategy": p.strategy, "strategy_reason": p.strategy_reason}
    if p.gradient_sync is not None:
        record["gradient_sync"] = p.gradient_sync
    _atomic.write_json(run.placement, record)


def launch(
    spec: JobSpec,
    placement: Placement,
    *,
    home: Path | str | None = None,
    run_id: str | None = None,
    observer: TrainObserver | None = None,
    progress: bool = False,
    key_file: Path | str | None = None,
    epoch_hook: tuple[str, str] | None = None,
) -> TrainResult | None:
    """Run the job; returns the result on the node that holds rank 0's run folder, else None.

    One worker on one node trains in this process. Otherwise the elastic agent starts the workers,
    restarts them all (up to `max_restarts`) when one dies, and they resume from last.pt. The
    registry's master key comes from `key_file`, else $SKYLIFT_MASTER_KEY (workers inherit it).
    `epoch_hook` = ("module:factory", arg): rank 0 builds `factory(arg)` and passes it to `fit` as
    `on_epoch` (named, not a callable, because it must cross into the worker processes).
    """
    from skylift.security import master_key_from_env
    from skylift.train.loop import check_reopen, fit

    home = skylift_home(home)
    key = master_key_from_env(key_file)  # fail on a bad key before training, not after
    if placement.workers == 1 and placement.nnodes == 1:
        run_id = check_run_id(run_id or new_run_id(spec.name))
        check_reopen(spec, RunDir.under(home, run_id))
        record_placement(RunDir.under(home, run_id), placement)
        on_epoch = load_epoch_hook(*epoch_hook) if epoch_hook else None
        return fit(
            spec,
            home=home,
            run_id=run_id,
            observer=observer,
            master_key=key,
            on_epoch=on_epoch,
            strategy=placement.strategy,
        )
    if run_id is None:
        # Every node must agree on the run id without talking first: derive it from what they share.
        shared = f"{placement.rdzv_endpoint}|{spec_hash(spec)}" if placement.nnodes > 1 else None
        digest = hashlib.sha256(shared.encode()).hexdigest()[:12] if shared else None
        run_id = f"{spec.name}-{digest}" if digest else new_run_id(spec.name)
    check_run_id(run_id)
    check_reopen(spec, RunDir.under(home, run_id))  # here, not in a worker the agent would restart
    record_placement(RunDir.under(home, run_id), placement)
    with tempfile.TemporaryDirectory(prefix="skylift-launch-") as tmp:
        spec_file = Path(tmp) / "spec.yaml"
        spec_file.write_text(spec.to_yaml())
        _agent(spec_file, run_id, home, placement, progress, key_file, epoch_hook)
    run = RunDir.under(home, run_id)
    if not run.summary.is_file():
        return None
    from skylift.train.loop import TrainResult

    history = [json.loads(line) for line in run.metrics.read_text().splitlines()]
    return TrainResult(run_id, run.path, run.read_summary(), history)


def load_epoch_hook(target: str, arg: str) -> Callable[[dict[str, Any]], bool]:
    """`module:factory` imported and called with `arg`: the per-epoch callback for `fit`."""
    import importlib

    module, _, name = target.partition(":")
    hook: Callable[[dict[str, Any]], bool] = getattr(importlib.import_module(module), name)(arg)
    return hook


def _agent(
    spec_file: Path,
    run_id: str,
    home: Path,
    p: Placement,
    progress: bool,
    key_file: Path | str | None,
    epoch_hook: tuple[str, str] | None = None,
) -> None:
    """Run the workers under the elastic agent; raises SkyliftError (one line) when they fail.

    The workers' stderr and the agent's log go to runs/<id>/logs/; the terminal gets one line per
    restart. A worker that meets bad input (a SkyliftError) writes it to a `fatal` file: the
    restarted workers exit at once on seeing it, and the error is raised here with its exit code.
    """
    from torch.distributed.elastic.multiprocessing import DefaultLogsSpecs
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.elastic.rendezvous.api import RendezvousTimeoutError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    multi = p.nnodes > 1
    logs = RunDir.under(home, run_id).path / "logs"
    local_addr = None
    if multi:
        assert p.rdzv_endpoint is not None  # place() requires it for several nodes
        local_addr = network.advertise(p.nnodes, p.node_rank, p.rdzv_endpoint, p.node_addr, p.rdzv_timeout_s)
    config = LaunchConfig(
        min_nodes=p.nnodes,
        max_nodes=p.nnodes,
        nproc_per_node=p.workers,
        run_id=run_id,
        rdzv_backend="c10d",
        rdzv_endpoint=p.rdzv_endpoint if multi and p.rdzv_endpoint else "127.0.0.1:0",
        # node 0 hosts the rendezvous store; the others connect to it
        rdzv_configs={"is_host": p.node_rank == 0, "join_timeout": p.rdzv_timeout_s} if multi else {},
        local_addr=local_addr,
        max_restarts=p.max_restarts,
        monitor_interval=0.2,
        start_method="spawn",
        logs_specs=DefaultLogsSpecs(log_dir=str(logs)),  # workers write their stderr.log there
    )
    fatal = spec_file.parent / "fatal"
    threads = max(1, usable_cores() // p.workers)  # split the cores so workers do not oversubscribe them
    args = ["-m", "skylift.train.worker", "--spec", str(spec_file), "--run-id", run_id]
    args += ["--home", str(home), "--threads", str(threads), "--fatal-file", str(fatal)]
    args += ["--progress"] if progress else []
    args += ["--key-file", str(Path(key_file).resolve())] if key_file else []
    args += ["--epoch-hook", *epoch_hook] if epoch_hook else []
    args += ["--strategy", p.strategy] if p.strategy else []
    try:
        # The agent's shared store outlives a restart, and gloo would read the dead workers'
        # addresses left in it; with sharing off, every attempt's rank 0 hosts a fresh store.
        with (
            agent_store(shared=False),
            _agent_log(logs / "agent.log", p.max_restarts, fatal),
            _worker_env(_FSDP_ENV if p.strategy == "fsdp" else {}),
        ):
            elastic_launch(config, sys.executable)(*args)
    except SignalException:  # SIGTERM/SIGINT: the agent has already stopped every worker
        raise KeyboardInterrupt from None
    except RendezvousTimeoutError:
        raise SkyliftError(
            f"not all {p.nnodes} nodes joined the rendezvous at {p.rdzv_endpoint} within "
            f"{p.rdzv_timeout_s:.0f} s: start every node with the same --nnodes and --rdzv-endpoint"
        ) from None
    except ChildFailedError as exc:
        if fatal.is_file():
            raise _fatal_error(fatal.read_text()) from None
        rank, failure = exc.get_first_failure()
        code = failure.exitcode
        how = f"was killed by signal {-code}" if code < 0 else f"exited with code {code}"
        last = RunDir.under(home, run_id).last
        kept = f"; last good checkpoint: {last}" if last.is_file() else ""
        raise SkyliftError(
            f"training failed: worker rank {rank} {how} after {p.max_restarts} restart(s){kept} "
            f"(worker logs: {logs})"
        ) from None


# FSDP gathers and frees each block's full parameters and gradients every step. Past glibc's first
# large free its mmap threshold rises (up to 32 MB), so later buffers come from the heap and are
# not returned: peak RSS then kept what FSDP had freed (an FSDP rank peaked as high as a DDP rank,
# benchmarks/RESULTS.md). A fixed threshold of 128 KiB returns every large buffer when freed.
_FSDP_ENV = {"MALLOC_MMAP_THRESHOLD_": "131072"}


@contextlib.contextmanager
def _worker_env(extra: dict[str, str]) -> Iterator[None]:
    """The spawned workers inherit `extra` (unless the user set those variables); restored after."""
    added = {k: v for k, v in extra.items() if k not in os.environ}
    os.environ.update(added)
    try:
        yield
    finally:
        for k in added:
            os.environ.pop(k, None)


@contextlib.contextmanager
def _agent_log(path: Path, max_restarts: int, fatal: Path) -> Iterator[None]:
    """Send torch's elastic-agent log records to `path`; print one line for each worker restart
    (none after a worker recorded bad input in `fatal`: those restarts end at once)."""
    import logging

    failures = 0

    class Restarts(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            # torch logs "failed (exitcode: %s) local_rank: ..." once per failed attempt
            nonlocal failures
            if not str(record.msg).startswith("failed (exitcode") or fatal.exists():
                return
            failures += 1
            if failures <= max_restarts:
                code = record.args[0] if isinstance(record.args, tuple) else 0
                code = code if isinstance(code, int) else 0
                how = f"was killed by signal {-code}" if code < 0 else f"exited with code {code}"
                print(
                    f"a worker {how}: restarting the workers from the last checkpoint "
                    f"(restart {failures} of {max_restarts})",
                    file=sys.stderr,
                )

    path.parent.mkdir(parents=True, exist_ok=True)
    to_file = logging.FileHandler(path)
    to_file.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logger = logging.getLogger("torch.distributed.elastic")
    handlers = [to_file, Restarts()]
    for h in handlers:
        logger.addHandler(h)
    propagate, logger.propagate = logger.propagate, False
    try:
        yield
    finally:
        for h in handlers:
            logger.removeHandler(h)
            h.close()
        logger.propagate = propagate


def _fatal_error(text: str) -> SkyliftError:
    """The SkyliftError a worker recorded as `ClassName message` in its fatal file."""
    from skylift import errors

    name, _, message = text.partition(" ")
    cls = getattr(errors, name, SkyliftError)
    if not (isinstance(cls, type) and issubclass(cls, SkyliftError)):
        cls = SkyliftError
    return cls(message.strip())

"""The training loop: batches of the task's rows, best/last checkpoints, exact resume, run-folder outputs.

The task (skylift.tasks) owns the data, the loss and the metrics; this step never asks which.
Shape legend: N rows, b this rank's batch rows, S... per-row input shape, K per-row target shape.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from skylift import _atomic
from skylift.dist import DistInfo
from skylift.errors import SpecError
from skylift.home import skylift_home
from skylift.spec import JobSpec, spec_hash
from skylift.tasks import TASKS, TaskData
from skylift.train import checkpoint, fsdp, memory, parallel, plots, precision, saves
from skylift.train.optim import lr_factor, make_optimizer
from skylift.train.run import RunDir, new_run_id

if TYPE_CHECKING:
    import torch

    from skylift.security import MasterKey


class TrainObserver(Protocol):
    """Receives progress; the CLI draws a progress bar and a table, a library user may log."""

    def start(
        self, run_id: str, first_epoch: int, epochs: int, samples_per_epoch: int, metrics: tuple[str, ...]
    ) -> None: ...
    def step(self, samples: int) -> None: ...
    def epoch(self, row: dict[str, Any]) -> None: ...
    def note(self, line: str) -> None: ...


@dataclass(frozen=True)
class TrainResult:
    run_id: str
    run_dir: Path
    summary: dict[str, Any]
    history: list[dict[str, Any]]


@dataclass(frozen=True)
class _Steps:
    """An epoch's optimizer steps: step g is `accumulate` global batches [start, stop) of shuffled rows.

    Computed on demand: held as lists, the 100k+ steps of an epoch over a large token file took
    ~200 bytes each. A final batch too small to give every worker 2 rows (batch norm needs 2)
    joins the one before.
    """

    rows: int
    batch: int
    world: int
    accumulate: int

    @property
    def batches(self) -> int:
        count = -(-self.rows // self.batch)
        if count > 1 and self.rows - (count - 1) * self.batch < 2 * self.world:
            count -= 1
        return count

    def __len__(self) -> int:
        return -(-self.batches // self.accumulate)

    def __getitem__(self, step: int) -> list[tuple[int, int]]:
        last, first = self.batches - 1, step * self.accumulate
        return [
            (b * self.batch, self.rows if b == last else (b + 1) * self.batch)
            for b in range(first, min(first + self.accumulate, last + 1))
        ]


def _step_seed(seed: int, epoch: int, step: int, rank: int) -> int:
    """A 63-bit seed for one rank's optimizer step, spread by SHA-256 so nearby inputs share no pattern."""
    digest = hashlib.sha256(f"{seed}/{epoch}/{step}/{rank}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def _reshard(net: torch.nn.Module, sharded: bool) -> None:
    """Free the whole parameters FSDP keeps gathered after a forward without backward (evaluation):
    it reshards the root only after a backward, and until then each rank would hold all of it."""
    if sharded:
        net.reshard()  # type: ignore[operator]


def _val_parts(val: Any, dist: DistInfo, shards: bool) -> list[tuple[Any, float]]:
    """(rows, weight) this rank scores in validation; the weighted sums add up over ranks exactly.

    DDP: each rank its slice. FSDP: every forward is a collective, so every rank must run the same
    batches: equal slices, then the few left-over rows on every rank, counted on rank 0 only.
    """
    if not shards:
        return [(val.part(parallel.my_slice(len(val), dist)).to(dist.device), 1.0)]
    k = len(val) // dist.world_size
    parts = [(val.part(slice(dist.rank * k, (dist.rank + 1) * k)).to(dist.device), 1.0)]
    if len(val) > k * dist.world_size:
        parts.append((val.part(slice(k * dist.world_size, len(val))).to(dist.device), float(dist.is_main)))
    return parts


def _extras(
    history: list[dict[str, Any]], best: float | None, best_epoch: int | None, scaler: Any
) -> dict[str, Any]:
    """What every last checkpoint holds besides weights and optimizer: history, best, fp16 scaler."""
    extras = {"history": history, "best": best, "best_epoch": best_epoch}
    return extras | ({"scaler": scaler.state_dict()} if scaler is not None else {})


def _seed_dropout(seed: int, dist: DistInfo) -> None:
    """Seed the generator dropout draws from on this rank's device. Not torch.manual_seed: that
    seeds every backend's generators and cost ~160 µs here, more than an MLP step's optimizer."""
    import torch

    if dist.device == "cpu":
        torch.default_generator.manual_seed(seed)
    else:
        torch.cuda.manual_seed(seed)  # the current device's generator (set in init_from_env)


def _rank_buffers(net: torch.nn.Module, dist: DistInfo) -> list[torch.Tensor] | None:
    """Every rank's floating-point buffers (batch-norm statistics, per rank inside an epoch), gathered."""
    import torch

    bufs = [b.reshape(-1) for b in net.buffers() if b.is_floating_point()]
    if not bufs:
        return None
    flat = torch.cat(bufs)
    if not dist.distributed:
        return [flat.cpu()]
    import torch.distributed

    every = [torch.empty_like(flat) for _ in range(dist.world_size)]
    torch.distributed.all_gather(every, flat)
    return [t.cpu() for t in every]


def _set_rank_buffers(net: torch.nn.Module, saved: list[torch.Tensor] | None, dist: DistInfo) -> None:
    """This rank's buffers as a mid-epoch checkpoint saved them (rank 0's after a worker-count change)."""
    if not saved:
        return
    flat = saved[dist.rank] if len(saved) == dist.world_size else saved[0]
    offset = 0
    for b in net.buffers():
        if b.is_floating_point():
            b.copy_(flat[offset : offset + b.numel()].view_as(b))
            offset += b.numel()


def _cuda_rng(dist: DistInfo) -> dict[str, Any]:
    """The GPU's random state (dropout on CUDA draws from it), for an exact resume there."""
    import torch

    return {"cuda": torch.cuda.get_rng_state(dist.device)} if dist.device != "cpu" else {}


def _improved(value: float, best: float | None, mode: str) -> bool:
    if best is None or math.isnan(best):
        return not math.isnan(value)
    return value < best if mode == "min" else value > best


def check_reopen(spec: JobSpec, run: RunDir) -> None:
    """Raise SpecError when `run` exists with another spec (reopening it would mix two jobs)."""
    if run.spec.exists():
        from skylift.spec import load_spec

        if spec_hash(load_spec(run.spec)) != spec_hash(spec):
            raise SpecError(
                f"run {run.run_id} already exists with a different spec: use a new --run-id, "
                f"or `skylift train --resume {run.run_id}` to continue it unchanged"
            )


def _prepare_run(
    spec: JobSpec, home: Path, run_id: str | None, shards: bool
) -> tuple[RunDir, dict[str, Any] | None]:
    """Create the run folder, or reopen it when it holds the same spec (resume from its last checkpoint)."""
    run = RunDir.under(home, run_id or new_run_id(spec.name))
    check_reopen(spec, run)
    if run.spec.exists():
        run.remove_partial_writes()
        return run, saves.load_last(run, shards)
    run.path.mkdir(parents=True, exist_ok=True)
    _atomic.write_text(run.spec, spec.to_yaml())
    return run, None


def setup(spec: JobSpec, home: Path | str | None = None) -> tuple[TaskData, torch.nn.Module]:
    """Load the task's data and build the seeded model; raises DataError/SpecError on any problem."""
    import torch

    task = TASKS[spec.task]
    data = task.load(spec, skylift_home(home) / "cache")
    torch.manual_seed(spec.train.seed)
    net = task.build(spec.model, data.meta, data.input_shape, data.n_outputs)
    return data, net


def fit(
    spec: JobSpec,
    *,
    home: Path | str | None = None,
    run_id: str | None = None,
    observer: TrainObserver | None = None,
    dist: DistInfo | None = None,
    master_key: MasterKey | None = None,
    on_epoch: Callable[[dict[str, Any]], bool] | None = None,
    strategy: str | None = None,
) -> TrainResult:
    """Train `spec` into runs/<run_id>/; an existing run with the same spec resumes from last.pt.

    At the end rank 0 registers the best checkpoint as the next version of `spec.name`
    (`train.register_best`), encrypted at rest when `master_key` is given.

    With `dist.world_size > 1` (a process group already joined, see `train.worker`) every rank
    calls this with the same run id; each trains on its slice of every global batch, DDP averages
    the gradients, validation sums are all-reduced, and only rank 0 writes files.

    `on_epoch(row)` runs on rank 0 after each epoch's best checkpoint and returns True to stop early
    (a tuner's pruning); every rank passes one or none, and all of them stop at the same epoch.
    A stopped run says `"stopped_early": true` in summary.json.

    `strategy` ("ddp" or "fsdp", as the launcher decided and recorded it) overrides
    `distributed.strategy`; with "fsdp" each rank holds a shard of the model, gradients and
    optimizer state, and checkpoints are sharded (`train.sharded`) whatever the worker count.
    """
    import torch

    from skylift.models import count_parameters

    if dist is None:  # one process: the GPU when there is one, unless the spec forces gloo (CPU)
        gpu = torch.cuda.is_available() and spec.distributed.backend != "gloo"
        dist = DistInfo(device="cuda" if gpu else "cpu")
    home = skylift_home(home)
    t = spec.train
    task = TASKS[spec.task]
    precision.check_precision(t.precision, t.force_precision, dist.device, precision.cpu_flags())
    if t.threads:
        torch.set_num_threads(t.threads)
    data, net = setup(spec, home)  # validate data and model before touching the run folder
    net = net.to(dist.device)
    train_rows = data.train.to(dist.device)
    if strategy is None and spec.distributed.strategy == "auto":  # a direct call: decide here
        x, _ = data.train.take(torch.arange(min(2, len(data.train))))
        strategy, why = fsdp.decide(spec, net, x.to(dist.device), dist.world_size, dist.device)
        if observer and why:
            observer.note(why)
    shards = (strategy or spec.distributed.strategy) == "fsdp"
    # each rank scores its part of validation; the sums add up exactly
    val_parts = _val_parts(data.val, dist, shards)
    if t.activation_checkpointing:
        fsdp.checkpoint_blocks(net)
    if shards and dist.distributed:
        fsdp.shard(net, dist, t.precision)  # before the optimizer: sharding replaces the parameters
    scaler = precision.grad_scaler(t.precision, dist.device, shards and dist.distributed)
    fused = scaler is None or not (shards and dist.distributed)  # see make_optimizer
    optimizer = make_optimizer(net, t.optimizer, fused=fused)
    if dist.is_main:
        run, state = _prepare_run(spec, home, run_id, shards)
    else:
        run, state = RunDir.under(home, run_id or ""), None
    state = parallel.broadcast_state(state, dist)

    gen = torch.Generator().manual_seed(t.seed)
    history: list[dict[str, Any]] = []
    best: float | None = None
    best_epoch: int | None = None
    stopped = False
    position: dict[str, Any] | None = None  # where a mid-epoch last.pt was saved
    if state is not None:
        saves.restore(state, net, optimizer, run, dist)
        if scaler is not None and "scaler" in state:
            scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(state["rng"]["torch"])
        if "cuda" in state["rng"] and dist.device != "cpu":
            torch.cuda.set_rng_state(state["rng"]["cuda"], dist.device)
        gen.set_state(state["rng"]["shuffle"])
        history, best, best_epoch = state["history"], state["best"], state["best_epoch"]
        stopped = bool(state.get("stopped_early", False))  # a pruned run restarted stays stopped
        position = state.get("position")
        if dist.is_main:
            run.write_metrics(history)  # a crash may have come between last.pt and metrics.jsonl
    model = net
    if dist.distributed and not shards:
        model = parallel.wrap(net, dist, spec.distributed)
    meta = {
        **data.meta,
        "model": spec.model.model_dump(mode="json"),
        "input_shape": list(data.input_shape),
        "n_outputs": data.n_outputs,
        "run_id": run.run_id,
        "name": spec.name,
        "spec_hash": spec_hash(spec),
        "data_hash": data.fingerprint,
    }

    n = len(train_rows)
    steps = _Steps(n, t.batch_size, dist.world_size, t.accumulate)
    total_steps = len(steps) * t.epochs
    step_loss_S = torch.empty(steps.batches, dtype=torch.float64, device=dist.device)
    first_epoch = position["epoch"] if position else len(history) + 1
    scheduled = t.schedule.warmup_steps > 0 or t.schedule.decay != "none"
    if observer:
        observer.start(run.run_id, first_epoch, t.epochs, n, (*task.columns, *filter(None, [task.unit_rate])))
    started = time.perf_counter()
    for epoch in range(first_epoch, len(history) if stopped else t.epochs + 1):
        tick = time.perf_counter()
        model.train()
        first_group = step = 0
        if position is not None and position["epoch"] == epoch:  # resuming inside this epoch
            gen.set_state(position["shuffle"])
            first_group, step = position["group"], len(position["step_losses"])
            step_loss_S[:step] = torch.tensor(position["step_losses"], dtype=torch.float64)
            _set_rank_buffers(net, position.get("rank_buffers"), dist)
        shuffle_state = gen.get_state()
        perm_N = torch.randperm(n, generator=gen).to(dist.device)
        for g in range(first_group, len(steps)):
            group = steps[g]
            # Dropout's draws are a function of (seed, epoch, step, rank): one saved RNG state could
            # not resume every rank exactly (ranks draw different amounts when slices differ by a row).
            _seed_dropout(_step_seed(t.seed, epoch, g, dist.rank), dist)
            if scheduled:
                lr = t.optimizer.lr * lr_factor((epoch - 1) * len(steps) + g, total_steps, t.schedule)
                for param_group in optimizer.param_groups:
                    param_group["lr"] = lr
            # The group's mean: each batch's loss sum over the group's loss terms (DDP then averages
            # over ranks, hence x world), so K accumulated batches step as one K-times batch would.
            scale = dist.world_size / (sum(hi - lo for lo, hi in group) * data.terms_per_row)
            optimizer.zero_grad(set_to_none=True)
            for i, (lo, hi) in enumerate(group):
                idx_b = perm_N[lo:hi][parallel.my_slice(hi - lo, dist)]
                x_bS, y_bK = train_rows.take(idx_b)
                if data.augment is not None:  # a function of (seed, epoch, row): resumes exactly
                    x_bS = data.augment(x_bS, idx_b, epoch)
                # gradients are all-reduced once per optimizer step, on the group's last batch
                sync = i == len(group) - 1 or not dist.distributed
                if shards and dist.distributed:
                    net.set_requires_gradient_sync(sync)  # type: ignore[operator]
                accumulate = not sync and not shards  # DDP's way to skip the sync; FSDP's is above
                with model.no_sync() if accumulate else contextlib.nullcontext():  # type: ignore[operator]
                    with precision.autocast(t.precision, dist.device):
                        loss_sum = task.loss_sum(model(x_bS), y_bK, t, data)
                    loss = loss_sum * scale
                    (scaler.scale(loss) if scaler else loss).backward()
                step_loss_S[step] = loss_sum.detach()  # a copy, no sync: .item() per step would cost more
                step += 1
                if observer:
                    observer.step(hi - lo)
            if scaler is not None:
                scaler.unscale_(optimizer)
            if t.clip_grad_norm is not None:
                torch.nn.utils.clip_grad_norm_(net.parameters(), t.clip_grad_norm)
            if scaler is not None:
                scaler.step(optimizer)
                scaler.update()
            else:
                optimizer.step()
            every = t.checkpoint.every_steps
            if every and (g + 1) % every == 0 and g + 1 < len(steps):
                where = {"epoch": epoch, "group": g + 1, "shuffle": shuffle_state}
                where["step_losses"] = step_loss_S[:step].tolist()
                where["rank_buffers"] = _rank_buffers(net, dist)  # batch-norm statistics differ by rank
                extras = _extras(history, best, best_epoch, scaler)
                extras["rng"] = {"torch": torch.get_rng_state(), "shuffle": shuffle_state}
                extras |= {"stopped_early": False, "position": where, "meta": {**meta, "epoch": epoch - 1}}
                saves.save_last(run, net, optimizer, extras, dist, shards)
        seconds = time.perf_counter() - tick
        parallel.average_buffers(net, dist)
        sums = torch.stack([task.eval_sums(net, rows, data) * w for rows, w in val_parts]).sum(0)
        _reshard(net, shards and dist.distributed)
        totals = parallel.all_reduce_sum(torch.cat([sums, step_loss_S.sum().view(1)]), dist)
        ranks = memory.report(net, optimizer, dist)
        val_loss, val_metrics = task.summarize(totals[:-1], data)
        row = {
            "epoch": epoch,
            "loss": float(totals[-1]) / (n * data.terms_per_row),
            "val_loss": val_loss,
            **val_metrics,
            "lr": optimizer.param_groups[0]["lr"],
            "seconds": round(seconds, 4),
            "samples_per_s": round(n / seconds, 1),
            **({task.unit_rate: round(n * data.terms_per_row / seconds, 1)} if task.unit_rate else {}),
            "peak_mb": max(r["peak_mb"] for r in ranks),
            "memory": ranks,
        }
        history.append(row)
        if _improved(row[t.checkpoint.monitor], best, t.checkpoint.mode):
            best, best_epoch = row[t.checkpoint.monitor], epoch
            saves.save_best(run, net, {**meta, "epoch": epoch}, dist, shards)
        if dist.is_main:
            for line in task.epoch_end(net, data, run.path, epoch):
                if observer:
                    observer.note(line)
        elif shards:  # the task's forwards (e.g. sampled text) are collectives: join them, write nothing
            with tempfile.TemporaryDirectory() as scratch:
                task.epoch_end(net, data, Path(scratch), epoch)
        _reshard(net, shards and dist.distributed)
        if on_epoch is not None:
            # One tiny all_reduce so every rank leaves the loop at the same epoch (else the others
            # would wait forever in the next step's gradient sync).
            stop_1 = torch.tensor([float(dist.is_main and on_epoch(row))], device=dist.device)
            stopped = parallel.all_reduce_sum(stop_1, dist).item() > 0
        extras = _extras(history, best, best_epoch, scaler)
        extras["rng"] = {"torch": torch.get_rng_state(), "shuffle": gen.get_state(), **_cuda_rng(dist)}
        extras["stopped_early"] = stopped  # kept, so a restart after the stop does not train on
        saves.save_last(run, net, optimizer, {**extras, "meta": {**meta, "epoch": epoch}}, dist, shards)
        if dist.is_main:
            run.write_metrics(history)
        if observer:
            observer.epoch(row)
        if stopped:
            break

    if not dist.is_main:
        return TrainResult(run.run_id, run.path, {}, history)
    if shards:
        saves.consolidate_best(run, spec)
    summary = _finish(run, spec, data, history, best_epoch, meta, time.perf_counter() - started)
    summary["parameters"] = count_parameters(net)
    summary["workers"] = dist.world_size
    summary["strategy"] = "fsdp" if shards else "ddp"
    summary["precision"] = t.precision
    summary["stopped_early"] = stopped
    if spec.train.register_best:
        summary["registered"] = _register(run, spec, summary, home, master_key)
    _atomic.write_json(run.summary, summary)
    plots.curves(history, run.curves, best_epoch)
    return TrainResult(run.run_id, run.path, summary, history)


def _register(run: RunDir, spec: JobSpec, summary: dict[str, Any], home: Path, key: MasterKey | None) -> str:
    """Register the best checkpoint as the next version of `spec.name`, once per run."""
    from skylift.registry import Registry, run_metadata

    if run.summary.is_file():  # a finished run opened again keeps the version it registered
        previous = run.read_summary().get("registered")
        if previous:
            return str(previous)
    best = checkpoint.load(run.best)
    metrics, lineage = run_metadata(summary)
    serve = spec.serve.model_dump(mode="json")  # this session's: a resume may have edited it
    version = Registry(home, key).register(spec.name, best["model"], best["meta"], metrics, lineage, serve)
    return str(version.ref)


def _finish(
    run: RunDir,
    spec: JobSpec,
    data: TaskData,
    history: list[dict[str, Any]],
    best_epoch: int | None,
    meta: dict[str, Any],
    seconds: float,
) -> dict[str, Any]:
    """summary.json: the best epoch's validation metrics and, with a test set, its test metrics;
    the task's pictures of the best model."""
    best_row = next((h for h in history if h["epoch"] == best_epoch), history[-1])
    summary: dict[str, Any] = {
        "run_id": run.run_id,
        "name": spec.name,
        "task": spec.task,
        "spec_hash": meta["spec_hash"],
        "data_hash": meta["data_hash"],
        **({"classes": meta["classes"]} if "classes" in meta else {}),
        **({"targets": meta["targets"]} if "targets" in meta else {}),
        "input_shape": meta["input_shape"],
        "epochs": len(history),
        "best_epoch": best_epoch,
        "monitor": spec.train.checkpoint.monitor,
        "best": {k: v for k, v in best_row.items() if k.startswith("val_")},
        "final": {k: v for k, v in history[-1].items() if k.startswith(("val_", "loss"))},
        "train_seconds_this_session": round(seconds, 3),
        "checkpoint": str(run.best.relative_to(run.path)),
    }
    task = TASKS[spec.task]
    best = checkpoint.load(run.best)
    model = task.build(
        spec.model, best["meta"], tuple(best["meta"]["input_shape"]), best["meta"]["n_outputs"]
    )
    model.load_state_dict(best["model"])
    model.eval()
    test = task.test_summary(model, data)
    if test is not None:
        summary["test"] = test
    task.finish(model, data, run.path)
    return summary

"""Running a prediction job: checks first, then one in-process rank or N workers under the elastic agent.

Workers on one node are forked from the launcher when that is safe (it has never run torch on
more than one thread, so no OpenMP pool exists to break in the child), which starts them in
~0.1 s instead of the ~2 s a fresh interpreter spends importing torch; otherwise they are spawned.
"""

from __future__ import annotations

import contextlib
import hashlib
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from skylift import network
from skylift._cpus import usable_cores
from skylift.batch._job import PredictJob, check_options, check_output, open_job
from skylift.batch._job import output_format as format_of
from skylift.batch._kinds import kind_of
from skylift.batch._media_source import default_sizes
from skylift.dist import agent_store
from skylift.errors import SkyliftError, SpecError
from skylift.home import skylift_home

if TYPE_CHECKING:
    from skylift.batch._rank import RankResult
    from skylift.registry import LoadedModel
    from skylift.security import MasterKey


@dataclass(frozen=True)
class PredictResult:
    """The outcome of `predict` on this node."""

    output: Path | None
    """The output file; None on a node other than node 0 (node 0 writes it)."""
    rows: int
    """Rows in the output."""
    computed_rows: int
    """Rows predicted by this run (fewer than `rows` when it resumed an interrupted run)."""
    seconds: float
    """Wall time of the whole call: checks, model load, workers, prediction and writing."""
    workers: int
    nnodes: int
    chunks: int
    resumed_chunks: int
    """Chunks an interrupted run had finished, not computed again."""
    predict_seconds: float = 0.0
    """The part of `seconds` spent predicting (all workers started, output not yet written)."""
    node_rows: int = 0
    """Rows this node's workers predicted themselves: its share of `computed_rows`."""
    threads: tuple[int, ...] = ()
    """torch threads of each of this node's workers, in rank order (the cores split between them)."""
    notes: tuple[str, ...] = ()

    @property
    def rows_per_s(self) -> float:
        return self.computed_rows / self.seconds if self.seconds > 0 else 0.0


@contextlib.contextmanager
def _one_thread() -> Iterator[None]:
    """torch on one thread: the launcher's own tensor work then starts no OpenMP pool (see module doc)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def predict(
    model: str,
    input: str,
    output: str | Path,
    *,
    workers: int = 1,
    nnodes: int = 1,
    node_rank: int = 0,
    rdzv_endpoint: str | None = None,
    node_addr: str | None = None,
    batch_rows: int | None = None,
    chunk_rows: int | None = None,
    output_format: str | None = None,
    proba: bool = False,
    top_k: int | None = None,
    label_column: str = "label",
    text_column: str = "text",
    overwrite: bool = False,
    home: Path | str | None = None,
    master_key: bytes | MasterKey | None = None,
    max_restarts: int = 3,
    progress: bool = False,
) -> PredictResult:
    """Predict every row of `input` with registered `model` (NAME, NAME:VERSION or NAME@ALIAS) into `output`.

    Rows are read a chunk at a time and spread over `workers` processes per node (x `nnodes`
    machines, joined by c10d rendezvous at `rdzv_endpoint`, each advertising the address on its
    route there or `node_addr`, an address or interface); the output keeps input order and is
    written under a temp name, then renamed. Finished chunks are kept beside the output, so the
    same call after a crash resumes and writes the same bytes. Raises SpecError (options, output
    path), DataError (input), ModelNotFound, IntegrityError or AuthError before any work starts
    whenever the problem can be seen up front.

    What a row is follows the model's kind: numeric features for a numeric model, the
    `text_column` of a .csv/.parquet/.jsonl file for a text model (a language model also reads
    the lines of a .txt file), image or audio files for a media model (a folder of them, or a
    .txt / .csv list of paths; each output row then starts with the file's `path`). A classifier
    writes its class (with `proba` or `top_k` more), a regressor one column per target, a language
    model each text's `log_likelihood` and `tokens`. `batch_rows` and `chunk_rows` default to 4096
    and 16384 rows, or 64 and 256 files for a media model.
    """
    from skylift.batch._rank import run_rank
    from skylift.registry import Registry
    from skylift.security import MasterKey, master_key_from_env

    tick = time.perf_counter()
    fork_safe = "torch" not in sys.modules  # nothing has run torch in this process yet
    _check_placement(workers, nnodes, node_rank, rdzv_endpoint, node_addr)
    out = Path(output).expanduser().absolute()
    fmt = format_of(out, output_format)
    check_options(fmt, proba, top_k, batch_rows, chunk_rows)
    key = master_key if master_key is not None else master_key_from_env()
    key = MasterKey(bytes(key)) if isinstance(key, bytes | bytearray) else key
    root = skylift_home(home)
    registry = Registry(root, key)
    name, version = registry.resolve(model)
    if node_rank == 0:
        check_output(out, overwrite)
    with _one_thread():
        loaded = registry.load(f"{name}:{version}")
        # Rows per forward pass and per chunk: 4096 and 16384 numeric rows, 64 and 256 media files.
        batch_rows, chunk_rows = default_sizes(loaded.data, batch_rows, chunk_rows)
        job = PredictJob(
            model=f"{name}:{version}",
            input=input,
            output=str(out),
            output_format=fmt,
            home=str(root),
            proba=proba,
            top_k=top_k,
            batch_rows=batch_rows,
            chunk_rows=chunk_rows,
            label_column=label_column,
            text_column=text_column,
            overwrite=overwrite,
        )
        opened = open_job(job, key, model=loaded)
    try:
        kind_of(opened.model).check(opened.model, fmt, proba, top_k)
    except SkyliftError:
        opened.source.close()
        raise
    notes = tuple(opened.source.notes)
    if workers * nnodes == 1:
        result = run_rank(
            job, _solo(), master_key=key, observer=_display if progress else None, opened=opened
        )
        node_rows = result.own_rows
        threads_used: tuple[int, ...] = (_torch_threads(),)
    else:
        opened.source.close()
        threads = max(1, usable_cores() // workers)  # split the cores so workers do not oversubscribe them
        method = "fork" if fork_safe or threads == 1 else "spawn"
        # A forked worker shares the verified model already in memory; a spawned one loads its own.
        shared = opened.model if method == "fork" else None
        results = _agent(
            job,
            key,
            shared,
            workers,
            nnodes,
            node_rank,
            rdzv_endpoint,
            node_addr,
            max_restarts,
            threads,
            method,
            progress,
        )
        result = _pick(results)
        node_rows = sum(r.own_rows for r in results.values())
        threads_used = tuple(results[r].threads for r in sorted(results))
    if result.error is not None:
        from skylift.batch._rank import as_error

        raise as_error(result.error_type or "SkyliftError", result.error)
    return PredictResult(
        output=Path(result.output) if result.output else None,
        rows=result.rows,
        computed_rows=result.computed_rows,
        seconds=time.perf_counter() - tick,
        workers=workers,
        nnodes=nnodes,
        chunks=result.chunks,
        resumed_chunks=result.resumed_chunks,
        predict_seconds=result.predict_seconds,
        node_rows=node_rows,
        threads=threads_used,
        notes=notes,
    )


def _check_placement(
    workers: int, nnodes: int, node_rank: int, rdzv_endpoint: str | None, node_addr: str | None
) -> None:
    if workers < 1 or nnodes < 1:
        raise SpecError(f"--workers and --nnodes must be >= 1, got {workers} and {nnodes}")
    if nnodes > 1 and not rdzv_endpoint:
        raise SpecError("multi-node prediction needs --rdzv-endpoint HOST:PORT (the same on every node)")
    if not 0 <= node_rank < nnodes:
        raise SpecError(f"--node-rank must be in [0, {nnodes - 1}], got {node_rank}")
    if node_addr:
        network.node_address(rdzv_endpoint or "", node_addr)  # SpecError: not this machine's


def _torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def _solo() -> Any:
    from skylift.batch._board import LocalBoard

    return LocalBoard()


def _display() -> Any:
    from skylift.batch._progress import PredictDisplay

    return PredictDisplay()


def _pick(results: dict[int, RankResult]) -> RankResult:
    """The result to report: an error if any rank has one, else the writer's, else any rank's."""
    ordered = [results[r] for r in sorted(results)]
    for r in ordered:
        if r.error is not None:
            return r
    return next((r for r in ordered if r.writer), ordered[0])


def _agent(
    job: PredictJob,
    key: MasterKey | None,
    model: LoadedModel | None,
    workers: int,
    nnodes: int,
    node_rank: int,
    rdzv: str | None,
    node_addr: str | None,
    max_restarts: int,
    threads: int,
    method: str,
    progress: bool,
) -> dict[int, RankResult]:
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    from skylift.batch._worker import work

    multi = nnodes > 1
    # Every node must agree on the run id without talking first: derive it from what they share.
    shared = f"{rdzv}|{job.model}|{job.input}|{job.output}".encode()
    run_id = "predict-" + (hashlib.sha256(shared).hexdigest()[:12] if multi else uuid.uuid4().hex[:12])
    # Not loopback from the hostname: the address on this node's route to the rendezvous.
    local_addr = network.advertise(nnodes, node_rank, rdzv, node_addr) if multi and rdzv else None
    config = LaunchConfig(
        min_nodes=nnodes,
        max_nodes=nnodes,
        nproc_per_node=workers,
        run_id=run_id,
        rdzv_backend="c10d",
        rdzv_endpoint=rdzv if multi and rdzv else "127.0.0.1:0",
        rdzv_configs={"is_host": node_rank == 0} if multi else {},  # node 0 hosts the rendezvous store
        local_addr=local_addr,
        # Restarted agents of several nodes count restarts apart, so their workers could not agree on
        # an attempt: with several nodes a dead worker ends the job (run it again to resume).
        max_restarts=max_restarts if not multi else 0,
        monitor_interval=0.02,  # seconds between the agent's checks: it notices the end sooner
        start_method=method,
    )
    try:
        # The workers keep their board in the agent's store, which outlives every worker: with
        # sharing off, rank 0's worker would host it and take it away while the others still read.
        with agent_store(shared=True):
            returned: dict[int, RankResult] = elastic_launch(config, work)(
                job, node_rank, threads, progress, key, model
            )
        return returned
    except SignalException:  # SIGTERM/SIGINT: the agent has already stopped every worker
        raise KeyboardInterrupt from None
    except ChildFailedError as exc:
        rank, failure = exc.get_first_failure()
        code = failure.exitcode
        how = f"was killed by signal {-code}" if code < 0 else f"exited with code {code}"
        raise SkyliftError(
            f"prediction failed: worker rank {rank} {how} after {max_restarts} restart(s); "
            "finished chunks are kept: run the same command again to resume"
        ) from None

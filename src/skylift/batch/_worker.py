"""One prediction worker under the elastic agent: join the gloo group, run its rank, report back."""

from __future__ import annotations

import dataclasses
import os
import signal
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from skylift.batch._job import PredictJob
    from skylift.batch._rank import RankResult
    from skylift.registry import LoadedModel


def _default_signals() -> None:
    """A forked worker inherits the launcher's Python handlers, which only run between bytecodes: the
    agent's SIGTERM would then never stop a worker blocked in C++ (a gloo connect). Start clean."""
    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT):
        signal.signal(sig, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)


def work(
    job: PredictJob, node_rank: int, threads: int, progress: bool, master_key: Any, model: LoadedModel | None
) -> RankResult:
    """The elastic agent's entry point (a function, so workers can be forked as well as spawned).

    `model`: the launcher's verified model, when forked (it is then shared, not loaded again).

    The only place that reads the agent's variables (RANK, LOCAL_RANK, MASTER_*, restart count).
    """
    from datetime import timedelta

    import torch
    from torch.distributed import PrefixStore  # type: ignore[attr-defined]
    from torch.distributed.rendezvous import rendezvous

    from skylift.batch._board import StoreBoard
    from skylift.batch._launch import _display
    from skylift.batch._rank import run_rank

    _default_signals()
    torch.set_num_threads(threads)
    timeout = timedelta(minutes=30)  # the longest a rank waits on another (e.g. for the output)
    store, rank, world = next(rendezvous("env://", timeout=timeout))  # the agent's store
    # One agent reuses its store across restarts: key each attempt apart so no stale key is read.
    attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
    board = StoreBoard(PrefixStore(f"skylift-predict/attempt-{attempt}", store), rank, world, timeout)
    result = run_rank(
        job,
        board,
        node_rank=node_rank,
        local_rank=int(os.environ["LOCAL_RANK"]),
        master_key=master_key,
        observer=_display if progress else None,
        arrow_threads=threads > 1,
        model=model,
    )
    return dataclasses.replace(result, threads=torch.get_num_threads())  # reported in PredictResult.threads

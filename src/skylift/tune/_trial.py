"""One trial as its own process, forked from a server that has already imported torch and friends.

A trial is a whole training job (itself N DDP workers when asked) with the pruning hook on rank 0.
Each used to be a fresh `python -m`, paying ~5 s of imports (torch, its compiler stack that the
optimizers load, matplotlib, optuna) before a training step; forked from the warm server it starts
in a fraction of that. The study driver reads the result from the run folder's summary.json; this
process never tells Optuna.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
from multiprocessing.context import ForkServerContext
from pathlib import Path

# What the fork server imports once; every trial forked from it starts with these loaded.
PRELOAD = (
    "torch",
    "torch._dynamo",  # loaded by the first optimizer step otherwise (~1.5 s)
    "optuna",
    "matplotlib.pyplot",  # picks no backend on import; the plots switch to Agg when drawing
    "skylift.train.launch",
    "skylift.train.loop",
    "skylift.tune._hook",
)


def context() -> ForkServerContext:
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(list(PRELOAD))
    return ctx


def _die_with_driver(driver: int) -> bool:
    """Linux's parent-death signal: the fork server dies with the driver, and this trial with it.

    False when the driver is already gone (it died before prctl took effect).
    """
    try:
        import ctypes

        ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    try:
        os.kill(driver, 0)
    except ProcessLookupError:
        return False
    return True


def run(spec_file: Path, run_id: str, home: Path, workers: int, hook: str, log: Path, driver: int) -> None:
    """The forked process's entry point: train, output to `log`, exit with the CLI's exit code."""
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    if not _die_with_driver(driver):
        sys.exit(1)
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # stop like Ctrl-C: KeyboardInterrupt
    sys.exit(_train(spec_file, run_id, home, workers, hook))


def _train(spec_file: Path, run_id: str, home: Path, workers: int, hook: str) -> int:
    from skylift.errors import SkyliftError
    from skylift.spec import load_spec
    from skylift.train.launch import launch, place
    from skylift.tune._hook import HOOK

    try:
        spec = load_spec(spec_file)
        # Placed as `skylift train` places a run: the strategy (ddp, fsdp or auto's choice),
        # precision checks and the worker checks apply to a trial exactly as to a training.
        placement = place(spec, workers, None, 0, None, home=home)
        for line in (placement.reason, placement.strategy_reason):
            if line:
                print(line, flush=True)
        launch(spec, placement, home=home, run_id=run_id, epoch_hook=(HOOK, hook))
    except SkyliftError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0

"""One training worker under the elastic agent: `python -m skylift.train.worker --spec ... --run-id ...`."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="skylift-worker")
    ap.add_argument("--spec", required=True, help="resolved job spec written by the launcher")
    ap.add_argument("--run-id", required=True)
    ap.add_argument("--home", required=True)
    ap.add_argument("--threads", type=int, required=True, help="torch intra-op threads of this worker")
    ap.add_argument("--fatal-file", required=True, help="where a worker records bad input for the launcher")
    ap.add_argument("--progress", action="store_true", help="rank 0 draws the progress bar")
    ap.add_argument("--key-file", help="registry master key file (default: $SKYLIFT_MASTER_KEY)")
    ap.add_argument(
        "--epoch-hook",
        nargs=2,
        metavar=("MODULE:FACTORY", "ARG"),
        help="rank 0 calls FACTORY(ARG)(row) after each epoch; True stops every rank (a tuner's pruning)",
    )
    ap.add_argument("--strategy", choices=("ddp", "fsdp"), help="as the launcher decided (default: spec's)")
    args = ap.parse_args(argv)
    fatal = Path(args.fatal_file)
    if fatal.exists():
        return 2  # an earlier attempt met bad input: a restart would meet it again
    _stderr_to_log()
    try:
        return _train(args, fatal)
    except KeyboardInterrupt:
        return 130  # Ctrl-C reaches every process of the group; the launcher says "interrupted"


def _train(args: argparse.Namespace, fatal: Path) -> int:
    import torch

    from skylift.data._tokenizer import limit_threads
    from skylift.errors import SkyliftError
    from skylift.security import master_key_from_env
    from skylift.spec import load_spec, spec_hash
    from skylift.train import parallel
    from skylift.train.launch import load_epoch_hook
    from skylift.train.loop import fit
    from skylift.train.progress import TrainDisplay

    spec = load_spec(args.spec)
    key = master_key_from_env(args.key_file)
    torch.set_num_threads(spec.train.threads or args.threads)
    limit_threads(spec.train.threads or args.threads)  # the tokenizer's threads share the same cores
    info = parallel.init_from_env(spec.distributed.backend)
    # Worker counts may differ between nodes (workers: auto on unlike machines); all else must match.
    same = spec.model_copy(update={"distributed": spec.distributed.model_copy(update={"workers": 1})})
    display = TrainDisplay() if info.is_main and args.progress else None
    on_epoch = None
    if args.epoch_hook:
        on_epoch = load_epoch_hook(*args.epoch_hook) if info.is_main else _never
    finished = False
    try:
        parallel.check_same_spec(spec_hash(same), info)
        fit(
            spec,
            home=args.home,
            run_id=args.run_id,
            observer=display,
            dist=info,
            master_key=key,
            on_epoch=on_epoch,
            strategy=args.strategy,
        )
        finished = True
    except SkyliftError as exc:
        print(f"error (rank {info.rank}): {exc}", file=sys.stderr)
        try:
            with fatal.open("x") as f:  # the first rank to fail tells the launcher why
                f.write(f"{type(exc).__name__} {exc}")
        except FileExistsError:
            pass
        return exc.exit_code
    finally:
        if display:
            display.close()
        parallel.shutdown(finished)
    return 0


def _stderr_to_log() -> None:
    """Send this process's stderr (Python's and C++'s) to stderr.log beside the agent's error file.

    That is runs/<id>/logs/<run>_*/attempt_<n>/<local rank>/: tracebacks of a failed attempt are kept
    there, and the terminal shows the launcher's one-line summary instead.
    """
    error_file = os.environ.get("TORCHELASTIC_ERROR_FILE")
    if error_file:
        with open(Path(error_file).with_name("stderr.log"), "ab") as log:
            os.dup2(log.fileno(), 2)


def _never(row: dict[str, Any]) -> bool:
    return False  # ranks > 0: only rank 0 decides, fit broadcasts its decision


if __name__ == "__main__":
    raise SystemExit(main())

"""One training worker under the elastic agent: `python -m skylift.train.worker --spec ... --run-id ...`."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any


def main(argv: Sequence[str] | None = None) -> int:
    import torch

    from skylift.errors import SkyliftError
    from skylift.security import master_key_from_env
    from skylift.spec import load_spec
    from skylift.train import parallel
    from skylift.train.launch import load_epoch_hook
    from skylift.train.loop import fit
    from skylift.train.progress import TrainDisplay

    ap = argparse.ArgumentParser(prog="skylift-worker")
    ap.add_argument("--spec", required=True, help="resolved job spec written by the launcher")
    ap.add_argument("--run-id", required=True)
    ap.add_argument("--home", required=True)
    ap.add_argument("--threads", type=int, required=True, help="torch intra-op threads of this worker")
    ap.add_argument("--progress", action="store_true", help="rank 0 draws the progress bar")
    ap.add_argument("--key-file", help="registry master key file (default: $SKYLIFT_MASTER_KEY)")
    ap.add_argument(
        "--epoch-hook",
        nargs=2,
        metavar=("MODULE:FACTORY", "ARG"),
        help="rank 0 calls FACTORY(ARG)(row) after each epoch; True stops every rank (a tuner's pruning)",
    )
    args = ap.parse_args(argv)

    spec = load_spec(args.spec)
    key = master_key_from_env(args.key_file)
    torch.set_num_threads(spec.train.threads or args.threads)
    info = parallel.init_from_env(spec.distributed.backend)
    display = TrainDisplay() if info.is_main and args.progress else None
    on_epoch = None
    if args.epoch_hook:
        on_epoch = load_epoch_hook(*args.epoch_hook) if info.is_main else _never
    finished = False
    try:
        fit(
            spec,
            home=args.home,
            run_id=args.run_id,
            observer=display,
            dist=info,
            master_key=key,
            on_epoch=on_epoch,
        )
        finished = True
    except SkyliftError as exc:
        print(f"error (rank {info.rank}): {exc}", file=sys.stderr)
        return exc.exit_code
    finally:
        if display:
            display.close()
        parallel.shutdown(finished)
    return 0


def _never(row: dict[str, Any]) -> bool:
    return False  # ranks > 0: only rank 0 decides, fit broadcasts its decision


if __name__ == "__main__":
    raise SystemExit(main())

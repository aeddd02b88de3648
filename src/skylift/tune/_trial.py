"""One trial as its own process: `python -m skylift.tune._trial --spec ... --run-id ...`.

It trains the trial's spec (itself N DDP workers when asked) with the pruning hook on rank 0. The
study driver reads the result from the run folder's summary.json; this process never tells Optuna.
"""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Sequence


def _die_with_parent() -> None:
    # A trial outliving its driver would keep training a trial the next run retries: Linux's
    # parent-death signal ends it with the driver, however the driver dies.
    try:
        import ctypes

        ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="skylift-trial")
    ap.add_argument("--spec", required=True)
    ap.add_argument("--run-id", required=True)
    ap.add_argument("--home", required=True)
    ap.add_argument("--workers", type=int, required=True)
    ap.add_argument("--hook", required=True, help="the pruning hook's JSON argument")
    ap.add_argument("--parent", type=int, required=True, help="the driver's pid")
    args = ap.parse_args(argv)
    _die_with_parent()
    import os

    if os.getppid() != args.parent:  # the driver died before prctl took effect
        return 1
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # stop like Ctrl-C: KeyboardInterrupt

    from skylift.errors import SkyliftError
    from skylift.spec import load_spec
    from skylift.train.launch import Placement, launch
    from skylift.tune._hook import HOOK

    try:
        spec = load_spec(args.spec)
        placement = Placement(args.workers, max_restarts=spec.distributed.max_restarts)
        launch(spec, placement, home=args.home, run_id=args.run_id, epoch_hook=(HOOK, args.hook))
    except SkyliftError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The `skylift` command: thin sub-commands over the library; errors become one line and an exit code."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from skylift import __version__
from skylift.errors import SkyliftError

__all__ = ["main"]


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        # One line, no usage dump: the bar for every user-facing entry.
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _common(default: object) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument(
        "--home", default=default, help="skylift home folder (default: $SKYLIFT_HOME or ~/.skylift)"
    )
    p.add_argument("--debug", action="store_true", default=default, help="show tracebacks")
    return p


def _parser() -> argparse.ArgumentParser:
    from skylift.cli import _bench, _models, _serve, _train, _tune

    p = _Parser(
        prog="skylift", description="Train, tune, register and serve PyTorch models.", parents=[_common(None)]
    )
    p.add_argument("--version", action="version", version=f"skylift {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser, required=True)
    # SUPPRESS: `--home` given before the command must survive the sub-command's own defaults.
    common = _common(argparse.SUPPRESS)
    _train.add_commands(sub, common)
    _models.add_commands(sub, common)
    _bench.add_commands(sub, common)
    _serve.add_commands(sub, common)
    _tune.add_commands(sub, common)
    from skylift.cli import _predict

    _predict.add_commands(sub, common)
    from skylift.cli import _console

    _console.add_commands(sub, common)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    args.debug = bool(args.debug)
    if not args.debug:
        # torch's C++ warnings (e.g. c10d's "hostname of the client socket cannot be retrieved" on a
        # host without reverse DNS) would break the one-line output; read once, when torch loads.
        os.environ.setdefault("TORCH_CPP_LOG_LEVEL", "ERROR")
    try:
        code: int = args.run(args)
        return code
    except SkyliftError as exc:
        if args.debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except OSError as exc:
        if args.debug:
            raise
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"error: {where}{exc.strerror or exc}", file=sys.stderr)
        return 1

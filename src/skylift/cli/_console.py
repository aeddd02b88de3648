"""`skylift console`: thin argument parsing over skylift.console."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def add_commands(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "console",
        parents=[common],
        help="a local web app: runs (live curves), studies, models (promote), endpoints (playground)",
    )
    p.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default: loopback; others need API keys)"
    )
    p.add_argument("--port", type=int, default=8080, help="port (default 8080; 0: any free port)")
    p.add_argument(
        "--require-key", action="store_true", help="ask for an API key (a sign-in page) on loopback too"
    )
    p.add_argument("--tls-cert", type=Path, help="TLS certificate (PEM); serve HTTPS")
    p.add_argument("--tls-key", type=Path, help="TLS private key (PEM)")
    p.add_argument(
        "--key-file",
        help="registry master key, to authenticate encrypted models (default: $SKYLIFT_MASTER_KEY)",
    )
    p.set_defaults(run=_console)


def _console(args: argparse.Namespace) -> int:
    from skylift.console import ConsoleConfig, serve_console
    from skylift.home import skylift_home

    config = ConsoleConfig(
        home=skylift_home(args.home),
        host=args.host,
        port=args.port,
        require_key=args.require_key,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        key_file=args.key_file,
    )
    return serve_console(config, say=lambda line: print(line, flush=True))

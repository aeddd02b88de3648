"""`skylift serve`: thin argument parsing over skylift.serve."""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


def add_commands(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "serve", parents=[common], help="serve registered models over HTTP (KServe V2, TF-Serving)"
    )
    p.add_argument("models", nargs="+", metavar="MODEL_REF", help="NAME, NAME:VERSION or NAME@ALIAS")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback)")
    p.add_argument("--port", type=int, default=8000, help="port (0: any free port)")
    # None: the first model's spec `serve:` section decides, else ServeSpec's default (see _settings).
    p.add_argument(
        "--replicas",
        metavar="N|MIN:MAX",
        help="worker processes on the one port; MIN:MAX scales between them with the load "
        "(default: spec, else 2)",
    )
    p.add_argument(
        "--scale-up-wait-ms",
        metavar="MS",
        type=_positive,
        default=10.0,
        help="MIN:MAX adds replicas when the mean queue wait over 2 s passes this (default 10)",
    )
    p.add_argument(
        "--scale-up-rows",
        metavar="ROWS",
        type=_rows,
        help="... or when the queued rows per replica pass this (default: 2 x --max-batch-rows)",
    )
    p.add_argument(
        "--scale-down-idle-s",
        metavar="S",
        type=_positive,
        default=30.0,
        help="MIN:MAX removes a replica after this long under half of both targets (default 30)",
    )
    p.add_argument(
        "--oversubscribe", action="store_true", help="let MIN:MAX run more replicas than there are cores"
    )
    p.add_argument("--max-batch-rows", type=int, help="rows per model batch (default: spec, else 64)")
    p.add_argument(
        "--max-delay-ms", type=float, help="longest wait for a batch to fill (default: spec, else 2)"
    )
    p.add_argument(
        "--max-batch-tokens", type=int, default=8192, help="tokens per batch of a text model (default 8192)"
    )
    p.add_argument("--max-queue-rows", type=int, default=4096, help="queued rows before 503")
    p.add_argument(
        "--max-running", type=int, default=32, help="sequences a language model decodes together (default 32)"
    )
    p.add_argument(
        "--max-waiting", type=int, default=256, help="generation requests queued before 503 (default 256)"
    )
    p.add_argument("--timeout-ms", type=int, default=30_000, help="per-request deadline (504)")
    p.add_argument("--max-body-mb", type=float, default=16.0, help="request body limit (413)")
    p.add_argument("--max-requests", type=int, default=0, help="recycle a replica after N requests")
    p.add_argument("--max-rss-mb", type=int, default=0, help="recycle a replica past this memory")
    p.add_argument("--runtime", choices=["torch", "onnx"], default="torch", help="inference engine")
    p.add_argument(
        "--threads",
        type=_rows,
        metavar="N",
        help="torch threads per replica (default: the cores split over the replicas)",
    )
    p.add_argument(
        "--rate-limit",
        type=rate_arg,
        default=100.0,
        help="requests per API key, all replicas: 100/s (default), 6000/m, 360000/h (0: off)",
    )
    p.add_argument(
        "--token-limit",
        type=token_rate_arg,
        default=0.0,
        help="generation tokens (prompt + completion) per API key, all replicas: 20000/m or 20000 "
        "(per minute), 500/s, 1200000/h (default 0: off)",
    )
    p.add_argument("--cache", default="memory", help="response cache: memory, redis://HOST:PORT/DB, or none")
    p.add_argument(
        "--cache-mb", type=float, help="response cache budget in MiB, 0: off (default: spec, else 64)"
    )
    p.add_argument("--no-auth", action="store_true", help="serve without API keys (loopback only)")
    p.add_argument("--tls-cert", type=Path, help="TLS certificate (PEM); serve HTTPS")
    p.add_argument("--tls-key", type=Path, help="TLS private key (PEM)")
    p.add_argument(
        "--tls-self-signed",
        action="store_true",
        help="make a self-signed certificate (SKYLIFT_HOME/tls/), serve HTTPS",
    )
    p.add_argument("--tls-hosts", default="localhost,127.0.0.1", help="names and IPs for --tls-self-signed")
    p.add_argument(
        "--audit-log", type=Path, help="admin actions and auth failures (default: SKYLIFT_HOME/audit.log)"
    )
    p.add_argument(
        "--key-file", help="registry master key for encrypted models (default: $SKYLIFT_MASTER_KEY)"
    )
    p.add_argument(
        "--forwarded-allow-ips",
        metavar="LIST",
        type=forwarded_arg,
        default=(),
        help="proxies whose X-Forwarded-For/-Proto give the client address and scheme: IPs and CIDR "
        "networks, comma-separated, or * for any peer (default: none, forwarded headers ignored)",
    )
    p.add_argument(
        "--root-path",
        metavar="/PREFIX",
        type=root_path_arg,
        default="",
        help="path prefix a proxy forwards unstripped, e.g. /ml: /ml/v2/... is served as /v2/... "
        "(paths without it still work)",
    )
    p.add_argument(
        "--split",
        action="append",
        default=[],
        metavar="[MODEL:]V=PCT,...",
        help="spread requests over versions by whole percents summing to 100, e.g. 1=90,2=10 "
        "(the admin API changes it at runtime)",
    )
    p.add_argument(
        "--sticky-header",
        metavar="NAME",
        help="with --split: requests with one value of this header (e.g. X-Session) get one version",
    )
    p.add_argument(
        "--guard",
        metavar="RULES",
        help="with --split: a canary past these budgets gets weight 0, e.g. error_rate<0.05,p99_ms<200"
        "[,window_s=30,min_requests=20]",
    )
    p.add_argument(
        "--shadow",
        action="append",
        default=[],
        metavar="[MODEL:]V",
        help="copy answered requests to version V, compare its answers, never return them",
    )
    p.set_defaults(run=_serve)


def rate_arg(text: str) -> float:
    """argparse type of --rate-limit: 100, 100/s, 6000/m, 360000/h -> requests per second."""
    from skylift.serve.ratelimit import parse_rate

    return _checked("--rate-limit", parse_rate, text)


def token_rate_arg(text: str) -> float:
    """argparse type of --token-limit: 20000/m, 20000, 500/s, 1200000/h -> tokens per minute."""
    from skylift.serve.ratelimit import parse_token_rate

    return _checked("--token-limit", parse_token_rate, text)


def forwarded_arg(text: str) -> tuple[str, ...]:
    """argparse type of --forwarded-allow-ips: the trusted peers, checked (one line if malformed)."""
    from skylift.serve.config import parse_forwarded_allow_ips

    return _checked("--forwarded-allow-ips", parse_forwarded_allow_ips, text)


def root_path_arg(text: str) -> str:
    """argparse type of --root-path: /PREFIX without a trailing slash."""
    from skylift.serve.config import parse_root_path

    return _checked("--root-path", parse_root_path, text)


def _checked(flag: str, parse: Callable[[str], T], text: str) -> T:
    """`parse(text)`, its SpecError as argparse's one-line error without the flag's name."""
    from skylift.errors import SpecError

    try:
        return parse(text)
    except SpecError as exc:
        raise argparse.ArgumentTypeError(str(exc).removeprefix(flag + " ")) from None


def _positive(text: str) -> float:
    """argparse type of the autoscaling thresholds: a finite number > 0."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 < value < math.inf:
        raise argparse.ArgumentTypeError(f"must be a number > 0, got {text!r}")
    return value


def _rows(text: str) -> int:
    """argparse type of --scale-up-rows: a whole number >= 1."""
    if not text.strip().isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1, got {text!r}")
    return int(text)


# Flags whose default comes from the served model's spec (its `serve:` section, in model.json).
_FROM_SPEC = ("replicas", "max_batch_rows", "max_delay_ms", "cache_mb")


def _settings(args: argparse.Namespace, home: Path) -> dict[str, Any]:
    """The _FROM_SPEC settings: a flag given wins, then the first model's recorded `serve:` section,
    then the spec's defaults. Says where they came from when a spec decided any."""
    from skylift.registry import Registry
    from skylift.security import master_key_from_env
    from skylift.spec import ServeSpec

    registry = Registry(home, master_key_from_env(args.key_file))
    recorded = []
    for ref in args.models:
        info = registry.info(ref)  # verified against its manifest; unknown refs fail here (exit 2)
        recorded.append((info["ref"], info.get("serve") if isinstance(info.get("serve"), dict) else None))
    first_ref, section = recorded[0]
    defaults = ServeSpec().model_dump()
    settings = {**defaults, **(section or {})}
    # Named only where the spec changed the outcome: no flag given, and not the built-in value.
    # The spec's serve.replicas is a fixed count; a range is the host's business (--replicas MIN:MAX).
    taken = [k for k in _FROM_SPEC if getattr(args, k) is None and settings[k] != defaults[k]]
    settings.update({k: getattr(args, k) for k in _FROM_SPEC if getattr(args, k) is not None})
    if taken:
        shown = ", ".join(f"{k} {settings[k]:g}" for k in taken)
        print(f"from the spec of {first_ref}: {shown} (flags override)", flush=True)
    differ = [ref for ref, other in recorded[1:] if other is not None and other != section]
    if differ:
        print(f"note: {', '.join(differ)} record other serving defaults; {first_ref}'s apply", flush=True)
    return {k: settings[k] for k in _FROM_SPEC}


def _serve(args: argparse.Namespace) -> int:
    from skylift.home import skylift_home
    from skylift.serve import ServeConfig, serve
    from skylift.serve.autoscale import parse_replicas

    if args.replicas is not None:  # checked before the registry is read: "error: --replicas ..."
        args.replicas = parse_replicas(args.replicas)
    if args.forwarded_allow_ips == ("*",):
        print(
            "warning: --forwarded-allow-ips * believes X-Forwarded-For from any peer: any client can "
            "choose the address the audit log records; name the proxies instead",
            file=sys.stderr,
            flush=True,
        )
    from skylift.serve.rollout import from_flags

    rollouts = from_flags(args.models, args.split, args.shadow, args.guard, args.sticky_header)
    home = skylift_home(args.home)
    settings = _settings(args, home)
    replicas = settings["replicas"]  # (MIN, MAX) from the flag, or the spec's fixed count
    low, high = replicas if isinstance(replicas, tuple) else (replicas, replicas)
    config = ServeConfig(
        models=tuple(args.models),
        home=home,
        state_dir=Path("."),  # replaced by serve() with a private temp folder
        host=args.host,
        port=args.port,
        replicas=low,
        max_replicas=high,
        scale_up_wait_ms=args.scale_up_wait_ms,
        scale_up_rows=args.scale_up_rows or 0,
        scale_down_idle_s=args.scale_down_idle_s,
        oversubscribe=args.oversubscribe,
        max_batch_rows=settings["max_batch_rows"],
        max_delay_ms=settings["max_delay_ms"],
        max_batch_tokens=args.max_batch_tokens,
        max_queue_rows=args.max_queue_rows,
        max_running=args.max_running,
        max_waiting=args.max_waiting,
        timeout_ms=args.timeout_ms,
        max_body_mb=args.max_body_mb,
        max_requests=args.max_requests,
        max_rss_mb=args.max_rss_mb,
        no_auth=args.no_auth,
        key_file=args.key_file,
        runtime=args.runtime,
        threads=args.threads or 0,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        audit_log=args.audit_log,
        rate_limit=args.rate_limit,
        token_limit=args.token_limit,
        cache=None if args.cache == "none" else args.cache,
        cache_mb=0.0 if args.cache == "none" else float(settings["cache_mb"]),
        rollouts=rollouts,
        forwarded_allow_ips=args.forwarded_allow_ips,
        root_path=args.root_path,
    )
    if args.tls_self_signed and (args.tls_cert or args.tls_key):
        from skylift.errors import SpecError

        raise SpecError("give either --tls-self-signed or --tls-cert/--tls-key")
    hosts = tuple(h.strip() for h in args.tls_hosts.split(",") if h.strip()) if args.tls_self_signed else ()
    return serve(config, say=lambda line: print(line, flush=True), self_signed_hosts=hosts)

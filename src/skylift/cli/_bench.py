"""`skylift bench serve`: load-test an inference server, report throughput, latency and errors.

Exit codes: 0 the test ran and most requests succeeded (errors, if any, are in the report); 1 the
server could not be reached, refused the key, or failed more than half the requests (the report is
still printed, and one line names the main errors); 2 bad arguments or an unknown model.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.table import Table

    from skylift.loadgen import BenchReport, Latency, StreamReport

# skylift.loadgen.PROTOCOLS, without importing it for --help
_PROTOCOLS = ("v2-json", "v2-binary", "v1", "openai-completions", "openai-chat")


def add_commands(sub: Any, common: argparse.ArgumentParser) -> None:
    b = sub.add_parser("bench", parents=[common], help="benchmarks: load-test a running inference server")
    bs = b.add_subparsers(dest="bench_command", metavar="ACTION", parser_class=type(b), required=True)
    p = bs.add_parser(
        "serve",
        parents=[common],
        help="send inference requests at a fixed concurrency; report requests/s, latency, errors",
        description="Closed-loop load test of a KServe V2, TF-Serving or OpenAI-compatible server: "
        "CONCURRENCY keep-alive connections, each sending its next request as soon as the last is "
        "answered (with --protocol openai-*, as soon as its stream has ended).",
        epilog="exit status: 0 the test ran and most requests succeeded (errors are in the report); "
        "1 the server is unreachable, refused the key, or failed more than half the requests; "
        "2 bad arguments or unknown model",
    )
    p.add_argument("url", help="server base URL, e.g. http://127.0.0.1:8000")
    p.add_argument("--model", required=True, help="model name in the routes (/v2/models/NAME/infer)")
    p.add_argument("--concurrency", "-c", type=_count, default=16, help="requests in flight (default 16)")
    p.add_argument("--duration", "-d", type=_seconds, default=10.0, help="measured seconds (default 10)")
    p.add_argument("--rows", type=_count, default=1, help="rows per request (default 1)")
    p.add_argument(
        "--protocol",
        choices=_PROTOCOLS,
        default="v2-json",
        help="v2-json: KServe V2 JSON tensors; v2-binary: V2 binary tensor extension; "
        "v1: TF-Serving :predict; openai-completions, openai-chat: streamed generation, reporting "
        "time to first token, inter-token latency and tokens/s (default v2-json)",
    )
    p.add_argument(
        "--max-tokens", type=_count, default=64, help="openai-*: max_tokens of each completion (default 64)"
    )
    p.add_argument(
        "--prompt-tokens",
        type=_count,
        default=32,
        help="openai-*: prompt length in the server's tokens, found by a few short requests (default 32)",
    )
    p.add_argument(
        "--ignore-eos",
        action="store_true",
        help="openai-*: send ignore_eos (vLLM's extension, skylift's too) so every answer is max_tokens long",
    )
    p.add_argument("--api-key", help="sent as 'Authorization: Bearer KEY' (default: $SKYLIFT_API_KEY)")
    p.add_argument(
        "--processes",
        "-p",
        type=_count,
        help="client processes (default: one per 16 connections, at most one per core)",
    )
    p.add_argument("--features", type=_count, help="features per row, for a server without V2 model metadata")
    p.add_argument("--requests", "-n", type=_count, help="stop after this many measured requests")
    p.add_argument(
        "--warmup", type=_seconds_or_zero, default=1.0, help="seconds of unmeasured load first (default 1)"
    )
    p.add_argument(
        "--timeout", type=_seconds, default=30.0, help="seconds before a request counts as timed out"
    )
    p.add_argument(
        "--repeat",
        type=float,
        default=0.0,
        help="fraction of requests repeating one fixed body (a cache-hit workload), e.g. 0.5",
    )
    p.add_argument(
        "--same-body",
        action="store_true",
        help="send identical bodies (default: each request differs in its first value, so a "
        "response cache cannot answer it)",
    )
    p.add_argument(
        "--body-file",
        metavar="FILE",
        help="send FILE as every request's body, a plain POST (an image or audio file for a media model, "
        "or a ready JSON request) instead of generated rows; the bodies are identical, so serve with "
        "--cache none to measure the model",
    )
    p.add_argument(
        "--content-type",
        metavar="TYPE",
        help="the Content-Type of --body-file (default: by its extension, .png .jpg .webp .wav .flac .json)",
    )
    p.add_argument(
        "--json", dest="json_path", metavar="PATH", help="write the JSON report to PATH ('-': stdout)"
    )
    tls = p.add_mutually_exclusive_group()
    tls.add_argument("--insecure", "-k", action="store_true", help="https: skip certificate verification")
    tls.add_argument("--cacert", metavar="PEM", help="https: CA certificate(s) to verify the server with")
    p.set_defaults(run=_serve)


def _count(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1, got {text!r}")
    return int(text)


def _seconds(text: str) -> float:
    value = _float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a number of seconds > 0, got {text!r}")
    return value


def _seconds_or_zero(text: str) -> float:
    value = _float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a number of seconds >= 0, got {text!r}")
    return value


def _float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return value


def _serve(args: argparse.Namespace) -> int:
    from rich.console import Console

    from skylift.loadgen import BenchConfig, run_bench

    config = BenchConfig(
        url=args.url,
        model=args.model,
        concurrency=args.concurrency,
        duration_s=args.duration,
        rows=args.rows,
        protocol=args.protocol,
        api_key=args.api_key or os.environ.get("SKYLIFT_API_KEY") or None,
        processes=args.processes,
        features=args.features,
        requests=args.requests,
        warmup_s=args.warmup,
        timeout_s=args.timeout,
        insecure=args.insecure,
        cacert=args.cacert,
        unique=not args.same_body,
        repeat=args.repeat,
        body_file=args.body_file,
        content_type=args.content_type,
        max_tokens=args.max_tokens,
        prompt_tokens=args.prompt_tokens,
        ignore_eos=args.ignore_eos,
    )
    to_stdout = args.json_path == "-"
    # With --json - stdout carries only the JSON (pipe it to jq); the tables go to stderr.
    console = Console(stderr=to_stdout)
    err = Console(stderr=True)
    report = run_bench(config, log=lambda line: err.print(line, style="dim", highlight=False))
    for table in report_tables(report):
        console.print(table)
    if report.saturated:
        err.print(
            f"warning: a client process was busy {max(report.client_cpu):.0%} of the time; "
            "the figures may be the load generator's limit (try more --processes)"
        )
    if args.json_path:
        text = json.dumps(report.to_dict(), indent=2) + "\n"
        if to_stdout:
            sys.stdout.write(text)
        else:
            from skylift._atomic import atomic_open

            with atomic_open(Path(args.json_path), "w") as f:
                f.write(text)
    if report.failed:
        # One plain line (never wrapped) after the tables, so the errors are what the eye lands on.
        level = "error" if report.mostly_failed else "warning"
        print(f"{level}: {failure_line(report)}", file=sys.stderr)
    elif report.mostly_failed:
        print("error: no request was measured (try a longer --duration)", file=sys.stderr)
    return 1 if report.mostly_failed else 0


_SHOWN_KINDS = 3  # error kinds named in the failure line; the table lists them all
_RATE_LIMIT_FIX = (
    "a rate limit refused them: give the key a higher one (skylift keys create --rate-limit N) "
    "or start the server with skylift serve --rate-limit 0"
)
_TOKEN_LIMIT_FIX = (
    "a token limit refused them: give the key a higher one (skylift keys create --token-limit N/m), "
    "lower --concurrency or --max-tokens, or start the server with skylift serve --token-limit 0"
)


def failure_line(report: BenchReport) -> str:
    """'N of M requests failed (P%): HTTP 429 xN (the server's message), ...', and the fix for a 429."""
    share = report.failed / max(report.requests, 1)
    top = sorted(report.errors.items(), key=lambda kv: -kv[1])[:_SHOWN_KINDS]
    kinds = []
    for key, count in top:
        sample = report.error_samples.get(key, "")
        label = f"HTTP {key}" if key.isdigit() else key
        kinds.append(f"{label} x{count:,}" + (f" ({sample})" if sample else ""))
    more = f", and {len(report.errors) - len(top)} more kinds" if len(report.errors) > len(top) else ""
    line = f"{report.failed:,} of {report.requests:,} requests failed ({share:.0%}): {', '.join(kinds)}{more}"
    if "429" in report.errors and "token limit" in report.error_samples.get("429", ""):
        line += f"; {_TOKEN_LIMIT_FIX}"
    elif "429" in report.errors:
        line += f"; {_RATE_LIMIT_FIX}"
    if report.mostly_failed:
        line += "; the figures above measure the errors, not the model"
    return line


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:,.2f} ms"


def _stream_rows(report: StreamReport) -> list[tuple[str, str]]:
    """The figures of an openai-* run, in the place of rows per request."""
    asked = f"asked {report.target_prompt_tokens}: {report.prompt_words} words"
    mean, done = report.prompt_tokens_mean, report.completion_tokens_mean
    prompt = "-" if mean is None else f"{mean:,.1f} ({asked})"
    out = "-" if done is None else f"{done:,.1f} (max_tokens {report.max_tokens})"
    source = "" if report.token_source == "usage" else f" (counted from {report.token_source})"

    def three(name: str, lat: Latency) -> list[tuple[str, str]]:
        return [(f"{name} p{p}", _ms(getattr(lat, f"p{p}"))) for p in (50, 90, 99)]

    return [
        ("prompt tokens/request", prompt),
        ("output tokens/request", out),
        ("output tokens/s", f"{report.tokens_per_s:,.1f}{source}"),
        *three("time to first token", report.ttft_ms),
        *three("inter-token latency", report.itl_ms),
        ("time per output token p50", _ms(report.tpot_ms.p50)),
    ]


def report_tables(report: BenchReport) -> list[Table]:
    """The summary table, and the errors by status when there were any."""
    from rich.table import Table

    from skylift.loadgen import StreamReport as Streamed

    lat = report.latency_ms
    summary = Table(
        "figure", "value", title=f"{report.protocol} -> {report.url}", title_justify="left", show_header=False
    )
    rows = [
        ("model", report.model),
        ("rows per request", str(report.rows)),
        ("concurrency", f"{report.concurrency} ({report.processes} client processes, {report.client_loop})"),
        ("duration", f"{report.duration_s:.2f} s"),
        ("requests", f"{report.requests:,} ({report.ok:,} ok)"),
        ("requests/s", f"{report.requests_per_s:,.1f} (any status; {report.ok_per_s:,.1f} ok)"),
        ("rows/s", f"{report.rows_per_s:,.1f}"),
        ("latency p50", _ms(lat.p50)),
        ("latency p90", _ms(lat.p90)),
        ("latency p99", _ms(lat.p99)),
        ("latency max", _ms(lat.max)),
        ("errors", f"{report.failed:,} ({report.failed / max(report.requests, 1):.0%} of the requests)"),
    ]
    if isinstance(report, Streamed):  # streamed generation: tokens, not rows
        rows = [r for r in rows if r[0] not in ("rows per request", "rows/s")]
        at = [name for name, _ in rows].index("requests/s") + 1
        rows[at:at] = _stream_rows(report)
    for name, value in rows:
        summary.add_row(name, value)
    tables = [summary]
    if report.errors:
        errors = Table("status", "count", "first message", title="errors by status", title_justify="left")
        for key, count in report.errors.items():
            errors.add_row(key, f"{count:,}", report.error_samples.get(key, ""))
        tables.append(errors)
    if report.versions:  # the server named the answering version (X-Model-Version): a split's shares
        total = max(sum(v["responses"] for v in report.versions.values()), 1)
        by = Table(
            "version", "responses", "share", "ok", title="answers by model version", title_justify="left"
        )
        for version, counts in report.versions.items():
            by.add_row(
                version, f"{counts['responses']:,}", f"{counts['responses'] / total:.1%}", f"{counts['ok']:,}"
            )
        tables.append(by)
    return tables

"""`skylift train`, `quickstart` and `evaluate`."""

from __future__ import annotations

import argparse
import dataclasses
from importlib import resources
from pathlib import Path
from typing import Any

from skylift import network
from skylift.errors import SpecError


def add_commands(sub: Any, common: argparse.ArgumentParser) -> None:
    t = sub.add_parser("train", parents=[common], help="train a model from a job spec")
    t.add_argument("spec", nargs="?", help="job spec YAML (optional with --resume)")
    t.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="override a spec field, e.g. --set train.epochs=3 (repeatable)",
    )
    t.add_argument("--run-id", help="name of the run folder; an existing run with the same spec resumes")
    t.add_argument("--resume", metavar="RUN_ID", help="continue RUN_ID from its last checkpoint")
    t.add_argument(
        "--key-file", help="master key to encrypt the registered model (default: $SKYLIFT_MASTER_KEY)"
    )
    _placement_args(t)
    t.set_defaults(run=_train)

    q = sub.add_parser(
        "quickstart",
        parents=[common],
        help="train the MNIST-style MLP on built-in digits and report its metrics",
    )
    q.add_argument("--set", dest="overrides", action="append", default=[], metavar="FIELD=VALUE")
    _placement_args(q, single_node=True)
    q.set_defaults(run=_quickstart)

    e = sub.add_parser("evaluate", parents=[common], help="metrics of a trained model on a data source")
    e.add_argument("target", help="run id, run folder, checkpoint file, or model NAME[:VERSION|@ALIAS]")
    e.add_argument(
        "--data",
        required=True,
        help="data source: features (builtin:NAME, file, IDX folder), a text table, or a .txt corpus",
    )
    e.add_argument("--label-column", default="label", help="label column of .csv/.parquet/.jsonl data")
    e.add_argument("--text-column", help="text column of a text model's table (default: text)")
    e.add_argument(
        "--output", default=".", help="folder for confusion.png or scatter.png (default: current folder)"
    )
    e.add_argument("--key-file", help="master key for an encrypted model (default: $SKYLIFT_MASTER_KEY)")
    e.set_defaults(run=_evaluate)


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1, got {text!r}")
    return int(text)


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a number of seconds > 0, got {text!r}")
    return value


def _workers(text: str) -> int | str:
    return "auto" if text == "auto" else _positive(text)


def _placement_args(p: argparse.ArgumentParser, single_node: bool = False) -> None:
    p.add_argument(
        "--workers",
        type=_workers,
        metavar="N|auto",
        help="data-parallel worker processes on this node (default: the spec's, auto)",
    )
    if single_node:
        return
    p.add_argument("--nnodes", type=_positive, help="machines taking part (default: the spec's, 1)")
    p.add_argument(
        "--node-rank", type=int, default=0, help="this machine's index; node 0 hosts the rendezvous"
    )
    p.add_argument("--rdzv-endpoint", metavar="HOST:PORT", help="c10d rendezvous address, same on every node")
    p.add_argument(
        "--node-addr",
        metavar="ADDRESS|INTERFACE",
        help="what this node gives its peers (default: its address on the route to the rendezvous)",
    )
    p.add_argument(
        "--print-commands",
        action="store_true",
        help="print the command each of the --nnodes nodes runs, then exit (nothing is trained)",
    )
    p.add_argument(
        "--rdzv-timeout",
        type=_seconds,
        default=network.RENDEZVOUS_WAIT_S,
        metavar="SECONDS",
        help="how long to wait for the rendezvous and for every node to join it (default: %(default).0f)",
    )


def _console() -> Any:
    from rich.console import Console

    return Console()


def _run_training(spec: Any, args: argparse.Namespace, run_id: str | None) -> Any:
    from skylift.home import skylift_home
    from skylift.train.loop import check_reopen
    from skylift.train.run import RunDir

    console = _console()
    # The run-id checks come first: they cost milliseconds, placing costs a model build or more.
    run = RunDir.under(skylift_home(args.home), run_id) if run_id else None
    if run is not None:
        check_reopen(spec, run)
        if run.summary.is_file():
            console.print(f"run {run.run_id} is complete: nothing to train (a new --run-id trains again)")
            _report(console, run.read_summary(), run.path)
            return None
    from skylift.train.launch import launch, place
    from skylift.train.progress import TrainDisplay

    if getattr(args, "node_addr", None):  # checked before anything is written
        network.node_address(getattr(args, "rdzv_endpoint", None) or "", args.node_addr)
    placement = place(
        spec,
        args.workers,
        getattr(args, "nnodes", None),
        getattr(args, "node_rank", 0),
        getattr(args, "rdzv_endpoint", None),
        run=run if run is not None and run.spec.is_file() else None,
        home=args.home,
    )
    placement = dataclasses.replace(
        placement,
        node_addr=getattr(args, "node_addr", None),
        rdzv_timeout_s=getattr(args, "rdzv_timeout", network.RENDEZVOUS_WAIT_S),
    )
    for line in (placement.reason, placement.strategy_reason, _sync_line(placement.gradient_sync)):
        if line:
            console.print(line)
    if placement.workers * placement.nnodes > 1:
        console.print(f"training with {placement.workers} worker(s) x {placement.nnodes} node(s)")
    display = TrainDisplay(console) if placement.workers == 1 and placement.nnodes == 1 else None
    try:
        result = launch(
            spec,
            placement,
            home=args.home,
            run_id=run_id,
            observer=display,
            progress=True,
            key_file=getattr(args, "key_file", None),
        )
    finally:
        if display:
            display.close()
    if result is None:
        console.print("done (this node does not hold the run folder: rank 0 writes it)")
        return None
    _report(console, result.summary, result.run_dir)
    return result


# The test metrics the end-of-run line shows, whichever the task has (all are in summary.json).
_TEST_SHOWN = ("accuracy", "precision", "recall", "f1", "mae", "rmse", "r2", "perplexity", "bits_per_byte")


def _report(console: Any, s: dict[str, Any], run_dir: Path) -> None:
    """The end-of-run lines: best epoch, test metrics, run folder, registered version."""
    console.print(
        f"best epoch {s['best_epoch']} by {s['monitor']}: "
        + ", ".join(f"{k}={v:.4f}" for k, v in s["best"].items())
    )
    if "test" in s:
        t = s["test"]
        shown = " ".join(f"{k}={t[k]:.4f}" for k in _TEST_SHOWN if k in t)
        console.print(f"test ({t['n']} samples): {shown}")
    console.print(f"run folder: {run_dir}")
    if s.get("registered"):
        console.print(f"registered model: [bold]{s['registered']}[/]")


def _train(args: argparse.Namespace) -> int:
    from skylift.spec import load_spec, spec_hash

    if args.resume:
        if args.run_id and args.run_id != args.resume:
            raise SpecError("give either --run-id or --resume, not two different runs")
        from skylift.home import skylift_home
        from skylift.train.run import RunDir

        run = RunDir.under(skylift_home(args.home), args.resume)
        if not run.spec.is_file():
            from skylift.errors import ModelNotFound

            raise ModelNotFound(f"no run {args.resume!r} under {run.path.parent}")
        spec = load_spec(run.spec, args.overrides)
        if args.spec and spec_hash(load_spec(args.spec, args.overrides)) != spec_hash(spec):
            raise SpecError(f"{args.spec} differs from the spec run {args.resume} was started with")
        _run_training(spec, args, args.resume)
        return 0
    if not args.spec:
        raise SpecError("train needs a job spec file (or --resume RUN_ID)")
    if args.print_commands:
        load_spec(args.spec, args.overrides)  # a bad spec is refused here, not on every node
        print(node_commands(args))
        return 0
    _run_training(load_spec(args.spec, args.overrides), args, args.run_id)
    return 0


def node_commands(args: argparse.Namespace) -> str:
    """The `skylift train` line each node runs for the multi-node job `args` describes."""
    import shlex

    if not args.nnodes or args.nnodes < 2 or not args.rdzv_endpoint:
        raise SpecError("--print-commands needs --nnodes N (2 or more) and --rdzv-endpoint HOST:PORT")
    network.split_endpoint(args.rdzv_endpoint)
    common = ["skylift", "train", args.spec, *(a for o in args.overrides for a in ("--set", o))]
    common += ["--run-id", args.run_id] if args.run_id else []
    common += ["--workers", str(args.workers)] if args.workers else []
    common += ["--nnodes", str(args.nnodes)]
    if args.rdzv_timeout != network.RENDEZVOUS_WAIT_S:
        common += ["--rdzv-timeout", f"{args.rdzv_timeout:g}"]
    host = args.rdzv_endpoint.rpartition(":")[0]
    lines = [f"# on each of the {args.nnodes} nodes (node 0 runs on {host} and hosts the rendezvous):"]
    for rank in range(args.nnodes):
        node = [*common, "--node-rank", str(rank), "--rdzv-endpoint", args.rdzv_endpoint]
        lines.append(f"node {rank}: {shlex.join(node)}")
    return "\n".join(lines)


def quickstart_spec_path() -> Path:
    return Path(str(resources.files("skylift.cli") / "quickstart.yaml"))


def _quickstart(args: argparse.Namespace) -> int:
    from skylift.spec import load_spec

    spec = load_spec(quickstart_spec_path(), args.overrides)
    console = _console()
    console.print(
        f"[bold]skylift quickstart[/]: {spec.name} on {spec.data.train}, {spec.train.epochs} epochs"
    )
    result = _run_training(spec, args, None)
    if result is None or not result.summary.get("registered"):
        return 0
    from skylift.cli._quickstart import ROWS, serve_and_query
    from skylift.data import load_splits
    from skylift.home import skylift_home

    splits = load_splits(spec.data, seed=spec.train.seed)
    shown = splits.test if splits.test is not None else splits.val  # rows the model did not train on
    ref = result.summary["registered"]
    console.print(f"serving {ref} on loopback and sending {ROWS} held-out rows over HTTP (KServe V2) ...")
    serve_and_query(console, ref, skylift_home(args.home), shown.x[:ROWS], shown.y[:ROWS], shown.classes)
    console.print(
        "next: skylift train examples/regression.yaml (a regressor on real data bundled with scikit-learn); "
        "examples/text_classifier.yaml and examples/tiny_lm.yaml train a text classifier and a small GPT "
        "on real text (fetch it first: bash examples/get_data.sh)"
    )
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from rich.table import Table

    from skylift.cli._display import report_tables
    from skylift.security import master_key_from_env
    from skylift.train import evaluate

    key = master_key_from_env(args.key_file)
    result = evaluate(
        args.target,
        args.data,
        label_column=args.label_column,
        text_column=args.text_column,
        home=args.home,
        master_key=key,
    )
    console = _console()
    size = f"{result.n} samples" if result.tokens is None else f"{result.n} blocks, {result.tokens:,} tokens"
    what = f"{result.model} on {result.source}: {size}, loss {result.loss:.4f}"
    console.print(what, markup=False, soft_wrap=True)
    if result.report is not None:
        for table in report_tables(result.report, result.classes):
            console.print(table)
    else:
        table = Table(title=f"{result.task} metrics")
        table.add_column("metric")
        table.add_column("value", justify="right")
        for name, value in result.metrics.items():
            table.add_row(name, f"{value:.4f}")
        console.print(table)
    for path in result.plots(Path(args.output)):
        console.print(f"wrote {path}", markup=False, soft_wrap=True)
    return 0


def _sync_line(sync: dict[str, Any] | None) -> str:
    """How DDP synchronises gradients (placement.json's gradient_sync), in one line; "" for none."""
    if sync is None:
        return ""
    if sync["bucket_mb"] is None:  # auto chose fsdp: the settings do not apply, the reason says so
        return str(sync["reason"])
    buckets = sync["reason"] or f"bucket_mb {sync['bucket_mb']:g}"
    return f"gradient sync: compression {sync['gradient_compression']}; {buckets}"

"""`skylift predict`: batch inference of a registered model over a file or folder."""

from __future__ import annotations

import argparse
from typing import Any


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1, got {text!r}")
    return int(text)


def _count(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"must be a whole number >= 0, got {text!r}")
    return int(text)


def add_commands(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "predict",
        parents=[common],
        help="predict every row of a file or folder with a registered model (batch inference)",
    )
    p.add_argument("model", metavar="MODEL_REF", help="NAME, NAME:VERSION or NAME@ALIAS")
    p.add_argument(
        "--input",
        required=True,
        metavar="SRC",
        help="features: .npy .npz .csv[.gz] .parquet, IDX images, builtin:NAME, or a folder of such files; "
        "text models: .csv .parquet .jsonl (--text-column), language models also .txt (one text per line); "
        "image/audio models: a folder of files, or a .txt (one path a line) or .csv ('path' column) list",
    )
    p.add_argument(
        "--output", required=True, metavar="DST", help="output file (.npz .npy .csv .parquet .jsonl)"
    )
    p.add_argument(
        "--output-format",
        choices=["npz", "npy", "csv", "parquet", "jsonl"],
        help="output format (default: from the output's extension)",
    )
    what = p.add_mutually_exclusive_group()
    what.add_argument("--proba", action="store_true", help="classifiers: also write every class probability")
    what.add_argument(
        "--top-k", type=_positive, metavar="K", help="classifiers: also write the K likeliest classes"
    )
    p.add_argument(
        "--workers", type=_positive, default=1, metavar="N", help="worker processes on this node (default: 1)"
    )
    p.add_argument(
        "--batch-rows",
        type=_positive,
        metavar="B",
        help="rows per forward pass (default: 4096; 64 for image/audio files)",
    )
    p.add_argument(
        "--chunk-rows",
        type=_positive,
        metavar="C",
        help="rows per chunk, the unit of work and of resuming (default: 16384; 256 for image/audio files)",
    )
    p.add_argument(
        "--label-column",
        default="label",
        metavar="NAME",
        help="csv/parquet column that is not a feature (default: label)",
    )
    p.add_argument(
        "--text-column",
        default="text",
        metavar="NAME",
        help="a text model's input column of .csv/.parquet/.jsonl files (default: text)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    p.add_argument(
        "--key-file", metavar="PATH", help="master key for an encrypted model (default: $SKYLIFT_MASTER_KEY)"
    )
    p.add_argument(
        "--nnodes", type=_positive, default=1, metavar="N", help="machines taking part (default: 1)"
    )
    p.add_argument(
        "--node-rank", type=int, default=0, metavar="R", help="this machine's index; node 0 writes the output"
    )
    p.add_argument("--rdzv-endpoint", metavar="HOST:PORT", help="c10d rendezvous address, same on every node")
    p.add_argument(
        "--node-addr",
        metavar="ADDRESS|INTERFACE",
        help="what this node gives its peers (default: its address on the route to the rendezvous)",
    )
    p.add_argument(
        "--max-restarts",
        type=_count,
        default=3,
        metavar="N",
        help="times dead workers are restarted, on one node (default: 3; several nodes: 0)",
    )
    p.set_defaults(run=_predict)


def _predict(args: argparse.Namespace) -> int:
    from rich.console import Console

    from skylift.batch import predict
    from skylift.security import master_key_from_env

    key = master_key_from_env(args.key_file)
    result = predict(
        args.model,
        args.input,
        args.output,
        workers=args.workers,
        nnodes=args.nnodes,
        node_rank=args.node_rank,
        rdzv_endpoint=args.rdzv_endpoint,
        node_addr=args.node_addr,
        batch_rows=args.batch_rows,
        chunk_rows=args.chunk_rows,
        output_format=args.output_format,
        proba=args.proba,
        top_k=args.top_k,
        label_column=args.label_column,
        text_column=args.text_column,
        overwrite=args.overwrite,
        home=args.home,
        master_key=key,
        max_restarts=args.max_restarts,
        progress=True,
    )
    console = Console(highlight=False)
    for note in result.notes:
        console.print(f"note: {note}", markup=False, soft_wrap=True)
    here = f"node {args.node_rank} computed {result.node_rows:,} rows"
    if result.output is None:
        console.print(f"done: {here} (node 0 writes the output)")
        return 0
    if result.nnodes > 1:
        console.print(here)
    resumed = (
        f"; resumed: {result.resumed_chunks} of {result.chunks} chunks were already done"
        if result.resumed_chunks
        else ""
    )
    console.print(
        f"predicted {result.rows:,} rows in {result.seconds:.2f} s ({result.rows_per_s:,.0f} rows/s, "
        f"{result.workers} worker(s) x {result.nnodes} node(s)){resumed} -> {result.output}",
        markup=False,
        soft_wrap=True,
    )
    return 0

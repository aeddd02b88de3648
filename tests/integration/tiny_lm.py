"""A tiny GPT trained by skylift on real prose in a few seconds, and reading a served model's metrics:
what the generation tests serve (bench, token limits, chat templates)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from skylift.spec import parse_spec
from skylift.train import fit
from tests.integration.serve_helpers import Server
from tests.integration.task_texts import PROSE

CONTEXT = 64


def train_tiny_lm(home: Path, name: str = "tiny-lm", epochs: int = 1, **data: Any) -> None:
    """Register `name` in `home`: BPE 300, blocks of CONTEXT tokens, 2 decoder blocks of width 32;
    `data` adds fields to the spec's data section (chat_template)."""
    corpus = home / "corpus"
    if not corpus.is_dir():
        corpus.mkdir(parents=True)
        for i in range(4):
            (corpus / f"part{i}.txt").write_text(PROSE * (i + 1))
    block = {"heads": 2, "mlp": "swiglu", "norm": "rms", "positions": "rope", "repeat": 2}
    spec = {
        "name": name,
        "task": "language_modeling",
        "data": {
            "train": str(corpus),
            "tokenizer": {"train": "bpe", "vocab_size": 300},
            "block_size": CONTEXT,
            "validation_split": 0.1,
            **data,
        },
        "model": {
            "layers": [
                {"token_embedding": {"dim": 32}},
                {"decoder_block": block},
                {"norm": {"kind": "rms"}},
                {"lm_head": {"tie_embedding": True}},
            ]
        },
        "train": {
            "epochs": epochs,
            "batch_size": 8,
            "optimizer": {"name": "adamw", "lr": 0.003},
            "threads": 1,
        },
        "distributed": {"workers": 1},
    }
    fit(parse_spec(spec), home=home, run_id=f"{name}-{time.monotonic_ns()}")


def metric(server: Server, key: str, name: str) -> float:
    """`skylift_NAME` summed over replicas, from /metrics."""
    _, _, raw = server.request("GET", "/metrics", headers={"Authorization": f"Bearer {key}"})
    prefix = f"skylift_{name}{{"
    return sum(float(line.split()[-1]) for line in raw.decode().splitlines() if line.startswith(prefix))


def settled_metric(server: Server, key: str, name: str, expected: float, timeout: float = 10) -> float:
    """`metric` once it equals `expected` (replicas publish their counters every moment), or the
    last value read when `timeout` passes."""
    deadline = time.monotonic() + timeout
    value = metric(server, key, name)
    while value != expected and time.monotonic() < deadline:
        time.sleep(0.2)
        value = metric(server, key, name)
    return value

"""Language-model training over a token file several times larger than a memory cap stays under it.

The cap is on the growth of `skylift train`'s peak RSS (VmHWM, the kernel's own high-water mark)
over a control run that differs only in corpus size: the same documents, tokenizer, model and steps
on a corpus ten times smaller. A process that imports torch already holds ~250 MB, so an absolute
cap several times smaller than the token file would need a multi-GB corpus; what the test pins down
is the part that must not grow with the data. A run that read the file into memory would grow by
the file's size (4x the cap; 4x more again as int64 ids).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import yaml

from skylift.data._tokenizer import TextTokenizer
from tests.integration.task_texts import PROSE

CAP_MB = 16
TOKEN_FILE_MB = 4 * CAP_MB  # at least; the big corpus's token file is checked to be this large
CHECKPOINT_STEPS = 30


def _corpus(path: Path, documents: int) -> None:
    """`documents` lines of 200,000 words drawn from PROSE (a seeded draw: the same lines each time)."""
    words = np.array(PROSE.split())
    rng = np.random.default_rng(0)
    with path.open("w", encoding="utf-8") as f:
        for _ in range(documents):
            f.write(" ".join(words[rng.integers(0, len(words), 200_000)]) + "\n")


def _peak_rss_mb_until_first_checkpoint(spec: Path, home: Path, run: str) -> float:
    """Run `skylift train` until its first mid-epoch last.pt, then stop it; its peak RSS in MB."""
    cmd = [sys.executable, "-m", "skylift", "train", str(spec), f"--home={home}", f"--run={run}"]
    log = spec.with_suffix(".log")
    with log.open("wb") as out:
        child = subprocess.Popen(cmd, env={**os.environ, "RAYON_NUM_THREADS": "1"}, stdout=out, stderr=out)
    last = home / "runs" / run / "checkpoints" / "last.pt"
    peak = 0.0
    deadline = time.monotonic() + 600
    try:
        while not last.exists():
            assert time.monotonic() < deadline, "no checkpoint within 600 s"
            peak = max(peak, _vm_hwm_mb(child.pid))
            assert child.poll() is None, log.read_text()
            time.sleep(0.05)
        peak = max(peak, _vm_hwm_mb(child.pid))
        assert child.poll() is None, "the run ended before its peak could be read"
    finally:
        child.send_signal(signal.SIGTERM)
        child.wait(timeout=60)
    return peak


def _vm_hwm_mb(pid: int) -> float:
    """The process's peak RSS so far; 0 once it has exited (a zombie has no VmHWM)."""
    status = Path(f"/proc/{pid}/status").read_text()
    return int(status.split("VmHWM:")[1].split()[0]) / 1024 if "VmHWM:" in status else 0.0


def test_training_over_a_token_file_4x_the_cap_grows_peak_rss_by_less_than_the_cap(
    tmp_path: Path, home: Path
) -> None:
    tokenizer = tmp_path / "tokenizer.json"  # bytes only: ~1 token per byte, a big token file fast
    tokenizer.write_text(TextTokenizer.train_bpe([PROSE], 260).to_json(), encoding="utf-8")
    peaks = {}
    for name, documents in (("small", 4), ("big", 40)):
        corpus = tmp_path / f"{name}.txt"
        _corpus(corpus, documents)
        spec = tmp_path / f"{name}.yaml"
        job = {
            "name": f"lm-{name}",
            "task": "language_modeling",
            "data": {"train": str(corpus), "tokenizer": str(tokenizer), "block_size": 64},
            "model": {
                "layers": [
                    {"token_embedding": {"dim": 32}},
                    {"decoder_block": {"heads": 2}},
                    {"norm": {"kind": "rms"}},
                    {"lm_head": {"tie_embedding": True}},
                ]
            },
            "train": {
                "epochs": 1,
                "batch_size": 8,
                "threads": 1,
                "register_best": False,
                "checkpoint": {"every_steps": CHECKPOINT_STEPS},
            },
            "distributed": {"workers": 1},
        }
        spec.write_text(yaml.safe_dump(job), encoding="utf-8")
        peaks[name] = _peak_rss_mb_until_first_checkpoint(spec, home, name)
    token_files = sorted((home / "cache" / "tokens").glob("*.tokens"), key=lambda p: p.stat().st_size)
    assert len(token_files) == 2
    assert token_files[-1].stat().st_size >= TOKEN_FILE_MB * 2**20
    assert peaks["big"] - peaks["small"] < CAP_MB, peaks

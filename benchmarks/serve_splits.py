"""Traffic splits and shadows against the same server without them: throughput at c=64, same run.

Issue 18 asks that a split and a shadow cost at most 5% of throughput at concurrency 64. Three
servers of the example MNIST MLP (784-256-128-10, registered untrained: the compute is the same),
`--replicas 2 --cache none`, each driven by `skylift bench serve -c 64 --protocol v2-binary`:

  plain          skylift serve mnist-mlp:1
  split 1=100    ... --split 1=100 --sticky-header X-Session       (the routing alone: one version)
  split          ... --split 1=90,2=10 --sticky-header X-Session   (the bench sends no session:
                 a random pick per request; the header is looked for on every request)
  split+shadow   ... --split 1=90,2=10 --shadow 3                  (every answer offered to v3)

in interleaved rounds (the order rotates each round), as other jobs on a shared machine move the
figures more between minutes than the configurations differ; the verdict is the median over rounds
of each configuration's requests/s divided by plain's in the same round. After each shadow run the
server's own counters say how many copies the shadow compared and how many it dropped.

Then, less exposed to other jobs: CPU time per request of the ASGI app in-process (no sockets;
64 one-row V2 binary requests at a time through `App.__call__`, the model's batches included),
best of 5 windows each, alternating: plain, a split of one version (`1=100`: the routing alone,
pick and count) and `1=90,2=10` (the routing and the canary's own batches: each version batches
apart, so a window of 64 requests runs two model calls instead of one).

Run: `python benchmarks/serve_splits.py [--rounds 3] [--duration 5]`
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
SRC = HERE.parent / "src"
CONFIGS = {
    "plain": [],
    "split 1=100": ["--split", "1=100", "--sticky-header", "X-Session"],
    "split": ["--split", "1=90,2=10", "--sticky-header", "X-Session"],
    "split+shadow": ["--split", "1=90,2=10", "--shadow", "3"],
}

REGISTER = r"""
import sys, torch
from skylift.models import build_model
from skylift.registry import Registry
from skylift.spec import load_spec
spec = load_spec(sys.argv[2]).model
for seed in (0, 1, 2):
    torch.manual_seed(seed)
    module = build_model(spec, (784,), 10).eval()
    meta = {"model": spec.model_dump(mode="json"), "input_shape": [784], "classes": list("0123456789")}
    Registry(sys.argv[1]).register("mnist-mlp", module.state_dict(), meta)
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _env(home: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(SRC), "SKYLIFT_HOME": str(home)}


@contextlib.contextmanager
def _serving(home: Path, extra: list[str]) -> Iterator[str]:
    port = _free_port()
    cmd = [sys.executable, "-m", "skylift", "serve", "mnist-mlp:1", "--no-auth", "--cache", "none"]
    cmd += ["--replicas", "2", "--port", str(port), *extra]
    proc = subprocess.Popen(cmd, env=_env(home), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
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
            raise RuntimeError(f"server {extra} did not get ready")
        yield url
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)


def _bench(url: str, home: Path, duration: float, concurrency: int) -> dict[str, object]:
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        cmd = [sys.executable, "-m", "skylift", "bench", "serve", url, "--model", "mnist-mlp"]
        cmd += ["--concurrency", str(concurrency), "--duration", str(duration), "--protocol", "v2-binary"]
        cmd += ["--json", out.name]
        subprocess.run(cmd, env=_env(home), check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        report: dict[str, object] = json.loads(Path(out.name).read_text())
    return report


def _shadow_counts(url: str) -> tuple[float, float, float]:
    """(copies compared, copies dropped, agreement) from the server's /metrics, all replicas."""
    time.sleep(1.2)  # the replicas publish their counters twice a second
    with urllib.request.urlopen(f"{url}/metrics", timeout=5) as r:
        text = r.read().decode()
    sums: dict[str, float] = {}
    for line in text.splitlines():
        for name in (
            "shadow_seconds_count",
            "shadow_dropped_total",
            "shadow_rows_total",
            "shadow_agreed_rows_total",
        ):
            if line.startswith(f"skylift_{name}{{"):
                sums[name] = sums.get(name, 0.0) + float(line.rsplit(" ", 1)[1])
    rows = sums.get("shadow_rows_total", 0.0)
    agreement = sums.get("shadow_agreed_rows_total", 0.0) / rows if rows else float("nan")
    return sums.get("shadow_seconds_count", 0.0), sums.get("shadow_dropped_total", 0.0), agreement


CPU_SCRIPT = r"""
import asyncio, json, sys, tempfile, time
from pathlib import Path
import numpy as np
from skylift.serve.app import App
from skylift.serve.config import ServeConfig
from skylift.serve.metrics import Metrics
from skylift.serve.repository import Repository
from skylift.serve.rollout import from_flags

home, split = Path(sys.argv[1]), sys.argv[2]
rollouts = from_flags(["mnist-mlp:1"], [split], (), None, "X-Session") if split != "plain" else ()
cfg = ServeConfig(models=("mnist-mlp:1",), home=home, state_dir=Path(tempfile.mkdtemp()), no_auth=True,
                  cache=None, cache_mb=0, rollouts=rollouts)
(cfg.state_dir / "repository.json").write_text(json.dumps(
    {"generation": 0, "models": {"mnist-mlp": {"ref": "mnist-mlp:1", "version": 1}}}))
metrics = Metrics(0, None)
repo = Repository(cfg, metrics)
app = App(cfg, repo, metrics)
x = np.random.default_rng(0).random((1, 784), dtype=np.float32)
size = {"binary_data_size": x.nbytes}
tensor = {"name": "input", "shape": [1, 784], "datatype": "FP32", "parameters": size}
head = json.dumps({"inputs": [tensor]}).encode()
body = head + x.tobytes()
headers = [(b"inference-header-content-length", str(len(head)).encode())]

def scope():
    return {"type": "http", "method": "POST", "path": "/v2/models/mnist-mlp/infer", "headers": headers,
            "client": ("127.0.0.1", 1)}

async def receive():
    return {"type": "http.request", "body": body, "more_body": False}

async def send(message):
    pass

async def run():
    await repo.sync()
    for _ in range(50):
        await asyncio.gather(*(app(scope(), receive, send) for _ in range(64)))
    best = []
    for _ in range(5):
        start = time.process_time()
        for _ in range(100):
            await asyncio.gather(*(app(scope(), receive, send) for _ in range(64)))
        best.append((time.process_time() - start) / 6400 * 1e6)
    return min(best)

import uvloop
print(uvloop.run(run()))
"""


def _cpu_us(home: Path, mode: str) -> float:
    env = {**_env(home), "OMP_NUM_THREADS": "1"}
    out = subprocess.run(
        [sys.executable, "-c", CPU_SCRIPT, str(home), mode], env=env, check=True, capture_output=True
    )
    return float(out.stdout.decode().split()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--duration", type=float, default=5.0)
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument("--cpu-rounds", type=int, default=3)
    args = p.parse_args()
    rates: dict[str, list[float]] = {name: [] for name in CONFIGS}
    p99: dict[str, list[float]] = {name: [] for name in CONFIGS}
    shadow: list[tuple[float, float, float]] = []
    names = list(CONFIGS)
    with tempfile.TemporaryDirectory(prefix="skylift-splits-") as tmp:
        home = Path(tmp)
        example = HERE.parent / "examples" / "mnist_mlp.yaml"
        subprocess.run([sys.executable, "-c", REGISTER, str(home), str(example)], env=_env(home), check=True)
        for i in range(args.rounds):
            for name in names[i % len(names) :] + names[: i % len(names)]:
                with _serving(home, CONFIGS[name]) as url:
                    report = _bench(url, home, args.duration, args.concurrency)
                    if name == "split+shadow":
                        shadow.append(_shadow_counts(url))
                rates[name].append(float(report["requests_per_s"]))  # type: ignore[arg-type]
                p99[name].append(float(report["latency_ms"]["p99"]))  # type: ignore[index]
                errors = report["errors"]
                print(
                    f"round {i + 1} {name}: {rates[name][-1]:,.0f} req/s, p99 {p99[name][-1]:.1f} ms, "
                    f"errors {errors or 'none'}",
                    flush=True,
                )
        cpu: dict[str, list[float]] = {"plain": [], "1=100": [], "1=90,2=10": []}
        for _ in range(args.cpu_rounds):
            for mode in cpu:
                cpu[mode].append(_cpu_us(home, mode))
            print("CPU us per request: " + ", ".join(f"{m} {v[-1]:.1f}" for m, v in cpu.items()), flush=True)
    print(
        f"\n| c={args.concurrency} v2-binary, 2 replicas | req/s (median) | p99 ms (median) "
        "| vs plain, same round (median; range) |"
    )
    print("|---|---|---|---|")
    for name in CONFIGS:
        ratios = [r / base for r, base in zip(rates[name], rates["plain"], strict=True)]
        print(
            f"| {name} | {statistics.median(rates[name]):,.0f} | {statistics.median(p99[name]):.1f} | "
            f"{statistics.median(ratios):.3f}x ({min(ratios):.3f}-{max(ratios):.3f}) |"
        )
    for compared, dropped, agreement in shadow:
        share = compared / max(compared + dropped, 1)
        print(
            f"shadow: {compared:,.0f} copies compared, {dropped:,.0f} dropped ({share:.0%} compared), "
            f"agreement {agreement:.3f}"
        )
    print("\n| CPU us per request, in-process (median) | plain | split 1=100 | split 1=90,2=10 |")
    print("|---|---|---|---|")
    o, one, two = (statistics.median(cpu[m]) for m in cpu)
    print(f"| | {o:.1f} | {one:.1f} ({one / o:.3f}x) | {two:.1f} ({two / o:.3f}x) |")


if __name__ == "__main__":
    main()

"""Serving images as files: PNG requests against 784-float JSON requests of the same model, one run.

Model: the MNIST MLP of examples/mnist_mlp.yaml behind a flatten layer, over (1, 28, 28) grey images
with ImagePrep(size=(28, 28), channels=1) recorded as its preprocessing, registered with random
weights into a temporary home (throughput does not depend on the weights). Served by
`skylift serve pets --no-auth --cache none --replicas R` (no cache: every request reaches the
model; the PNG bodies are identical).

Requests, each one image: a real 28x28 digit of builtin:digits28 (its PNG is ~250 bytes)
  floats      KServe V2 JSON of a decoded input: 784 floats in [0, 1) at 6 decimals (bench's own rows)
  png         a plain POST of the PNG file (`--body-file digit.png`, Content-Type: image/png)
  png-b64     KServe V2 JSON with the PNG as a base64 BYTES element (`--body-file request.json`)
driven by `skylift bench serve` at concurrency 16 and 64, `--rounds` interleaved rounds whose
order rotates; each cell is the median of its rounds.

Then, in-process (no HTTP), where a PNG's time goes: decoding one (`ImagePrep.decode`), and the
round trip of handing it to a 1-thread pool and to a 1-process pool (why decoding runs on threads).

Run: `python benchmarks/serve_media.py [--duration 5] [--rounds 3] [--replicas 1 2]`; prints markdown.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import io
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
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
MODEL = "pets"
KINDS = ("floats", "png", "png-b64")


def prepare(home: Path, folder: Path) -> bytes:
    """Register the model; write digit.png and request.json; return the PNG."""
    from PIL import Image

    from skylift.data._builtin import read_builtin
    from skylift.data._image import ImagePrep
    from skylift.models import build_model
    from skylift.registry import Registry
    from skylift.spec import ModelSpec, load_spec

    mlp = load_spec(HERE.parent / "examples" / "mnist_mlp.yaml").model.layers
    spec = ModelSpec(input_shape=[1, 28, 28], layers=[{"flatten": {}}, *[dict(layer) for layer in mlp]])
    module = build_model(spec, (1, 28, 28), 10).eval()
    prep = ImagePrep(size=(28, 28), channels=1)
    meta = {
        "model": spec.model_dump(mode="json"),
        "input_shape": [1, 28, 28],
        "classes": [str(i) for i in range(10)],
        "input": "image",
        "preprocessing": prep.to_json(),
    }
    Registry(home).register(MODEL, module.state_dict(), meta)
    digit = read_builtin("digits28").x[0].reshape(28, 28)
    buf = io.BytesIO()
    Image.fromarray((digit * 255).round().astype(np.uint8), "L").save(buf, format="PNG")
    png = buf.getvalue()
    (folder / "digit.png").write_bytes(png)
    tensor = {"name": "image", "shape": [1], "datatype": "BYTES", "data": [base64.b64encode(png).decode()]}
    (folder / "request.json").write_text(json.dumps({"inputs": [tensor]}))
    return png


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def serving(home: Path, replicas: int, log: Path) -> Iterator[str]:
    port = free_port()
    cmd = [sys.executable, "-m", "skylift", "serve", MODEL, "--no-auth", "--cache", "none"]
    cmd += ["--replicas", str(replicas), "--port", str(port)]
    env = {**os.environ, "SKYLIFT_HOME": str(home)}
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            with (
                contextlib.suppress(OSError),
                urllib.request.urlopen(url + "/v2/health/ready", timeout=2) as r,
            ):
                if r.status == 200:
                    break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"server did not start: {log.read_text()[-1500:]}")
            time.sleep(0.2)
        yield url
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)  # the group this script started
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        time.sleep(0.5)


def bench(url: str, kind: str, folder: Path, concurrency: int, duration: float) -> dict[str, Any]:
    """One `skylift bench serve` run (a real CLI process) -> its JSON report."""
    cmd = [sys.executable, "-m", "skylift", "bench", "serve", url, "--model", MODEL, "-c", str(concurrency)]
    cmd += ["--duration", str(duration), "--warmup", "1", "--json", "-"]
    if kind == "png":
        cmd += ["--body-file", str(folder / "digit.png")]
    elif kind == "png-b64":
        cmd += ["--body-file", str(folder / "request.json")]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 120)
    if not done.stdout.strip().startswith("{"):
        raise RuntimeError(f"bench failed ({done.returncode}): {done.stderr.strip()[-800:]}")
    report: dict[str, Any] = json.loads(done.stdout)
    if report["errors"]:
        raise RuntimeError(f"{kind}: errors {report['errors']}")
    return report


def _decode(png: bytes) -> np.ndarray:
    from skylift.data._image import ImagePrep

    return ImagePrep(size=(28, 28), channels=1).decode(png)


def in_process(png: bytes, n: int = 3000) -> dict[str, float]:
    """Microseconds per PNG: decoding it, and a pool round trip of the decode (1 thread, 1 process)."""
    from skylift.data._image import ImagePrep

    prep = ImagePrep(size=(28, 28), channels=1)
    prep.decode(png)
    out: dict[str, float] = {}
    tick = time.perf_counter()
    for _ in range(n):
        prep.decode(png)
    out["decode inline"] = (time.perf_counter() - tick) / n * 1e6
    with ThreadPoolExecutor(1) as threads:
        threads.submit(prep.decode, png).result()
        tick = time.perf_counter()
        for _ in range(n):
            threads.submit(prep.decode, png).result()
        out["decode on a 1-thread pool (round trip)"] = (time.perf_counter() - tick) / n * 1e6
    with ProcessPoolExecutor(1) as procs:
        procs.submit(_decode, png).result()
        tick = time.perf_counter()
        for _ in range(n // 3):
            procs.submit(_decode, png).result()
        out["decode on a 1-process pool (round trip)"] = (time.perf_counter() - tick) / (n // 3) * 1e6
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=float, default=5.0)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--replicas", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--concurrency", type=int, nargs="+", default=[16, 64])
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="serve-media-") as tmp:
        folder = Path(tmp)
        png = prepare(folder / "home", folder)
        print(f"PNG: {len(png)} bytes; V2 JSON of 784 floats: see bench's bytes a request\n")
        for replicas in args.replicas:
            results: dict[tuple[str, int], list[dict[str, Any]]] = {}
            with serving(folder / "home", replicas, folder / f"serve-{replicas}.log") as url:
                for r in range(args.rounds):
                    order = KINDS[r % len(KINDS) :] + KINDS[: r % len(KINDS)]
                    for c in args.concurrency:
                        for kind in order:
                            results.setdefault((kind, c), []).append(
                                bench(url, kind, folder, c, args.duration)
                            )
            print(f"### {replicas} replica(s), medians of {args.rounds} rounds\n")
            print("| requests | bytes | concurrency | req/s | p50 ms | p99 ms | vs floats |")
            print("|---|---|---|---|---|---|---|")
            for c in args.concurrency:
                base = statistics.median(x["requests_per_s"] for x in results[("floats", c)])
                for kind in KINDS:
                    runs = results[(kind, c)]
                    rps = statistics.median(x["requests_per_s"] for x in runs)
                    p50 = statistics.median(x["latency_ms"]["p50"] for x in runs)
                    p99 = statistics.median(x["latency_ms"]["p99"] for x in runs)
                    size = runs[0].get("request_bytes", "")
                    print(
                        f"| {kind} | {size} | {c} | {rps:,.0f} | {p50:.2f} | {p99:.2f} | {rps / base:.2f}x |"
                    )
            print()
        print("### In-process, per PNG (µs)\n")
        for what, us in in_process(png).items():
            print(f"- {what}: {us:,.1f}")


if __name__ == "__main__":
    main()

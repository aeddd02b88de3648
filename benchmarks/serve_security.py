"""What secure serving costs, in one run: auth on vs off, TLS vs plain, and the response cache on a
workload where half the requests repeat one input.

Each row is `skylift serve mnist-mlp --replicas 2` (fresh process) driven by `skylift bench serve
-c 64 --protocol v2-binary` for `--duration` seconds. Per-key rate limits are off (`--rate-limit 0`)
so they do not cap the figures; the cache is off except in the cache row.
Run: `python benchmarks/serve_security.py [--duration 5]`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import signal
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "mnist_mlp.yaml"
MODEL = "mnist-mlp"


@contextlib.contextmanager
def serving(home: Path, args: list[str], key: str | None) -> Iterator[str]:
    log = home / f"serve-{time.monotonic_ns()}.log"
    cmd = [sys.executable, "-m", "skylift", "serve", MODEL, "--port", "0", "--replicas", "2", *args]
    with log.open("wb") as out:
        proc = subprocess.Popen(
            cmd,
            env={**os.environ, "SKYLIFT_HOME": str(home)},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 120
        url = None
        while url is None and time.monotonic() < deadline:
            found = re.search(r"on (https?://[\d.]+:\d+)", log.read_text())
            url = found.group(1) if found else None
            time.sleep(0.1)
        assert url, log.read_text()
        ctx = (
            ssl.create_default_context(cafile=str(home / "tls" / "tls-cert.pem")) if "https" in url else None
        )
        while time.monotonic() < deadline:
            req = urllib.request.Request(f"{url}/v2/health/ready", headers={"X-API-Key": key} if key else {})
            with contextlib.suppress(OSError):
                if urllib.request.urlopen(req, timeout=2, context=ctx).status == 200:
                    break
            time.sleep(0.1)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=60)
        time.sleep(0.5)


def bench(url: str, extra: list[str], duration: float) -> dict[str, Any]:
    cmd = [
        sys.executable,
        "-m",
        "skylift",
        "bench",
        "serve",
        url,
        "--model",
        MODEL,
        "-c",
        "64",
        "--protocol",
        "v2-binary",
        "--duration",
        str(duration),
        "--warmup",
        "1",
        "--json",
        "-",
        *extra,
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 120)
    if not done.stdout.strip().startswith("{"):
        raise RuntimeError(done.stderr[-800:])
    report: dict[str, Any] = json.loads(done.stdout)
    return report


def cache_hit_rate(url: str, key: str) -> float:
    with urllib.request.urlopen(urllib.request.Request(f"{url}/metrics", headers={"X-API-Key": key})) as r:
        text = r.read().decode()
    hits = sum(float(v) for v in re.findall(r"^skylift_cache_hits_total\{[^}]*\} (\S+)", text, re.M))
    misses = sum(float(v) for v in re.findall(r"^skylift_cache_misses_total\{[^}]*\} (\S+)", text, re.M))
    return hits / max(hits + misses, 1.0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--duration", type=float, default=5.0)
    args = ap.parse_args()
    from skylift.security.apikeys import KeyStore
    from skylift.spec import load_spec
    from skylift.train import fit

    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        with contextlib.redirect_stdout(sys.stderr):
            fit(load_spec(EXAMPLE, ["train.epochs=1"]), home=home)
        key, _ = KeyStore(home / "keys.json").create("bench", ("predict", "metrics"))
        cert = str(home / "tls" / "tls-cert.pem")
        off = ["--rate-limit", "0", "--cache", "none"]
        auth = ["--api-key", key]
        rows = [
            ("plain, no auth", ["--no-auth", *off], []),
            ("plain, API key", off, auth),
            ("TLS, API key", [*off, "--tls-self-signed"], [*auth, "--cacert", cert]),
            ("API key, 50% repeated, cache off", off, [*auth, "--repeat", "0.5"]),
            ("API key, 50% repeated, cache on", ["--rate-limit", "0"], [*auth, "--repeat", "0.5"]),
        ]
        results = []
        for label, serve_args, bench_args in rows:
            with serving(home, serve_args, None if "--no-auth" in serve_args else key) as url:
                report = bench(url, bench_args, args.duration)
                hit = cache_hit_rate(url, key) if "cache on" in label else None
            results.append((label, report, hit))
    base = {r[0]: r[1]["requests_per_s"] for r in results}
    print("| configuration | requests/s | p50 ms | p99 ms | errors | vs reference | cache hit rate |")
    print("|---|---|---|---|---|---|---|")
    reference = {
        "plain, API key": "plain, no auth",
        "TLS, API key": "plain, API key",
        "API key, 50% repeated, cache on": "API key, 50% repeated, cache off",
    }
    for label, r, hit in results:
        ref = reference.get(label)
        ratio = f"{r['requests_per_s'] / base[ref]:.2f}x of '{ref}'" if ref else "-"
        lat = r["latency_ms"]
        errors = sum(r["errors"].values())
        rate = "-" if hit is None else f"{hit:.0%}"
        cells = [label, f"{r['requests_per_s']:,.0f}", f"{lat['p50']:.2f}", f"{lat['p99']:.2f}", str(errors)]
        print("| " + " | ".join([*cells, ratio, rate]) + " |")


if __name__ == "__main__":
    main()

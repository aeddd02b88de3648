"""Load generator for inference servers: `skylift bench serve` as a library.

Client side only: it speaks KServe V2 (JSON and binary tensors) and TF-Serving REST over plain
HTTP/1.1 keep-alive connections, so it measures any server of those protocols, skylift's or not.

    from skylift.loadgen import BenchConfig, run_bench
    report = run_bench(BenchConfig("http://127.0.0.1:8000", "mnist-mlp", concurrency=64))
    print(report.requests_per_s, report.latency_ms.p99)
"""

from __future__ import annotations

from skylift.loadgen._config import PROTOCOLS, BenchConfig, Protocol, auto_processes
from skylift.loadgen._report import BenchReport, Latency, percentile
from skylift.loadgen._runner import run_bench

__all__ = [
    "PROTOCOLS",
    "BenchConfig",
    "BenchReport",
    "Latency",
    "Protocol",
    "auto_processes",
    "percentile",
    "run_bench",
]

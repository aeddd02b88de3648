"""Load generator for inference servers: `skylift bench serve` as a library.

Client side only: it speaks KServe V2 (JSON and binary tensors), TF-Serving REST and OpenAI's
streamed completions (`openai-completions`, `openai-chat`: a StreamReport with time to first token,
inter-token latency and tokens/s) over plain HTTP/1.1 keep-alive connections, so it measures any
server of those protocols, skylift's or not.

    from skylift.loadgen import BenchConfig, run_bench
    report = run_bench(BenchConfig("http://127.0.0.1:8000", "mnist-mlp", concurrency=64))
    print(report.requests_per_s, report.latency_ms.p99)
"""

from __future__ import annotations

from skylift.loadgen._config import PROTOCOLS, BenchConfig, Protocol, auto_processes
from skylift.loadgen._report import BenchReport, Latency, percentile
from skylift.loadgen._runner import run_bench
from skylift.loadgen._stream_report import StreamReport

__all__ = [
    "PROTOCOLS",
    "BenchConfig",
    "BenchReport",
    "Latency",
    "Protocol",
    "StreamReport",
    "auto_processes",
    "percentile",
    "run_bench",
]

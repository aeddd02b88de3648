"""The figures of a load test: percentiles, and the report merged from every client process."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

    from skylift.loadgen._worker import WorkerResult

PERCENTILES = (50.0, 90.0, 99.0)


def percentile(sorted_values: Sequence[float] | np.ndarray, p: float) -> float | None:
    """Nearest-rank percentile of ascending `sorted_values`: the smallest value with at least p% of
    the values at or below it (p50 of [1, 2, 3, 4] is 2; p100 is the max). None when empty."""
    if not 0 <= p <= 100:
        raise ValueError(f"p must be in [0, 100], got {p}")
    n = len(sorted_values)
    if n == 0:
        return None
    rank = max(1, math.ceil(p / 100 * n - 1e-9))  # 1e-9: 99% of 100 is rank 99, not 100
    return float(sorted_values[min(rank, n) - 1])


@dataclass(frozen=True)
class Latency:
    """Milliseconds of the successful (2xx) responses; None when there were none."""

    p50: float | None
    p90: float | None
    p99: float | None
    max: float | None
    mean: float | None

    @classmethod
    def of(cls, seconds: np.ndarray) -> Latency:
        import numpy as np

        ms = np.sort(seconds) * 1e3
        if ms.size == 0:
            return cls(None, None, None, None, None)
        p50, p90, p99 = (percentile(ms, p) for p in PERCENTILES)
        return cls(p50, p90, p99, float(ms[-1]), float(ms.mean()))


@dataclass(frozen=True)
class BenchReport:
    """One load test's result; `to_dict()` is the JSON report."""

    url: str
    model: str
    protocol: str
    rows: int
    concurrency: int
    processes: int
    duration_s: float
    """Measured seconds (may end early when `requests` was reached)."""
    requests: int
    """Requests measured: every HTTP response plus every request that got none."""
    ok: int
    """2xx responses."""
    requests_per_s: float
    """HTTP responses per second, any status (as wrk counts)."""
    ok_per_s: float
    rows_per_s: float
    """Rows of the 2xx responses per second."""
    latency_ms: Latency
    statuses: dict[str, int]
    """Every HTTP response by status."""
    errors: dict[str, int]
    """Non-2xx responses by status, and requests without a response by kind
    (connect, closed, timeout, protocol)."""
    error_samples: dict[str, str] = field(default_factory=dict)
    """The first error body or message per key of `errors`."""
    request_bytes: int = 0
    """Size of one request on the wire (head + body)."""
    client_loop: str = "asyncio"
    client_cpu: list[float] = field(default_factory=list)
    """Share of one core each client process used; near 1.0 the generator limits the figures."""
    versions: dict[str, dict[str, int]] = field(default_factory=dict)
    """Responses by the model version that answered (X-Model-Version; a traffic split's shares):
    version -> {"responses": n, "ok": 2xx responses}. Empty when the server sends no such header."""

    @property
    def failed(self) -> int:
        """Requests without a 2xx answer: error statuses, and requests that got no response."""
        return self.requests - self.ok

    @property
    def mostly_failed(self) -> bool:
        """More than half the requests failed (or none was measured): the figures describe the
        errors, not the server's throughput."""
        return self.failed * 2 > self.requests or self.ok == 0

    @property
    def saturated(self) -> bool:
        """Some client process was busy >= 90% of the time: the figures may be the client's limit."""
        return any(c >= 0.9 for c in self.client_cpu)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def merge(
    results: Sequence[WorkerResult],
    *,
    url: str,
    model: str,
    protocol: str,
    rows: int,
    concurrency: int,
    measure_from: float,
    request_bytes: int = 0,
) -> BenchReport:
    """One report from every process's result; the duration is the last process's end."""
    import numpy as np

    statuses: dict[int, int] = {}
    failures: dict[str, int] = {}
    samples: dict[str, str] = {}
    versions: dict[str, dict[str, int]] = {}
    for r in results:
        for version, (seen, ok_seen) in r.versions.items():
            counts = versions.setdefault(version, {"responses": 0, "ok": 0})
            counts["responses"] += seen
            counts["ok"] += ok_seen
        for code, n in r.statuses.items():
            statuses[code] = statuses.get(code, 0) + n
        for kind, n in r.failures.items():
            failures[kind] = failures.get(kind, 0) + n
        for key, text in r.samples.items():
            samples.setdefault(key, text)
    latencies = np.concatenate(
        [np.frombuffer(r.latencies, dtype=np.float64) for r in results] or [np.zeros(0)]
    )
    duration = max((r.measured_until for r in results), default=measure_from) - measure_from
    duration = max(duration, 1e-9)
    responses = sum(statuses.values())
    ok = sum(n for code, n in statuses.items() if 200 <= code < 300)
    errors = {str(code): n for code, n in sorted(statuses.items()) if not 200 <= code < 300}
    errors.update(sorted(failures.items()))
    return BenchReport(
        url=url,
        model=model,
        protocol=protocol,
        rows=rows,
        concurrency=concurrency,
        processes=len(results),
        duration_s=round(duration, 6),
        requests=responses + sum(failures.values()),
        ok=ok,
        requests_per_s=responses / duration,
        ok_per_s=ok / duration,
        rows_per_s=ok * rows / duration,
        latency_ms=Latency.of(latencies),
        statuses={str(code): n for code, n in sorted(statuses.items())},
        errors=errors,
        error_samples={k: v for k, v in samples.items() if k in errors},
        request_bytes=request_bytes,
        client_loop=results[0].loop if results else "asyncio",
        client_cpu=[round(r.cpu_s / duration, 3) for r in results],
        versions=dict(sorted(versions.items(), key=lambda kv: (len(kv[0]), kv[0]))),  # 2 before 10
    )

"""Percentiles (nearest rank) and the report merged from several client processes."""

from __future__ import annotations

from array import array

import numpy as np
import pytest

from skylift.loadgen import percentile
from skylift.loadgen._report import Latency, merge
from skylift.loadgen._worker import WorkerResult


def test_nearest_rank_percentiles() -> None:
    assert percentile([1, 2, 3, 4], 50) == 2
    assert percentile([1, 2, 3, 4], 75) == 3
    assert percentile([1, 2, 3, 4], 76) == 4
    assert percentile([1, 2, 3, 4], 100) == 4
    assert percentile([1, 2, 3, 4], 0) == 1
    assert percentile([7.5], 99) == 7.5
    assert percentile([], 50) is None
    values = np.arange(1, 101, dtype=float)
    assert [percentile(values, p) for p in (50, 90, 99, 99.9)] == [50, 90, 99, 100]
    big = np.arange(1, 1001, dtype=float)
    assert percentile(big, 99.9) == 999 and percentile(big, 99) == 990
    for p in (-1, 100.5):
        with pytest.raises(ValueError):
            percentile([1.0], p)


def test_latency_in_milliseconds() -> None:
    lat = Latency.of(np.array([0.003, 0.001, 0.002, 0.010]))
    assert (lat.p50, lat.p90, lat.p99, lat.max) == pytest.approx((2.0, 10.0, 10.0, 10.0))
    assert lat.mean == pytest.approx(4.0)
    assert Latency.of(np.zeros(0)) == Latency(None, None, None, None, None)


def result(lat: list[float], statuses: dict[int, int], until: float, **kw: object) -> WorkerResult:
    return WorkerResult(statuses=statuses, latencies=array("d", lat).tobytes(), measured_until=until, **kw)  # type: ignore[arg-type]


def test_merge_sums_processes_and_keys_errors_by_status() -> None:
    a = result([0.001] * 3, {200: 3, 503: 2}, until=12.0, samples={"503": "busy"}, cpu_s=1.0)
    b = result([0.002], {200: 1, 400: 1}, until=11.0, failures={"timeout": 2}, samples={"timeout": "slow"})
    r = merge([a, b], url="u", model="m", protocol="v2-json", rows=4, concurrency=8, measure_from=10.0)
    assert r.duration_s == 2.0 and r.processes == 2
    assert r.statuses == {"200": 4, "400": 1, "503": 2}
    assert r.errors == {"400": 1, "503": 2, "timeout": 2}
    assert r.error_samples == {"503": "busy", "timeout": "slow"}
    assert r.requests == 9 and r.ok == 4
    assert r.requests_per_s == pytest.approx(3.5) and r.ok_per_s == pytest.approx(2.0)
    assert r.rows_per_s == pytest.approx(8.0)
    assert r.latency_ms.p50 == pytest.approx(1.0) and r.latency_ms.max == pytest.approx(2.0)
    assert r.client_cpu == [0.5, 0.0] and not r.saturated
    d = r.to_dict()
    assert d["latency_ms"]["p99"] == pytest.approx(2.0) and d["errors"]["timeout"] == 2


def test_merge_of_nothing_answered() -> None:
    r = merge(
        [result([], {}, until=1.0, failures={"connect": 5})],
        url="u",
        model="m",
        protocol="v1",
        rows=1,
        concurrency=1,
        measure_from=0.0,
    )
    assert r.ok == 0 and r.requests == 5 and r.requests_per_s == 0 and r.latency_ms.p50 is None

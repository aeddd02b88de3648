"""The live side of a rollout in one replica: it picks each request's version, counts every
version's answers, and asks the guard about the canaries.

The HTTP layer asks `pick` for the version of a request that names none, and tells `record` how it
was answered. Answers are only noted per request (three array appends) and counted, with numpy, on the
repository's tick, twice a second, or at once when one fails: a failure is when a canary's error rate
can break its guard. A canary that breaks its guard stops getting traffic from this replica at once;
the repository (`on_broken`) then writes the rollback to the shared state, so every replica follows,
and audits and logs it once.
"""

from __future__ import annotations

import time
from array import array
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Generic, TypeVar

import numpy as np

from skylift.serve.guard import Window
from skylift.serve.metrics import LATENCY_BUCKETS
from skylift.serve.splits import Picker

if TYPE_CHECKING:
    from skylift.serve.metrics import Metrics
    from skylift.serve.rollout import Rollout
    from skylift.serve.runtimes._base import Histogram
    from skylift.serve.shadow import ShadowStats

_M = TypeVar("_M")
_MOST_PENDING = 65_536  # answers noted between ticks before they are counted anyway
_BOUNDS = np.asarray(LATENCY_BUCKETS)
OnBroken = Callable[[str, int, int, str], None]
"""(model, canary version, the weight it had, why) when a guard fires."""


@dataclass
class VersionStats:
    """One version's answers to routed requests on this replica (kept across rollout changes)."""

    requests: dict[int, int] = field(default_factory=dict)
    """HTTP status -> count."""
    errors: int = 0
    """5xx answers: the model failed, ran past the deadline, or its queue was full."""
    latency: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS) + 1))
    latency_sum: float = 0.0


class Traffic(Generic[_M]):
    """One model name's routed requests on this replica. Event loop only (not thread-safe)."""

    def __init__(
        self,
        rollout: Rollout,
        primary: _M,
        versions: dict[int, _M],
        stats: dict[int, VersionStats],
        on_broken: OnBroken,
    ) -> None:
        self.rollout = rollout
        self.split = rollout.split
        self.primary = primary
        self._versions = versions
        self._picker = Picker(self.split, versions) if self.split else None
        self.stats = stats
        self._noted: tuple[array[int], array[int], array[float]] = (array("q"), array("q"), array("d"))
        """(versions, statuses, seconds) of the answers not yet counted: three appends per answer,
        counted with numpy on the tick."""
        self._most_pending = _MOST_PENDING
        self._on_broken = on_broken
        guard = self.split.guard if self.split else None
        self._windows = {v: Window(guard) for v in self.split.canaries()} if self.split and guard else {}

    def pick(self, headers: list[tuple[bytes, bytes]]) -> _M:
        return self._picker.pick(headers) if self._picker is not None else self.primary

    def record(self, version: int, status: int, seconds: float) -> None:
        """Note a routed request's answer; a failed one is counted at once and asks the guard."""
        versions, statuses, times = self._noted
        versions.append(version)
        statuses.append(status)
        times.append(seconds)
        if status >= 500 or len(times) >= self._most_pending:
            self._count()
            window = self._windows.get(version)
            if window is not None and status >= 500:  # the error rate moves up only on a failure
                self._judge(version, window, latency=False)  # (no p99 sort per request)

    def _count(self) -> None:
        versions, statuses, times = self._noted
        if not times:
            return
        self._noted = (array("q"), array("q"), array("d"))
        version_N = np.frombuffer(versions, dtype=np.int64)
        status_N = np.frombuffer(statuses, dtype=np.int64)
        seconds_N = np.frombuffer(times, dtype=np.float64)
        bucket_N = np.searchsorted(_BOUNDS, seconds_N, side="left")  # as bisect_left
        now = time.monotonic()
        for version in np.unique(version_N).tolist():
            mine_N = version_N == version
            status_n, seconds_n = status_N[mine_N], seconds_N[mine_N]
            stats = self.stats.get(version)
            if stats is None:
                stats = self.stats[version] = VersionStats()
            codes, counts = np.unique(status_n, return_counts=True)
            for code, count in zip(codes.tolist(), counts.tolist(), strict=True):
                stats.requests[code] = stats.requests.get(code, 0) + count
            added = np.bincount(bucket_N[mine_N], minlength=len(_BOUNDS) + 1)
            stats.latency = [a + b for a, b in zip(stats.latency, added.tolist(), strict=True)]
            stats.latency_sum += float(seconds_n.sum())
            stats.errors += int((status_n >= 500).sum())
            window = self._windows.get(version)
            if window is not None:
                for seconds, code in zip(seconds_n.tolist(), status_n.tolist(), strict=True):
                    window.record(seconds, code >= 500, now)

    def retire(self) -> None:
        """Replaced by another rollout: count what is noted, and from now on each late answer at once
        (requests in flight still hold this object; the per-version counters are shared)."""
        self._most_pending = 0
        self._count()

    def tick(self) -> None:
        """Count the answers noted, and judge every canary, p99 included (twice a second)."""
        self._count()
        for version, window in list(self._windows.items()):
            self._judge(version, window, latency=True)

    def _judge(self, version: int, window: Window, latency: bool) -> None:
        why = window.verdict(latency=latency)
        if why is None or self.split is None:
            return
        weight = self.split.weight(version)
        self.split = self.split.without(version)
        self._picker = Picker(self.split, self._versions)  # this replica stops sending it traffic now
        del self._windows[version]
        self._on_broken(self.rollout.model, version, weight, why)

    def weights(self) -> dict[int, int]:
        return dict(self.split.weights) if self.split else {}


def publish(
    metrics: Metrics,
    versions: dict[tuple[str, int], VersionStats],
    shadows: dict[tuple[str, int], ShadowStats],
    weights: dict[tuple[str, int], int],
    rollbacks: dict[tuple[str, int], int],
) -> None:
    """Put the per-version and shadow figures (keyed by (model, version)) into `metrics`."""
    series: dict[str, dict[str, float]] = {}
    histograms: dict[str, dict[str, Histogram]] = {}

    def put(name: str, labels: str, value: float) -> None:
        series.setdefault(name, {})[labels] = value

    for (model, version), s in sorted(versions.items()):
        labels = f'model="{model}",version="{version}"'
        for status, count in sorted(s.requests.items()):
            put("version_requests_total", f'{labels},status="{status}"', count)
        put("version_errors_total", labels, s.errors)
        histograms.setdefault("version_request_seconds", {})[labels] = (
            LATENCY_BUCKETS,
            tuple(s.latency),
            s.latency_sum,
        )
    for (model, version), weight in sorted(weights.items()):
        put("split_weight", f'model="{model}",version="{version}"', weight)
    for (model, version), count in sorted(rollbacks.items()):
        put("rollbacks_total", f'model="{model}",version="{version}"', count)
    for (model, version), sh in sorted(shadows.items()):
        labels = f'model="{model}",version="{version}"'
        for name, value in (
            ("shadow_copies_total", sh.copies),
            ("shadow_dropped_total", sh.dropped),
            ("shadow_failed_total", sh.failed),
            ("shadow_rows_total", sh.rows),
            ("shadow_agreed_rows_total", sh.agreed),
        ):
            put(name, labels, value)
        if sh.rows:
            put("shadow_agreement", labels, round(sh.agreed / sh.rows, 6))
        histograms.setdefault("shadow_seconds", {})[labels] = (
            LATENCY_BUCKETS,
            tuple(sh.latency),
            sh.latency_sum,
        )
    metrics.labelled = series
    metrics.labelled_histograms = histograms

"""Server metrics in Prometheus text format, per replica, merged from every replica's snapshot file.

Each replica counts in its own memory (no locks on the hot path: one event loop per process)
and writes a JSON snapshot to the shared state folder about once a second; a scrape answered by
any replica renders every replica's latest snapshot with a `replica` label.
"""

from __future__ import annotations

import bisect
import json
import os
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from skylift import _atomic

SUPERVISOR_FILE = "supervisor.json"
"""The supervisor's own series (replica counts, autoscaling), rendered by any replica's /metrics."""
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def rss_bytes(pid: int | str = "self") -> int:
    """Resident set size of a process, from /proc (0 where unavailable)."""
    try:
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * _PAGE
    except (OSError, IndexError, ValueError):
        return 0


class Metrics:
    def __init__(self, replica: int, folder: Path | None) -> None:
        self.replica = replica
        self.folder = folder
        self.requests: defaultdict[str, int] = defaultdict(int)  # "route|status" -> count
        self.latency: defaultdict[str, list[int]] = defaultdict(lambda: [0] * (len(LATENCY_BUCKETS) + 1))
        self.latency_sum: defaultdict[str, float] = defaultdict(float)
        self.batches = [0] * (len(BATCH_BUCKETS) + 1)
        self.batch_rows = 0
        self.extra: dict[str, float] = {}
        """Gauges and counters set by others, e.g. queue depth, cache hits."""
        self.histograms: dict[str, tuple[tuple[float, ...], tuple[int, ...], float]] = {}
        """Histograms set by others (a generator's latencies): name -> (bounds, counts per bucket, sum)."""
        self.labelled: dict[str, dict[str, float]] = {}
        """Series with labels of their own (per model version): name -> {'model="m",version="2"': value}."""
        self.labelled_histograms: dict[str, dict[str, tuple[tuple[float, ...], tuple[int, ...], float]]] = {}
        """Histograms with labels of their own: name -> {labels: (bounds, counts per bucket, sum)}."""

    def observe(self, route: str, status: int, seconds: float) -> None:
        self.requests[f"{route}|{status}"] += 1
        self.latency[route][bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1
        self.latency_sum[route] += seconds

    def observe_batch(self, rows: int) -> None:
        self.batches[bisect.bisect_left(BATCH_BUCKETS, rows)] += 1
        self.batch_rows += rows

    def snapshot(self) -> dict[str, Any]:
        return {
            "replica": self.replica,
            "pid": os.getpid(),  # the supervisor tells a fresh replica's snapshot from its predecessor's
            "time": time.time(),  # when taken: the supervisor's load rates divide by it
            "requests": dict(self.requests),
            "latency": dict(self.latency),
            "latency_sum": dict(self.latency_sum),
            "batches": self.batches,
            "batch_rows": self.batch_rows,
            "rss_bytes": rss_bytes(),
            "extra": self.extra,
            "histograms": self.histograms,
            "labelled": self.labelled,
            "labelled_histograms": self.labelled_histograms,
        }

    def publish(self) -> None:
        if self.folder is not None:
            _atomic.write_json(self.folder / f"metrics-{self.replica}.json", self.snapshot())

    def render(self) -> str:
        """Prometheus text for every replica: this one live, the others from their snapshots."""
        snaps = {self.replica: self.snapshot()}
        if self.folder is not None:
            for path in sorted(self.folder.glob("metrics-*.json")):
                try:
                    snap = json.loads(path.read_text())
                except (OSError, ValueError):
                    continue  # a replica being replaced; its next snapshot will be back
                snaps.setdefault(int(snap["replica"]), snap)
        text = _render([snaps[k] for k in sorted(snaps)])
        return text + _render_supervisor(self.folder / SUPERVISOR_FILE) if self.folder else text


def _render_supervisor(path: Path) -> str:
    """Series the supervisor writes as {"series": [[name, type, help, labels, value], ...]}."""
    try:
        series = json.loads(path.read_text())["series"]
    except (OSError, ValueError, KeyError):
        return ""  # a server without a supervisor file (tests), or one being replaced
    lines: list[str] = []
    named: set[str] = set()
    for name, kind, text, labels, value in series:
        if name not in named:
            named.add(name)
            lines += [f"# HELP skylift_{name} {text}", f"# TYPE skylift_{name} {kind}"]
        shown = ",".join(f'{k}="{v}"' for k, v in labels.items())
        lines.append(f"skylift_{name}{{{shown}}} {value}" if shown else f"skylift_{name} {value}")
    return "\n".join(lines) + "\n" if lines else ""


def _histogram(
    lines: list[str], name: str, labels: str, buckets: tuple[float, ...], counts: list[int], total: float
) -> None:
    running = 0
    for bound, count in zip((*buckets, float("inf")), counts, strict=True):
        running += count
        le = "+Inf" if bound == float("inf") else repr(bound)
        lines.append(f'{name}_bucket{{{labels},le="{le}"}} {running}')
    lines.append(f"{name}_sum{{{labels}}} {total}")
    lines.append(f"{name}_count{{{labels}}} {running}")


def _render(snaps: list[dict[str, Any]]) -> str:
    lines = [
        "# HELP skylift_requests_total HTTP requests by route and status.",
        "# TYPE skylift_requests_total counter",
    ]
    for s in snaps:
        for key, count in sorted(s["requests"].items()):
            route, status = key.rsplit("|", 1)
            labels = f'replica="{s["replica"]}",route="{route}",status="{status}"'
            lines.append(f"skylift_requests_total{{{labels}}} {count}")
    lines += ["# HELP skylift_request_seconds Request latency.", "# TYPE skylift_request_seconds histogram"]
    for s in snaps:
        for route, counts in sorted(s["latency"].items()):
            labels = f'replica="{s["replica"]}",route="{route}"'
            _histogram(
                lines, "skylift_request_seconds", labels, LATENCY_BUCKETS, counts, s["latency_sum"][route]
            )
    lines += ["# HELP skylift_batch_rows Rows per model batch.", "# TYPE skylift_batch_rows histogram"]
    for s in snaps:
        labels = f'replica="{s["replica"]}"'
        _histogram(
            lines,
            "skylift_batch_rows",
            labels,
            tuple(map(float, BATCH_BUCKETS)),
            s["batches"],
            s["batch_rows"],
        )
    lines += [
        "# HELP skylift_replica_rss_bytes Resident memory of each replica.",
        "# TYPE skylift_replica_rss_bytes gauge",
    ]
    lines += [f'skylift_replica_rss_bytes{{replica="{s["replica"]}"}} {s["rss_bytes"]}' for s in snaps]
    for name in sorted({k for s in snaps for k in s.get("histograms", {})}):
        lines.append(f"# TYPE skylift_{name} histogram")
        for s in snaps:
            if name in s.get("histograms", {}):
                bounds, counts, total = s["histograms"][name]
                _histogram(
                    lines, f"skylift_{name}", f'replica="{s["replica"]}"', tuple(bounds), list(counts), total
                )
    _render_labelled(lines, snaps)
    names = sorted({k for s in snaps for k in s["extra"]})
    for name in names:
        lines.append(f"# TYPE skylift_{name} {'counter' if name.endswith('_total') else 'gauge'}")
        lines += [
            f'skylift_{name}{{replica="{s["replica"]}"}} {s["extra"][name]}'
            for s in snaps
            if name in s["extra"]
        ]
    return "\n".join(lines) + "\n"


def _render_labelled(lines: list[str], snaps: list[dict[str, Any]]) -> None:
    """The series and histograms with labels of their own, each also labelled by replica."""
    for name in sorted({k for s in snaps for k in s.get("labelled_histograms", {})}):
        lines.append(f"# TYPE skylift_{name} histogram")
        for s in snaps:
            found = s.get("labelled_histograms", {}).get(name, {})
            for labels, (bounds, counts, total) in sorted(found.items()):
                where = f'replica="{s["replica"]}",{labels}'
                _histogram(lines, f"skylift_{name}", where, tuple(bounds), list(counts), total)
    for name in sorted({k for s in snaps for k in s.get("labelled", {})}):
        lines.append(f"# TYPE skylift_{name} {'counter' if name.endswith('_total') else 'gauge'}")
        for s in snaps:
            for labels, value in sorted(s.get("labelled", {}).get(name, {}).items()):
                lines.append(f'skylift_{name}{{replica="{s["replica"]}",{labels}}} {value}')

"""What the engine counts: sequences running and waiting, finishes by reason, tokens, and latencies.

The engine thread records; any thread may take a snapshot (`EngineStats`, immutable). Histograms
keep per-bucket counts with a last +Inf bucket, as skylift.serve.metrics renders them.
"""

from __future__ import annotations

import bisect
import threading
from collections import Counter
from dataclasses import dataclass

TTFT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
"""Seconds from submit to the first new token."""
ITL_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
"""Seconds between two new tokens of one sequence."""


@dataclass(frozen=True)
class Histogram:
    buckets: tuple[float, ...]
    """Upper bounds, ascending; one more count follows for +Inf."""
    counts: tuple[int, ...]
    """Observations per bucket (not cumulative), len(buckets) + 1."""
    sum: float

    @property
    def count(self) -> int:
        return sum(self.counts)


@dataclass(frozen=True)
class EngineStats:
    running: int
    """Sequences holding a KV-cache slot (prefilling or decoding)."""
    waiting: int
    """Sequences queued for a slot."""
    max_running: int
    max_waiting: int
    finished: dict[str, int]
    """Requests finished, by finish reason (stop, length, deadline, cancelled, error)."""
    rejected: int
    """submit calls refused with QueueFull."""
    prompt_tokens: int
    generated_tokens: int
    steps: int
    """Decoding steps run (each a forward over every running sequence's new tokens)."""
    ttft: Histogram
    inter_token: Histogram
    kv_cache_bytes: int


class Recorder:
    """Counters and histograms, updated by the engine thread under a lock held for microseconds."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.finished: Counter[str] = Counter()
        self.rejected = self.prompt_tokens = self.generated_tokens = self.steps = 0
        self._ttft = [0] * (len(TTFT_BUCKETS) + 1)
        self._itl = [0] * (len(ITL_BUCKETS) + 1)
        self._ttft_sum = self._itl_sum = 0.0

    def first_token(self, seconds: float) -> None:
        self._ttft[bisect.bisect_left(TTFT_BUCKETS, seconds)] += 1
        self._ttft_sum += seconds

    def next_token(self, seconds: float) -> None:
        self._itl[bisect.bisect_left(ITL_BUCKETS, seconds)] += 1
        self._itl_sum += seconds

    def histograms(self) -> tuple[Histogram, Histogram]:
        return (
            Histogram(TTFT_BUCKETS, tuple(self._ttft), self._ttft_sum),
            Histogram(ITL_BUCKETS, tuple(self._itl), self._itl_sum),
        )

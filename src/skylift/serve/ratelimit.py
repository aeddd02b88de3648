"""Per-key rate limits shared by every replica on the host: token buckets in shared memory.

The supervisor creates the table; each replica gets the same shared arrays and locks the same file.
A bucket holds up to one second of requests (burst = rate) but at least one request, so a rate
below 1/s (`30/m`) lets a request through every 1/rate seconds; it refills continuously.

The lock is an flock on a file, not a multiprocessing.Lock: the kernel releases an flock when the
process holding it dies, so a replica killed inside `allow` (SIGKILL, the OOM killer) cannot block
the others, whereas a semaphore would stay taken for good. Such a replica leaves at worst one slot
half-written: one key's bucket is refilled or emptied early, and no request waits.
"""

from __future__ import annotations

import fcntl
import multiprocessing
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from skylift.errors import SpecError

SLOTS = 4096  # distinct keys tracked at once; probing 8 slots makes collisions harmless
_PROBE = 8
_RATE = re.compile(r"^(\d+(?:\.\d+)?)(?:/(s|sec|m|min|h|hour))?$")
_PER_S = {None: 1, "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "hour": 3600}


def parse_rate(text: str) -> float:
    """'100', '100/s', '6000/m', '360000/h' -> requests per second (0: no limit)."""
    match = _RATE.match(text.strip())
    if not match:
        raise SpecError(f"--rate-limit must look like 100/s, 6000/m, 360000/h or 100, got {text!r}")
    return float(match.group(1)) / _PER_S[match.group(2)]


@dataclass
class SharedBuckets:
    """Picklable handle to the shared table (send it to spawned replicas)."""

    ids: Any  # RawArray of int64 key ids, 0 = empty
    tokens: Any  # RawArray of doubles
    stamps: Any  # RawArray of doubles (monotonic seconds)
    lock_path: Path
    """The file each replica opens for itself and flocks (a shared descriptor would share the lock)."""


def shared_buckets(folder: Path) -> SharedBuckets:
    """An empty table, with its lock file in `folder` (the server's private state folder)."""
    ctx = multiprocessing.get_context("spawn")
    lock_path = folder / "ratelimit.lock"
    lock_path.touch(mode=0o600)
    return SharedBuckets(
        ctx.RawArray("q", SLOTS), ctx.RawArray("d", SLOTS), ctx.RawArray("d", SLOTS), lock_path
    )


class RateLimiter:
    """One replica's view of the shared buckets; `close()` releases its lock file."""

    def __init__(self, buckets: SharedBuckets) -> None:
        self.b = buckets
        self._lock = os.open(buckets.lock_path, os.O_RDWR)

    def close(self) -> None:
        os.close(self._lock)

    def allow(self, key_id: str, rate: float) -> float:
        """0.0 if a request of `key_id` may go now (taking a token), else seconds until it may."""
        ident = int(key_id, 16) + 1  # never 0, which marks an empty slot
        burst = max(rate, 1.0)  # a whole token per request: a smaller bucket would never hold one
        now = time.monotonic()
        b = self.b
        fcntl.flock(self._lock, fcntl.LOCK_EX)  # held for a few array reads and writes
        try:
            slot = ident % SLOTS
            for probe in range(_PROBE):
                i = (slot + probe) % SLOTS
                if b.ids[i] == ident:
                    break
                if b.ids[i] == 0:
                    b.ids[i], b.tokens[i], b.stamps[i] = ident, burst, now
                    break
            else:  # crowded neighbourhood: take over the stalest slot
                i = min(((slot + p) % SLOTS for p in range(_PROBE)), key=lambda j: b.stamps[j])
                b.ids[i], b.tokens[i], b.stamps[i] = ident, burst, now
            tokens = min(burst, b.tokens[i] + (now - b.stamps[i]) * rate)
            b.stamps[i] = now
            if tokens >= 1.0:
                b.tokens[i] = tokens - 1.0
                return 0.0
            b.tokens[i] = tokens
            wait: float = (1.0 - tokens) / rate
            return wait
        finally:
            fcntl.flock(self._lock, fcntl.LOCK_UN)

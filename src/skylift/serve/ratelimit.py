"""Per-key rate limits shared by every replica on the host: token buckets in shared memory.

The supervisor creates the table; each replica gets the same shared arrays and locks the same file.
A bucket holds up to one second of requests (burst = rate) but at least one request, so a rate
below 1/s (`30/m`) lets a request through every 1/rate seconds; it refills continuously.

A key's generation budget (`--token-limit`, tokens per minute) is a second bucket of the same
table: it holds one minute of tokens, refills continuously, and is charged and refunded in tokens
(`take`, `refund`); a charge larger than the whole bucket can never pass.

The lock is an flock on a file, not a multiprocessing.Lock: the kernel releases an flock when the
process holding it dies, so a replica killed inside `allow` (SIGKILL, the OOM killer) cannot block
the others, whereas a semaphore would stay taken for good. Such a replica leaves at worst one slot
half-written: one key's bucket is refilled or emptied early, and no request waits.
"""

from __future__ import annotations

import fcntl
import math
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
_TOKENS = 1 << 33  # added to a key's id for its token bucket: key ids are 32 bits (8 hex digits)


def parse_rate(text: str) -> float:
    """'100', '100/s', '6000/m', '360000/h' -> requests per second (0: no limit)."""
    match = _RATE.match(text.strip())
    if not match:
        raise SpecError(f"--rate-limit must look like 100/s, 6000/m, 360000/h or 100, got {text!r}")
    return float(match.group(1)) / _PER_S[match.group(2)]


def parse_token_rate(text: str) -> float:
    """'20000/m', '20000' (per minute), '500/s', '1200000/h' -> tokens per minute (0: no limit)."""
    match = _RATE.match(text.strip())
    if not match:
        raise SpecError(f"--token-limit must look like 20000/m, 500/s, 1200000/h or 20000, got {text!r}")
    return float(match.group(1)) * 60 / _PER_S[match.group(2) or "m"]


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
        # a whole token per request: a smaller bucket would never hold one
        return self._take(int(key_id, 16) + 1, 1.0, rate, max(rate, 1.0))

    def take(self, key_id: str, tokens: float, per_minute: float) -> float:
        """Charge `tokens` to the key's per-minute token budget: 0.0 if taken, else seconds until
        the budget holds them (math.inf when they are more than a minute's worth: never)."""
        if tokens > per_minute:
            return math.inf
        return self._take(int(key_id, 16) + 1 + _TOKENS, tokens, per_minute / 60, per_minute)

    def refund(self, key_id: str, tokens: float, per_minute: float) -> None:
        """Give back `tokens` charged by `take` and not used (the bucket never holds more than a minute's)."""
        if tokens > 0:
            self._take(int(key_id, 16) + 1 + _TOKENS, -tokens, per_minute / 60, per_minute)

    def _take(self, ident: int, amount: float, rate: float, burst: float) -> float:
        """Take `amount` from bucket `ident` (refilled at `rate`/s up to `burst`) if it holds that
        much: 0.0; else seconds until it will. A negative amount is a refund."""
        now = time.monotonic()
        b = self.b
        fcntl.flock(self._lock, fcntl.LOCK_EX)  # held for a few array reads and writes
        try:
            slot = ident % SLOTS
            for probe in range(_PROBE):
                i = (slot + probe) % SLOTS
                if b.ids[i] == ident:
                    break
                if b.ids[i] == 0:  # never 0, which marks an empty slot
                    b.ids[i], b.tokens[i], b.stamps[i] = ident, burst, now
                    break
            else:  # crowded neighbourhood: take over the stalest slot
                i = min(((slot + p) % SLOTS for p in range(_PROBE)), key=lambda j: b.stamps[j])
                b.ids[i], b.tokens[i], b.stamps[i] = ident, burst, now
            tokens = min(burst, b.tokens[i] + (now - b.stamps[i]) * rate)
            b.stamps[i] = now
            if tokens >= amount:
                b.tokens[i] = min(burst, tokens - amount)
                return 0.0
            b.tokens[i] = tokens
            wait: float = (amount - tokens) / rate
            return wait
        finally:
            fcntl.flock(self._lock, fcntl.LOCK_UN)

"""Replica autoscaling policy: load observations in, scale decisions out (no processes, no clock).

The supervisor feeds `Autoscaler.observe` every TICK_S with the pool's load over the last
WINDOW_S and the replica counts; it answers with a `Decision` (the new target) or None, and the
supervisor starts or drains replicas to reach the target. The load of one replica is read from
counters it keeps in its metrics snapshots (`Sample`), so the signal costs no work per request:

- queue wait: how long work waits for the replica, per request, in seconds: its event loop's lag
  (how late a 20 ms timer fires: requests read off the sockets wait that long for the loop) plus
  the batcher's queue wait (queued rows / rows computed per second, Little's law);
- queued rows: rows waiting in the replica's batchers (a generator: requests waiting for a slot).

Scale up when the pool's mean queue wait or queued rows per replica is above its target over a
full window after the last change: to ceil(replicas x load / target), at least one more, at most
twice as many, never above `high`. Scale down by one after `down_idle_s` seconds during which every
window stayed below DOWN_FRACTION of both targets; never below `low`. No decision while a replica
is starting (a new one counts only once it serves). Each change restarts both clocks, so the
policy cannot flap faster than one window up or one idle period down.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from skylift.errors import SpecError

TICK_S = 0.5  # how often the supervisor observes: replicas publish their snapshots every 0.5 s
WINDOW_S = 2.0  # load is a mean over this: long enough to smooth a few snapshots, short enough to react
DOWN_FRACTION = 0.5  # "idle": below half of each scale-up target (hysteresis against flapping)


def parse_replicas(text: str) -> tuple[int, int]:
    """`N` (a fixed count) or `MIN:MAX` (autoscale between them) -> (MIN, MAX); SpecError otherwise."""
    low, sep, high = text.strip().partition(":")
    try:
        bounds = (int(low), int(high) if sep else int(low))
    except ValueError:
        raise SpecError(f"--replicas must be N or MIN:MAX (whole numbers), got {text!r}") from None
    if min(bounds) < 1:
        raise SpecError(f"--replicas must be >= 1, got {text!r}")
    if bounds[0] > bounds[1]:
        raise SpecError(f"--replicas MIN:MAX needs MIN <= MAX, got {text!r}")
    return bounds


def most_replicas(low: int, high: int, cores: int, oversubscribe: bool) -> int:
    """MAX as autoscaling uses it: at most one replica per core unless told, never below MIN."""
    return high if oversubscribe else min(high, max(low, cores))


@dataclass(frozen=True)
class Limits:
    low: int
    """Fewest replicas (MIN): started first, never scaled below."""
    high: int
    """Most replicas (MAX, already capped at the core count unless told otherwise)."""
    up_wait_s: float
    """Scale up when the mean queue wait passes this (seconds per request)."""
    up_rows: float
    """... or when the mean queued rows per replica pass this."""
    down_idle_s: float
    """Scale down after this long with every window below DOWN_FRACTION of both targets."""
    window_s: float = WINDOW_S
    """Length of one load window; also the least time between a change and a scale-up."""


@dataclass(frozen=True)
class Sample:
    """One replica's cumulative counters, as read from one metrics snapshot."""

    t: float
    """When the snapshot was written (seconds, any clock shared by the samples of one replica)."""
    probes: int
    lag_s: float
    """Sum over probes of the event loop's lag."""
    queued_rows: float
    """Sum over probes of the rows waiting in the batchers."""
    rows: int
    """Rows computed since the replica started."""


@dataclass(frozen=True)
class Load:
    wait_s: float
    """Mean queue wait per request (loop lag + batcher wait)."""
    queued_rows: float
    """Mean rows waiting, per replica."""


def replica_load(first: Sample, last: Sample) -> Load | None:
    """The load of one replica between two of its samples; None when they hold no probe between them."""
    probes = last.probes - first.probes
    dt = last.t - first.t
    if probes <= 0 or dt <= 0:
        return None
    queued = (last.queued_rows - first.queued_rows) / probes
    rate = (last.rows - first.rows) / dt
    # Little's law: wait = rows waiting / rows leaving per second. A queue that did not move at all
    # (nothing computed: a stuck model, or a generator whose slots are all busy) waited all along.
    batcher_wait = queued / rate if rate > 0 else (dt if queued > 0 else 0.0)
    return Load((last.lag_s - first.lag_s) / probes + batcher_wait, queued)


def pool_load(loads: list[Load]) -> Load | None:
    """Plain mean over replicas: one hot replica beside an idle one is an imbalance, not a lack of
    replicas (and new connections go to the idle one)."""
    if not loads:
        return None
    return Load(sum(x.wait_s for x in loads) / len(loads), sum(x.queued_rows for x in loads) / len(loads))


@dataclass(frozen=True)
class Observation:
    t: float
    """Seconds on a monotonic clock."""
    serving: int
    """Replicas that took traffic during the window (not starting, not draining)."""
    starting: int
    """Replicas started but not yet serving (loading, warming up)."""
    load: Load | None
    """The pool's load over the last window; None before any replica has a window."""


@dataclass(frozen=True)
class Decision:
    t: float
    before: int
    after: int
    rule: Literal["queue_wait", "queue_rows", "idle"]
    reason: str
    """Why, for the log line: the figures and the target they crossed."""

    @property
    def direction(self) -> Literal["up", "down"]:
        return "up" if self.after > self.before else "down"


class Autoscaler:
    """The target replica count of one pool; not thread-safe (the supervisor's loop owns it)."""

    def __init__(self, limits: Limits, now: float) -> None:
        self.limits = limits
        self.target = limits.low
        self.load: Load | None = None
        """The last load observed (exported in /metrics)."""
        self.last: Decision | None = None
        self.counts = {"up": 0, "down": 0}
        """Decisions taken, by direction (exported in /metrics)."""
        self._changed = now  # when the pool last changed size: windows before it do not count
        self._calm_since: float | None = None
        self._serving = -1

    def observe(self, obs: Observation) -> Decision | None:
        lim = self.limits
        self.load = obs.load
        if obs.serving != self._serving:  # a replica joined, left, died or came back
            self._serving = obs.serving
            self._changed = obs.t
            self._calm_since = None
        if obs.starting or obs.serving != self.target or obs.load is None:
            return None  # mid-change: the window does not describe the pool as it will be
        load = obs.load
        wait_ratio = load.wait_s / lim.up_wait_s
        rows_ratio = load.queued_rows / lim.up_rows
        if max(wait_ratio, rows_ratio) > 1:
            self._calm_since = None
            if obs.t - self._changed < lim.window_s or self.target >= lim.high:
                return None
            n = obs.serving
            after = min(lim.high, 2 * n, max(n + 1, math.ceil(n * max(wait_ratio, rows_ratio))))
            if wait_ratio >= rows_ratio:
                rule: Literal["queue_wait", "queue_rows", "idle"] = "queue_wait"
                why = f"queue wait {load.wait_s * 1000:.1f} ms > {lim.up_wait_s * 1000:g} ms"
            else:
                rule = "queue_rows"
                why = f"{load.queued_rows:.0f} queued rows per replica > {lim.up_rows:g}"
            return self._decide(obs.t, after, rule, f"{why} over {lim.window_s:g} s")
        if max(wait_ratio, rows_ratio) >= DOWN_FRACTION:
            self._calm_since = None
            return None
        if self._calm_since is None:
            self._calm_since = obs.t
        if self.target > lim.low and obs.t - self._calm_since >= lim.down_idle_s:
            why = (
                f"idle {obs.t - self._calm_since:.0f} s (queue wait {load.wait_s * 1000:.1f} ms "
                f"< {DOWN_FRACTION * lim.up_wait_s * 1000:g} ms, {load.queued_rows:.0f} queued rows "
                f"< {DOWN_FRACTION * lim.up_rows:g})"
            )
            return self._decide(obs.t, self.target - 1, "idle", why)
        return None

    def _decide(
        self, t: float, after: int, rule: Literal["queue_wait", "queue_rows", "idle"], reason: str
    ) -> Decision:
        decision = Decision(t, self.target, after, rule, reason)
        self.last = decision
        self.counts[decision.direction] += 1
        self.target = after
        self._changed = t
        self._calm_since = None
        return decision

"""Rollback guards: an error-rate and a p99 latency budget over a sliding window of a canary's requests.

A split names its guard once (`error_rate<0.05,p99_ms<200`); each replica keeps one `Window` per
guarded canary and asks it for a verdict: after each failed request (so a failing canary is caught
within a few requests) and on every repository tick (for the p99, which needs a sort). A window
gives no verdict before `min_requests` answers, so one unlucky request never rolls a canary back.
"""

from __future__ import annotations

import math
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

from skylift.errors import SpecError

_FIELDS = ("error_rate", "p99_ms", "window_s", "min_requests")
_MAX_SAMPLES = 65_536  # per canary and replica: ~2 MB at most, the newest kept
_FORM = "error_rate<0.05,p99_ms<200[,window_s=30,min_requests=20]"


@dataclass(frozen=True)
class Guard:
    """The budget a canary must keep, or lose its weight."""

    error_rate: float | None = None
    """Most share of 5xx answers (model failures, deadlines, overload) in the window, in (0, 1]."""
    p99_ms: float | None = None
    """Most 99th-percentile latency in the window (milliseconds, inside the server)."""
    window_s: float = 30.0
    """How far back the window reaches (seconds)."""
    min_requests: int = 20
    """Answers the window needs before it judges."""

    def __post_init__(self) -> None:
        if self.error_rate is None and self.p99_ms is None:
            raise SpecError(f"a guard needs error_rate and/or p99_ms, e.g. {_FORM}")
        if self.error_rate is not None and not 0 < self.error_rate <= 1:
            raise SpecError(f"guard error_rate must be in (0, 1], got {self.error_rate}")
        if self.p99_ms is not None and not 0 < self.p99_ms < math.inf:
            raise SpecError(f"guard p99_ms must be a number > 0, got {self.p99_ms}")
        if not 0 < self.window_s <= 3600:
            raise SpecError(f"guard window_s must be in (0, 3600] seconds, got {self.window_s}")
        if isinstance(self.min_requests, bool) or not isinstance(self.min_requests, int):
            raise SpecError(f"guard min_requests must be a whole number, got {self.min_requests!r}")
        if self.min_requests < 1:
            raise SpecError(f"guard min_requests must be >= 1, got {self.min_requests}")

    @classmethod
    def parse(cls, text: str) -> Guard:
        """`error_rate<0.05,p99_ms<200` (budgets with `<`, window settings with `=`)."""
        values: dict[str, Any] = {}
        for part in (p.strip() for p in text.split(",")):
            name, op, value = _split(part)
            if name not in _FIELDS:
                raise SpecError(f"--guard: unknown budget {name!r} in {part!r}; use {_FORM}")
            if (op == "<") != (name in ("error_rate", "p99_ms")):
                want = "<" if op == "=" else "="
                raise SpecError(f"--guard: write {name}{want}{value} (budgets take '<', settings '=')")
            values[name] = _number(name, value, whole=name == "min_requests")
        return cls(**values)

    @classmethod
    def from_json(cls, raw: Any) -> Guard:
        """The admin API's {"error_rate": 0.05, "p99_ms": 200, ...}."""
        if not isinstance(raw, dict):
            raise SpecError(f"guard must be an object such as {{'error_rate': 0.05}}, got {raw!r:.60}")
        unknown = sorted(set(raw) - set(_FIELDS))
        if unknown:
            raise SpecError(f"guard: unknown field {unknown[0]!r:.40} (fields: {', '.join(_FIELDS)})")
        for name, value in raw.items():
            if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
                raise SpecError(f"guard {name} must be a number, got {value!r:.40}")
        return cls(**raw)

    def to_json(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in _FIELDS}

    def describe(self) -> str:
        budgets = [f"error_rate<{self.error_rate:g}"] if self.error_rate is not None else []
        budgets += [f"p99_ms<{self.p99_ms:g}"] if self.p99_ms is not None else []
        return ",".join([*budgets, f"window_s={self.window_s:g}", f"min_requests={self.min_requests}"])


def _split(part: str) -> tuple[str, str, str]:
    for op in ("<", "="):
        name, found, value = part.partition(op)
        if found:
            return name.strip(), op, value.strip()
    raise SpecError(f"--guard: cannot read {part!r}; use {_FORM}")


def _number(name: str, text: str, whole: bool) -> float | int:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or (whole and not value.is_integer()):
        kind = "a whole number" if whole else "a number"
        raise SpecError(f"--guard: {name} must be {kind}, got {text!r}")
    return int(value) if whole else value


class Window:
    """One canary's recent answers on this replica: O(1) to record, a verdict on demand.

    Not thread-safe: recorded and judged on the replica's event loop only.
    """

    def __init__(self, guard: Guard) -> None:
        self.guard = guard
        self._samples: deque[tuple[float, float, bool]] = deque(maxlen=_MAX_SAMPLES)
        """(monotonic time, seconds, failed) of each answer, oldest first."""
        self._failed = 0
        """Failed answers among `_samples` (kept in step, so the error rate costs no scan)."""

    def record(self, seconds: float, failed: bool, now: float | None = None) -> None:
        if len(self._samples) == _MAX_SAMPLES:
            self._failed -= self._samples[0][2]  # about to fall off the bounded deque
        self._samples.append((time.monotonic() if now is None else now, seconds, failed))
        self._failed += failed

    def _trim(self, now: float) -> None:
        samples, since = self._samples, now - self.guard.window_s
        while samples and samples[0][0] < since:
            self._failed -= samples.popleft()[2]

    def verdict(self, now: float | None = None, latency: bool = True) -> str | None:
        """Why the canary broke its budget (one line), or None. `latency` False skips the p99 (a sort)."""
        self._trim(time.monotonic() if now is None else now)
        g, n = self.guard, len(self._samples)
        if n < g.min_requests:
            return None
        if g.error_rate is not None and self._failed / n > g.error_rate:
            return f"error rate {self._failed / n:.2f} over {n} requests > {g.error_rate:g}"
        if latency and g.p99_ms is not None:
            ms = sorted(s[1] for s in self._samples)
            p99 = ms[max(0, math.ceil(0.99 * n) - 1)] * 1e3  # nearest rank
            if p99 > g.p99_ms:
                return f"p99 {p99:.0f} ms over {n} requests > {g.p99_ms:g} ms"
        return None

"""Traffic splits: integer weights over a model's versions, and the pick of one version per request.

Weights are whole percents summing to 100. The picker lays the versions over 100 buckets in
ascending version order and draws a bucket per request: from a fast PRNG, or, when the split names
a sticky header and the request carries it, from the SHA-256 of its value, the same in every
replica and after every restart, so one session sees one version. Because newer versions sit on
the high buckets, ramping a canary up (90/10 -> 80/20) only moves sessions onto it, never off it.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, Generic, TypeVar

from skylift.errors import SpecError
from skylift.serve.guard import Guard

BUCKETS = 100
_HEADER = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]{1,64}")  # an HTTP token (RFC 9110), kept short
_T = TypeVar("_T")


@dataclass(frozen=True)
class Split:
    """How one model name's requests spread over its versions."""

    weights: tuple[tuple[int, int], ...]
    """(version, percent), ascending by version; percents sum to 100; 0 keeps a version loaded idle."""
    sticky_header: str | None = None
    """A request header (lower case) whose value picks the version; absent: a random pick."""
    guard: Guard | None = None
    """The budget every version but the stable one must keep (see `stable`)."""

    def __post_init__(self) -> None:
        if not self.weights:
            raise SpecError("a split needs at least one version, e.g. 1=90,2=10")
        versions = [v for v, _ in self.weights]
        if len(set(versions)) != len(versions):
            raise SpecError(f"a split names version {_twice(versions)} twice")
        for version, weight in self.weights:
            if isinstance(version, bool) or not isinstance(version, int) or version < 1:
                raise SpecError(f"split version must be a positive whole number, got {version!r:.20}")
            if isinstance(weight, bool) or not isinstance(weight, int) or not 0 <= weight <= BUCKETS:
                raise SpecError(
                    f"split weight of version {version} must be a whole percent, got {weight!r:.20}"
                )
        total = sum(w for _, w in self.weights)
        if total != BUCKETS:
            raise SpecError(f"split weights must sum to 100, got {total} ({self.describe()})")
        if self.sticky_header is not None and not _HEADER.fullmatch(self.sticky_header):
            raise SpecError(f"sticky header {self.sticky_header!r:.70} is not an HTTP header name")
        object.__setattr__(self, "weights", tuple(sorted(self.weights)))
        if self.sticky_header is not None:
            object.__setattr__(self, "sticky_header", self.sticky_header.lower())

    @property
    def versions(self) -> tuple[int, ...]:
        return tuple(v for v, _ in self.weights)

    @property
    def stable(self) -> int:
        """The lowest version: it takes a rolled-back canary's weight, and its guard never fires."""
        return self.weights[0][0]

    def weight(self, version: int) -> int:
        return dict(self.weights).get(version, 0)

    def canaries(self) -> tuple[int, ...]:
        """The versions a guard watches: every version with traffic but the stable one."""
        return tuple(v for v, w in self.weights[1:] if w > 0)

    def without(self, version: int) -> Split:
        """The split with `version`'s weight moved to the stable version (a rollback)."""
        moved = self.weight(version)
        stable = self.stable
        weights = tuple((v, 0 if v == version else w + moved if v == stable else w) for v, w in self.weights)
        return replace(self, weights=weights)

    def describe(self) -> str:
        return ",".join(f"{v}={w}" for v, w in self.weights)

    def to_json(self) -> dict[str, Any]:
        return {
            "weights": {str(v): w for v, w in self.weights},
            "sticky_header": self.sticky_header,
            "guard": self.guard.to_json() if self.guard else None,
        }

    @classmethod
    def parse(cls, text: str, sticky_header: str | None = None, guard: Guard | None = None) -> Split:
        """`1=90,2=10` (the --split flag)."""
        weights = []
        for part in (p.strip() for p in text.split(",")):
            version, eq, weight = part.partition("=")
            if not eq or not version.strip().isdigit() or not weight.strip().isdigit():
                raise SpecError(f"--split: cannot read {part!r}; use VERSION=PERCENT,... e.g. 1=90,2=10")
            weights.append((int(version), int(weight)))
        return cls(tuple(weights), sticky_header, guard)

    @classmethod
    def from_json(cls, raw: Any) -> Split:
        """The admin API's {"weights": {"1": 90, "2": 10}, "sticky_header": "X-Session", "guard": {...}}."""
        if not isinstance(raw, dict):
            raise SpecError('the body must be a JSON object such as {"weights": {"1": 90, "2": 10}}')
        unknown = sorted(set(raw) - {"weights", "sticky_header", "guard"})
        if unknown:
            raise SpecError(f"unknown field {unknown[0]!r:.40} (fields: weights, sticky_header, guard)")
        weights = raw.get("weights")
        if not isinstance(weights, dict) or not weights:
            raise SpecError('weights must be an object of version -> percent, e.g. {"1": 90, "2": 10}')
        pairs = []
        for version, weight in weights.items():
            if not str(version).isdigit():
                raise SpecError(f"weights: {version!r:.20} is not a version number")
            pairs.append((int(version), weight))
        header = raw.get("sticky_header")
        if header is not None and not isinstance(header, str):
            raise SpecError(f"sticky_header must be a header name, got {header!r:.40}")
        guard = raw.get("guard")
        return cls(tuple(pairs), header, Guard.from_json(guard) if guard is not None else None)


def _twice(versions: Sequence[int]) -> int:
    return next(v for v in versions if versions.count(v) > 1)


def bucket(value: bytes) -> int:
    """The bucket of a sticky header's value: stable across processes, restarts and machines."""
    return int.from_bytes(hashlib.sha256(value).digest()[:8], "big") % BUCKETS


class Picker(Generic[_T]):
    """The target (a served version) of each request under one split; read-only once built."""

    __slots__ = ("_draw", "_sticky", "_table")

    def __init__(self, split: Split, targets: dict[int, _T]) -> None:
        table: list[_T] = []
        for version, weight in split.weights:
            table += [targets[version]] * weight
        self._table = table
        """BUCKETS entries: bucket -> target, versions in ascending order."""
        self._sticky = split.sticky_header.encode() if split.sticky_header else None
        self._draw = random.Random().random  # its own generator: nobody else's seed moves our picks

    def pick(self, headers: list[tuple[bytes, bytes]]) -> _T:
        """The target of a request with these (lower-case name, value) headers."""
        sticky = self._sticky
        if sticky is not None:
            for name, value in headers:
                if name == sticky:
                    return self._table[bucket(value)]
        return self._table[int(self._draw() * BUCKETS)]

"""Shadow traffic: copies of answered requests run on another version, compared, and never returned.

After a request is answered, its decoded inputs and the answer go into a bounded queue (one per
model and replica); a full queue drops the copy and counts it, so the shadow never holds up or
fails a client's request. One task drains the queue in batches of up to `max_batch_rows` rows
onto the shadow version's own batcher, compares its outputs with the answers row by row (the
kind's rule in AGREEMENT) and counts agreement, failures and latency.

The shadow's model thread runs at the lowest CPU priority (nice 19, set from inside that thread
by a forward pre-hook on the version's torch module), so on a busy machine the kernel gives the
cores to the answering versions first: the shadow computes with what is left, its queue fills,
and copies are dropped rather than answers slowed. (With --runtime onnx there is no torch module
to hook and the shadow keeps the normal priority; its queue still bounds it.)

Shape legend: R rows   O outputs per row
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import os
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from skylift.errors import SpecError
from skylift.serve.metrics import LATENCY_BUCKETS

if TYPE_CHECKING:
    from skylift.serve.runtimes import Runtime


def _same_class(a_RO: np.ndarray, b_RO: np.ndarray) -> np.ndarray:
    return np.asarray(a_RO.argmax(axis=1) == b_RO.argmax(axis=1))


def _close(a_RO: np.ndarray, b_RO: np.ndarray) -> np.ndarray:
    # 1% of the value, or 0.001 near zero: a retrained regressor never matches to the last bit.
    return np.asarray(np.isclose(a_RO, b_RO, rtol=1e-2, atol=1e-3).all(axis=1))


def _aligned(a_RO: np.ndarray, b_RO: np.ndarray) -> np.ndarray:
    dot = (a_RO * b_RO).sum(axis=1)
    norms = np.linalg.norm(a_RO, axis=1) * np.linalg.norm(b_RO, axis=1)
    return np.asarray(dot >= 0.99 * np.maximum(norms, 1e-12))  # cosine similarity >= 0.99


AGREEMENT: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "classifier": _same_class,
    "regressor": _close,
    "embedder": _aligned,
}
"""Per kind: (answers, shadow outputs) -> which rows agree. A kind not here cannot be shadowed."""


@dataclass(frozen=True)
class ShadowSpec:
    """Which version shadows a model, and how many copies may wait for it per replica."""

    version: int
    queue: int = 256
    """Copies waiting per replica; a copy past it is dropped (counted), never waited for."""

    def __post_init__(self) -> None:
        for name, value, low in (("version", self.version, 1), ("queue", self.queue, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise SpecError(f"shadow {name} must be a whole number >= {low}, got {value!r:.20}")

    @classmethod
    def parse(cls, text: str) -> ShadowSpec:
        """`3` (the --shadow flag)."""
        if not text.strip().isdigit():
            raise SpecError(f"--shadow takes a version number, got {text!r:.40}")
        return cls(int(text))

    @classmethod
    def from_json(cls, raw: Any) -> ShadowSpec:
        """The admin API's {"version": 3, "queue": 256}."""
        if not isinstance(raw, dict) or "version" not in raw:
            raise SpecError('the body must be a JSON object such as {"version": 3}')
        unknown = sorted(set(raw) - {"version", "queue"})
        if unknown:
            raise SpecError(f"unknown field {unknown[0]!r:.40} (fields: version, queue)")
        return cls(**raw)

    def to_json(self) -> dict[str, Any]:
        return {"version": self.version, "queue": self.queue}


@dataclass
class ShadowStats:
    """What one shadow version did on this replica (kept across rollout changes, for /metrics)."""

    copies: int = 0
    """Copies queued."""
    dropped: int = 0
    """Copies dropped because the queue was full."""
    failed: int = 0
    """Copies the shadow did not answer (it raised, was overloaded or ran past the deadline)."""
    rows: int = 0
    """Rows compared."""
    agreed: int = 0
    """Rows whose shadow output agreed with the answer."""
    latency: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS) + 1))
    """Seconds from a copy's submission to the shadow's answer, per LATENCY_BUCKETS bucket."""
    latency_sum: float = 0.0


class Shadow:
    """Runs copies on one shadow version's runtime. Not thread-safe: the replica's event loop only."""

    def __init__(
        self, target: Runtime, spec: ShadowSpec, stats: ShadowStats, max_rows: int, timeout_s: float
    ):
        self.target = target
        self.spec = spec
        self.stats = stats
        self._agree = AGREEMENT[target.kind]
        self._max_rows = max_rows
        self._timeout_s = timeout_s
        self._queue: deque[tuple[Any, np.ndarray]] = deque()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._said = False
        self._hook = _lower_priority(target)

    def offer(self, x: Any, out_RO: np.ndarray) -> None:
        """Queue a copy of an answered request (its decoded inputs and answer); never blocks."""
        if len(self._queue) >= self.spec.queue:
            self.stats.dropped += 1
            return
        self._queue.append((x, out_RO))
        self.stats.copies += 1
        self._wake.set()

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop())

    def stop(self) -> None:
        """Stop at once; copies still queued are dropped (and counted)."""
        if self._task is not None:
            self._task.cancel()
        if self._hook is not None:
            self._hook.remove()
        self.stats.dropped += len(self._queue)
        self._queue.clear()

    async def _loop(self) -> None:
        while True:
            if not self._queue:
                self._wake.clear()
                await self._wake.wait()
            await self._run(self._take())

    def _take(self) -> list[tuple[Any, np.ndarray]]:
        """Queued copies up to max_rows rows (at least one)."""
        batch = [self._queue.popleft()]
        rows = len(batch[0][1])
        while self._queue and rows + len(self._queue[0][1]) <= self._max_rows:
            item = self._queue.popleft()
            batch.append(item)
            rows += len(item[1])
        return batch

    async def _run(self, batch: list[tuple[Any, np.ndarray]]) -> None:
        start = time.perf_counter()
        infer = self.target.infer
        try:
            async with asyncio.timeout(self._timeout_s):
                deadline = time.monotonic() + self._timeout_s
                if all(isinstance(x, np.ndarray) for x, _ in batch):  # numeric rows: one submission
                    got = await infer(np.concatenate([x for x, _ in batch]), deadline)
                else:  # texts, media: one submission each, batched together by the target's batcher
                    got = np.concatenate(await asyncio.gather(*(infer(x, deadline) for x, _ in batch)))
        except Exception as exc:  # the shadow's trouble is counted, never the client's
            self.stats.failed += len(batch)
            if not self._said:  # once per shadow: a broken one would otherwise flood the log
                self._said = True
                print(
                    f"skylift serve: shadow {self.target.ctx.name}:{self.target.ctx.version} failed: "
                    f"{type(exc).__name__}: {exc} (counted in skylift_shadow_failed_total)",
                    file=sys.stderr,
                    flush=True,
                )
            return
        seconds = time.perf_counter() - start
        answers = batch[0][1] if len(batch) == 1 else np.concatenate([out for _, out in batch])
        s = self.stats
        s.rows += len(answers)
        s.agreed += int(self._agree(answers, got).sum())
        s.latency[bisect.bisect_left(LATENCY_BUCKETS, seconds)] += len(batch)
        s.latency_sum += seconds * len(batch)


NICEST = 19
"""The lowest CPU priority on Linux: a nice-0 thread that wants the core gets ~68 times its share."""


def _lower_priority(target: Runtime) -> Any:
    """Lower the priority of whatever thread runs the target's torch module (its model thread),
    from inside that thread on its next forward; the hook's handle, or None without a module."""
    from torch import nn

    module = getattr(target.ctx.loaded, "module", None)
    if not isinstance(module, nn.Module) or not hasattr(os, "setpriority"):
        return None
    done: set[int] = set()

    def nicest(module: nn.Module, args: Any) -> None:
        thread = threading.get_native_id()
        if thread not in done:  # once per thread: one syscall, then a set lookup per batch
            done.add(thread)
            with contextlib.suppress(OSError):  # a platform that refuses: normal priority
                os.setpriority(os.PRIO_PROCESS, thread, NICEST)  # Linux: this thread only

    return module.register_forward_pre_hook(nicest)

"""Dynamic batching by rows: requests queue their rows, one loop runs them through the model in batches.

Contract: a batch closes at `max_rows` rows or when `max_delay` has passed since its first row,
but never waits when no other request is on its way (an idle server answers at once). Requests
larger than `max_rows` are split and reassembled. More than `max_queue_rows` queued rows raise
Overloaded (503); a request past its deadline is dropped before it costs compute (504). A request
the model raises on fails alone with ModelFailed. The model runs on one worker thread, so the event
loop keeps decoding the next requests meanwhile.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from skylift.errors import Overloaded


class DeadlineExceeded(Exception):
    """The request's deadline passed before its rows were computed."""


class ModelFailed(Exception):
    """The model raised on a request's rows (its exception is the __cause__): a bug, not bad input."""


@dataclass
class _Item:
    x: np.ndarray
    deadline: float
    future: asyncio.Future[np.ndarray] = field(repr=False)


class Batcher:
    """Rows in, model outputs out, in batches; one per served model in each worker process."""

    def __init__(
        self,
        run: Callable[[np.ndarray], np.ndarray],
        *,
        name: str,
        max_rows: int,
        max_delay_s: float,
        max_queue_rows: int,
        on_batch: Callable[[int], None] | None = None,
        pool: ThreadPoolExecutor | None = None,
    ) -> None:
        self._run = run
        self.name = name
        """The model and version it runs, e.g. mnist-mlp:3, for error messages."""
        self.max_rows = max_rows
        self.max_delay_s = max_delay_s
        self.max_queue_rows = max_queue_rows
        self._on_batch = on_batch
        self._queue: deque[_Item] = deque()
        self.queued_rows = 0
        self.arriving = 0
        """Requests accepted but not yet queued (body still being read or decoded)."""
        self._wake = asyncio.Event()
        # One model thread; batchers of one model (a text model's length buckets) may share it.
        self._owns_pool = pool is None
        self._pool = pool or ThreadPoolExecutor(1, thread_name_prefix="skylift-model")
        self._task: asyncio.Task[None] | None = None
        self._closing = False

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        """Answer every queued request, then stop the loop and the model thread."""
        self._closing = True
        self._wake.set()
        if self._task:
            await self._task
        if self._owns_pool:
            self._pool.shutdown(wait=True)

    async def submit(self, x_RS: np.ndarray, deadline: float) -> np.ndarray:
        """Outputs for every row of x_RS, computed in one or more batches."""
        rows = len(x_RS)
        if self._closing:  # swapped out, and its loop may be gone: queued rows would wait for nothing
            raise Overloaded(f"model {self.name} was swapped out while this request waited; retry")
        if self.queued_rows + rows > self.max_queue_rows:
            raise Overloaded(f"queue full ({self.queued_rows} rows waiting, limit {self.max_queue_rows})")
        loop = asyncio.get_running_loop()
        parts = []
        for lo in range(0, rows, self.max_rows):
            item = _Item(x_RS[lo : lo + self.max_rows], deadline, loop.create_future())
            self._queue.append(item)
            parts.append(item.future)
        self.queued_rows += rows
        self._wake.set()
        try:
            outs = [await f for f in parts]
        except BaseException:
            # Timed out, cancelled or failed: the parts still queued are skipped, never computed.
            for f in parts:
                f.cancel()
            raise
        return outs[0] if len(outs) == 1 else np.concatenate(outs)

    def _take(self, room: int) -> list[_Item]:
        """Pop queued items up to `room` rows; expired ones are failed, not computed."""
        batch: list[_Item] = []
        rows = 0
        now = time.monotonic()
        while self._queue and rows + len(self._queue[0].x) <= room:
            item = self._queue.popleft()
            self.queued_rows -= len(item.x)
            if item.future.done():  # the caller gave up (disconnected)
                continue
            if item.deadline < now:
                item.future.set_exception(DeadlineExceeded())
                continue
            batch.append(item)
            rows += len(item.x)
        return batch

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while self._queue or not self._closing:
            if not self._queue:
                self._wake.clear()
                await self._wake.wait()
                continue
            batch = self._take(self.max_rows)
            if not batch:
                continue
            rows = sum(len(i.x) for i in batch)
            if rows < self.max_rows and self.arriving > 0 and self.max_delay_s > 0:
                # Others are mid-request: give them up to max_delay to join this batch.
                close_at = time.monotonic() + self.max_delay_s
                while rows < self.max_rows and self.arriving > 0 and time.monotonic() < close_at:
                    self._wake.clear()
                    try:
                        async with asyncio.timeout(close_at - time.monotonic()):
                            await self._wake.wait()
                    except TimeoutError:
                        break
                    more = self._take(self.max_rows - rows)
                    batch += more
                    rows += sum(len(i.x) for i in more)
            await self._compute(loop, batch, rows)

    async def _compute(self, loop: asyncio.AbstractEventLoop, batch: list[_Item], rows: int) -> None:
        x = batch[0].x if len(batch) == 1 else np.concatenate([i.x for i in batch])
        try:
            out = await loop.run_in_executor(self._pool, self._run, x)
        except Exception as exc:  # the model's own bug: the loop and the model thread carry on
            if len(batch) == 1:
                if not batch[0].future.done():
                    failed = ModelFailed(f"model {self.name} failed on this request")
                    failed.__cause__ = exc  # its traceback goes to the server's log
                    batch[0].future.set_exception(failed)
                return
            # One bad request must not fail the others: run each alone.
            for item in batch:
                await self._compute(loop, [item], len(item.x))
            return
        if self._on_batch:
            self._on_batch(rows)
        lo = 0
        for item in batch:
            hi = lo + len(item.x)
            if not item.future.done():
                item.future.set_result(out[lo:hi])
            lo = hi

"""The row batcher with a real (numpy) model: idle runs at once, load batches, failures stay alone."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest

from skylift.errors import Overloaded
from skylift.serve.batcher import Batcher, DeadlineExceeded, ModelFailed


class Model:
    """Doubles its input; fails on any batch holding a negative value; records batch sizes."""

    def __init__(self, delay: float = 0.0) -> None:
        self.batches: list[int] = []
        self.delay = delay
        self.lock = threading.Lock()

    def __call__(self, x: np.ndarray) -> np.ndarray:
        with self.lock:
            self.batches.append(len(x))
        time.sleep(self.delay)
        if (x < 0).any():
            raise ValueError("negative input")
        return x * 2


def _run(coro_fn):  # type: ignore[no-untyped-def]
    return asyncio.run(coro_fn())


def _batcher(model: Model, **kw: float) -> Batcher:
    opts = {"max_rows": 8, "max_delay_s": 0.05, "max_queue_rows": 64, **kw}
    return Batcher(
        model,
        name="double:1",
        max_rows=int(opts["max_rows"]),
        max_delay_s=opts["max_delay_s"],
        max_queue_rows=int(opts["max_queue_rows"]),
    )


def test_an_idle_batcher_runs_a_request_at_once() -> None:
    model = Model()

    async def go() -> float:
        b = _batcher(model, max_delay_s=5.0)  # a long delay that must not be waited
        b.start()
        tick = time.monotonic()
        out = await b.submit(np.ones((3, 2), np.float32), time.monotonic() + 10)
        await b.stop()
        assert (out == 2).all()
        return time.monotonic() - tick

    assert _run(go) < 2.0 and model.batches == [3]


def test_requests_arriving_while_busy_share_a_batch_and_big_ones_split() -> None:
    model = Model(delay=0.05)

    async def go() -> list[np.ndarray]:
        b = _batcher(model)
        b.start()
        xs = [np.full((r, 2), i, np.float32) for i, r in enumerate([1, 2, 3, 1, 20])]
        outs = await asyncio.gather(*(b.submit(x, time.monotonic() + 10) for x in xs))
        await b.stop()
        for x, out in zip(xs, outs, strict=True):
            np.testing.assert_array_equal(out, x * 2)
        return outs

    _run(go)
    assert max(model.batches) <= 8 and sum(model.batches) == 27
    assert len(model.batches) < 5 + 3  # some requests shared a batch (20 rows alone need 3)


def test_one_bad_request_fails_alone() -> None:
    model = Model(delay=0.02)

    async def go() -> None:
        b = _batcher(model)
        b.start()
        deadline = time.monotonic() + 10
        good = [np.ones((1, 2), np.float32) for _ in range(3)]
        results = await asyncio.gather(
            b.submit(good[0], deadline),
            b.submit(-np.ones((1, 2), np.float32), deadline),
            b.submit(good[1], deadline),
            b.submit(good[2], deadline),
            return_exceptions=True,
        )
        await b.stop()
        failed = results[1]
        assert isinstance(failed, ModelFailed) and str(failed) == "model double:1 failed on this request"
        assert isinstance(failed.__cause__, ValueError)  # the model's own error, for the server's log
        assert all(isinstance(r, np.ndarray) and (r == 2).all() for i, r in enumerate(results) if i != 1)

    _run(go)


def test_full_queue_and_deadline() -> None:
    model = Model(delay=0.05)

    async def go() -> None:
        b = _batcher(model, max_queue_rows=8)
        b.start()
        first = asyncio.ensure_future(b.submit(np.ones((8, 2), np.float32), time.monotonic() + 10))
        await asyncio.sleep(0)
        with pytest.raises(Overloaded, match="queue full"):
            await b.submit(np.ones((8, 2), np.float32), time.monotonic() + 10)
        await first
        busy = asyncio.ensure_future(b.submit(np.ones((8, 2), np.float32), time.monotonic() + 10))
        await asyncio.sleep(0.01)  # the model is now busy with `busy`
        with pytest.raises(DeadlineExceeded):
            await b.submit(np.ones((1, 2), np.float32), time.monotonic() + 0.001)
        await busy
        await b.stop()

    _run(go)


def test_an_expired_request_is_dropped_before_the_model_sees_it() -> None:
    model = Model(delay=0.3)

    async def abandoned() -> None:
        async with asyncio.timeout(0.05):  # the server's own timeout gives up first: 20 rows, 3 parts
            await b.submit(np.ones((20, 2), np.float32), time.monotonic() + 10)

    async def go() -> None:
        b.start()
        busy = asyncio.ensure_future(b.submit(np.ones((8, 2), np.float32), time.monotonic() + 10))
        await asyncio.sleep(0.05)  # the model is busy with `busy` for 0.3 s
        expired = b.submit(np.ones((3, 2), np.float32), time.monotonic() + 0.05)  # expires while queued
        results = await asyncio.gather(expired, abandoned(), return_exceptions=True)
        assert isinstance(results[0], DeadlineExceeded) and isinstance(results[1], TimeoutError)
        await busy
        await b.stop()
        assert b.queued_rows == 0

    b = _batcher(model)
    _run(go)
    assert model.batches == [8]  # neither the expired nor the abandoned rows were computed


def test_a_batch_waits_for_a_request_on_its_way_until_max_delay() -> None:
    model = Model()

    async def go() -> tuple[float, float]:
        b = _batcher(model, max_delay_s=1.0)
        b.start()
        deadline = time.monotonic() + 10
        b.arriving += 1  # a second request is being read
        first = asyncio.ensure_future(b.submit(np.ones((1, 2), np.float32), deadline))
        await asyncio.sleep(0.2)
        assert not first.done()  # its batch waits for the one on its way
        b.arriving -= 1
        await b.submit(np.ones((2, 2), np.float32), deadline)
        await first
        # Now one that never arrives: the batch closes at max_delay, not later.
        b.arriving += 1
        tick = time.monotonic()
        await b.submit(np.ones((1, 2), np.float32), deadline)
        waited = time.monotonic() - tick
        b.arriving -= 1
        await b.stop()
        return waited, b.max_delay_s

    waited, max_delay = _run(go)
    assert model.batches == [3, 1]  # the first two shared a batch
    assert max_delay * 0.9 <= waited < max_delay + 5  # closed at max_delay, not held for the missing one


def test_a_stopped_batcher_refuses_rows_at_once() -> None:
    """Rows queued on a swapped-out batcher would wait for a loop that is gone: 503 instead of 504."""

    async def go() -> None:
        b = _batcher(Model())
        b.start()
        await b.stop()
        with pytest.raises(Overloaded, match="model double:1 was swapped out"):
            async with asyncio.timeout(5):
                await b.submit(np.ones((1, 2), np.float32), time.monotonic() + 10)

    _run(go)

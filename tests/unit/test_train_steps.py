"""The training loop's steps, computed on demand, are the batches a list would have held."""

from __future__ import annotations

import itertools

from skylift.train.loop import _Steps


def _listed(n: int, batch: int, world: int, accumulate: int) -> list[list[tuple[int, int]]]:
    bounds = [(i, min(i + batch, n)) for i in range(0, n, batch)]
    if len(bounds) > 1 and bounds[-1][1] - bounds[-1][0] < 2 * world:
        bounds[-2:] = [(bounds[-2][0], n)]
    return [bounds[i : i + accumulate] for i in range(0, len(bounds), accumulate)]


def test_steps_cover_every_row_once_and_merge_a_tail_too_small_for_every_worker() -> None:
    sizes = itertools.product((1, 2, 7, 64, 65, 100, 257), (1, 3, 8, 64), (1, 2), (1, 3))
    for n, batch, world, accumulate in sizes:
        steps = _Steps(n, batch, world, accumulate)
        assert [steps[g] for g in range(len(steps))] == _listed(n, batch, world, accumulate)
    assert _Steps(65, 8, 2, 1)[7] == [(56, 65)]  # 1 row left: it joins the last batch
    assert len(_Steps(10**8, 8, 1, 1)) == 12_500_000

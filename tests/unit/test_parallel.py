"""Sharding rules of data-parallel training: disjoint, complete, balanced."""

from __future__ import annotations

import itertools

from hypothesis import assume, given
from hypothesis import strategies as st

from skylift.dist import DistInfo
from skylift.train.loop import _Steps
from skylift.train.parallel import my_slice


@given(rows=st.integers(0, 500), world=st.integers(1, 8))
def test_rank_slices_partition_the_rows(rows: int, world: int) -> None:
    parts = [range(rows)[my_slice(rows, DistInfo(rank=r, world_size=world))] for r in range(world)]
    assert [i for p in parts for i in p] == list(range(rows))
    assert max(map(len, parts)) - min(map(len, parts)) <= 1


@given(n=st.integers(1, 2000), batch=st.integers(1, 300), world=st.integers(1, 4))
def test_batches_cover_the_epoch_and_give_each_worker_two_rows(n: int, batch: int, world: int) -> None:
    assume(batch >= 2 * world)  # launch refuses smaller global batches
    steps = _Steps(n, batch, world, accumulate=1)
    bounds = [bound for g in range(len(steps)) for bound in steps[g]]
    assert bounds[0][0] == 0 and bounds[-1][1] == n
    assert all(a[1] == b[0] for a, b in itertools.pairwise(bounds))
    if len(bounds) > 1:
        assert bounds[-1][1] - bounds[-1][0] >= 2 * world

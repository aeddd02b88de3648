"""Rate limits: --rate-limit values (a plain number or `100/s`), and the shared token buckets."""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from skylift.errors import SpecError
from skylift.serve.ratelimit import RateLimiter, SharedBuckets, parse_rate, shared_buckets


@pytest.mark.parametrize(
    ("text", "per_s"),
    [("100", 100.0), ("100/s", 100.0), ("2.5/s", 2.5), ("6000/m", 100.0), ("360000/h", 100.0), ("0", 0.0)],
)
def test_rates(text: str, per_s: float) -> None:
    assert parse_rate(text) == per_s


@pytest.mark.parametrize("text", ["", "-1", "fast", "100/d", "1e3", "100/"])
def test_bad_rates_name_the_form(text: str) -> None:
    with pytest.raises(SpecError, match="--rate-limit must look like 100/s"):
        parse_rate(text)


# ---- the bucket ----------------------------------------------------------------------------------

KEY = "0123abcd"


@pytest.fixture
def limiter(tmp_path: Path) -> Iterator[RateLimiter]:
    limiter = RateLimiter(shared_buckets(tmp_path))
    yield limiter
    limiter.close()


def test_a_bucket_lets_a_second_of_requests_through_then_refills(limiter: RateLimiter) -> None:
    assert [limiter.allow(KEY, 5.0) for _ in range(5)] == [0.0] * 5  # burst: one second of requests
    wait = limiter.allow(KEY, 5.0)
    assert 0.1 < wait <= 0.2  # a token every 0.2 s
    time.sleep(wait)
    assert limiter.allow(KEY, 5.0) == 0.0


def test_a_rate_below_one_per_second_lets_one_request_through_at_that_pace(limiter: RateLimiter) -> None:
    rate = parse_rate("30/m")
    assert limiter.allow(KEY, rate) == 0.0  # the first request of a key goes at once
    wait = limiter.allow(KEY, rate)
    assert 1.9 < wait <= 2.0  # then one every 2 s
    time.sleep(wait)
    assert limiter.allow(KEY, rate) == 0.0
    assert limiter.allow(KEY, rate) > 1.9  # no burst beyond one request


def _take_tokens_forever(buckets: SharedBuckets, started: Any) -> None:
    """A replica under load: nearly all of its time is spent inside the limiter."""
    limiter = RateLimiter(buckets)
    started.set()
    while True:
        limiter.allow(KEY, 1e9)


def _take_one_token(buckets: SharedBuckets) -> None:
    RateLimiter(buckets).allow(KEY, 1e9)


def test_a_replica_killed_inside_the_limiter_blocks_no_other(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("spawn")  # as the server starts its replicas
    buckets = shared_buckets(tmp_path)
    for _ in range(4):  # each kill lands inside the limiter's critical section most of the time
        started = ctx.Event()
        victim = ctx.Process(target=_take_tokens_forever, args=(buckets, started))
        victim.start()
        assert started.wait(30)
        time.sleep(0.1)
        victim.kill()  # SIGKILL: no cleanup runs, as when the OOM killer takes a replica
        victim.join()
        other = ctx.Process(target=_take_one_token, args=(buckets,))
        other.start()
        other.join(10)
        blocked = other.is_alive()
        if blocked:
            other.kill()
            other.join()
        assert not blocked, "a replica killed inside the limiter blocked the others"
        assert other.exitcode == 0


# ---- token limits (generation: tokens per minute) -----------------------------------------------


@pytest.mark.parametrize(
    ("text", "per_minute"),
    [("20000/m", 20000.0), ("20000", 20000.0), ("500/s", 30000.0), ("1200000/h", 20000.0), ("0", 0.0)],
)
def test_token_rates_are_per_minute(text: str, per_minute: float) -> None:
    from skylift.serve.ratelimit import parse_token_rate

    assert parse_token_rate(text) == per_minute


@pytest.mark.parametrize("text", ["", "-5", "lots", "100/d", "1e4/m", "/m"])
def test_bad_token_rates_name_the_form(text: str) -> None:
    from skylift.serve.ratelimit import parse_token_rate

    with pytest.raises(SpecError, match=r"^--token-limit must look like 20000/m, 500/s"):
        parse_token_rate(text)


def test_a_token_bucket_holds_a_minute_and_refunds_what_was_not_used(limiter: RateLimiter) -> None:
    per_minute = 600.0  # 10 tokens/s
    assert limiter.take(KEY, 400, per_minute) == 0.0
    wait = limiter.take(KEY, 400, per_minute)  # 200 left: 200 more come in 20 s
    assert 19.5 < wait <= 20.0
    limiter.refund(KEY, 300, per_minute)  # the first request used 100 of its 400
    assert limiter.take(KEY, 400, per_minute) == 0.0  # 500 there again
    assert limiter.take(KEY, 200, per_minute) > 0
    limiter.refund(KEY, 10_000, per_minute)  # never more than a minute's worth
    assert limiter.take(KEY, 600, per_minute) == 0.0
    assert limiter.take(KEY, 1, per_minute) > 0


def test_more_than_a_minute_of_tokens_never_passes(limiter: RateLimiter) -> None:
    assert limiter.take(KEY, 601, 600.0) == float("inf")
    assert limiter.take(KEY, 600, 600.0) == 0.0  # and it took nothing


def test_token_and_request_buckets_of_a_key_are_apart(limiter: RateLimiter) -> None:
    assert limiter.take(KEY, 600, 600.0) == 0.0  # the token budget is spent ...
    assert limiter.allow(KEY, 5.0) == 0.0  # ... the requests/s one is not
    assert limiter.take("0123abce", 600, 600.0) == 0.0  # nor another key's


def test_replicas_share_the_token_budget(tmp_path: Path) -> None:
    buckets = shared_buckets(tmp_path)
    one, two = RateLimiter(buckets), RateLimiter(buckets)
    try:
        assert one.take(KEY, 500, 600.0) == 0.0
        assert two.take(KEY, 500, 600.0) > 0  # another replica sees what the first took
        one.refund(KEY, 400, 600.0)
        assert two.take(KEY, 500, 600.0) == 0.0
    finally:
        one.close()
        two.close()

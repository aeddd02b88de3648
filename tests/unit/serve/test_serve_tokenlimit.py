"""A generation request's token charge: which limit applies, the 429s, and one settlement."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from skylift.security.apikeys import KeyInfo
from skylift.serve.app import Reply
from skylift.serve.ratelimit import RateLimiter, shared_buckets
from skylift.serve.tokenlimit import charge_tokens


def key(token_limit: float | None = None) -> KeyInfo:
    return KeyInfo("app", "0123abcd", ("predict",), 0.0, None, None, token_limit)


@pytest.fixture
def limiter(tmp_path: Path) -> Iterator[RateLimiter]:
    limiter = RateLimiter(shared_buckets(tmp_path))
    yield limiter
    limiter.close()


def test_no_key_or_no_limit_charges_nothing(limiter: RateLimiter) -> None:
    assert charge_tokens(limiter, None, 600, 100) is None  # --no-auth
    assert charge_tokens(limiter, key(), 0, 100) is None  # --token-limit 0 and no limit on the key
    assert charge_tokens(None, key(600), 600, 100) is None  # no shared table (a bare App)


def test_the_key_s_own_limit_wins_over_the_server_s(limiter: RateLimiter) -> None:
    charge = charge_tokens(limiter, key(6000), 60, 1000)
    assert charge is not None and charge.per_minute == 6000 and charge.tokens == 1000


def test_a_used_up_budget_is_a_429_with_retry_after_and_a_settlement_refunds_once(
    limiter: RateLimiter,
) -> None:
    first = charge_tokens(limiter, key(), 600, 500)  # 10 tokens/s, 600 at most
    assert first is not None
    with pytest.raises(Reply) as refused:
        charge_tokens(limiter, key(), 600, 200)
    assert refused.value.status == 429 and refused.value.headers == ((b"retry-after", b"10"),)
    assert str(refused.value) == (
        "the token limit of 600 tokens/min for key 'app' is used up: this request takes 200 tokens "
        "(prompt + max_tokens); retry in 10 s"
    )
    first.settle(100)  # it used 100 of its 500
    first.settle(0)  # a second settlement gives nothing back
    assert charge_tokens(limiter, key(), 600, 500) is not None
    with pytest.raises(Reply):
        charge_tokens(limiter, key(), 600, 50)


def test_more_than_the_whole_budget_says_to_lower_max_tokens(limiter: RateLimiter) -> None:
    with pytest.raises(Reply) as refused:
        charge_tokens(limiter, key(), 600, 601)
    assert refused.value.status == 429 and refused.value.headers == ()
    tail = "more than the token limit of 600 tokens/min for key 'app' allows: lower max_tokens"
    assert str(refused.value).endswith(tail)

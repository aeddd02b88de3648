"""Per-key token limits of generation requests (`--token-limit`, `keys create --token-limit`).

A request is charged up front what it may use, prompt tokens + max_tokens (a chat without
max_tokens: the whole context), so concurrent requests can never overrun the budget; when it ends
the unused part is refunded, leaving the key charged exactly the usage its answer reports
(prompt + completion tokens). A request refused before it runs (400, 503) is refunded in full, as
is one the server failed; one cut short by its client keeps the tokens generated until then. The
budget is a bucket of one minute's tokens in the replicas' shared table (skylift.serve.ratelimit),
so every replica charges the same one. Beyond it: 429 with Retry-After, in OpenAI's error shape.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from skylift.security.apikeys import KeyInfo
    from skylift.serve.ratelimit import RateLimiter


class TokenCharge:
    """Tokens taken from one key's budget for one request; `settle(used)` refunds the rest, once."""

    def __init__(self, limiter: RateLimiter, key_id: str, per_minute: float, tokens: int) -> None:
        self._limiter = limiter
        self._key_id = key_id
        self.per_minute = per_minute
        self.tokens = tokens
        self._settled = False

    def settle(self, used: int) -> None:
        """The request is over and used `used` tokens: give back what it was charged beyond that."""
        if not self._settled:
            self._settled = True
            self._limiter.refund(self._key_id, self.tokens - min(used, self.tokens), self.per_minute)


def charge_tokens(
    limiter: RateLimiter | None, key: KeyInfo | None, default_per_minute: float, tokens: int
) -> TokenCharge | None:
    """Charge `tokens` to `key`'s budget (its own limit, else the server's); None when no limit
    applies (no key, or a limit of 0). A 429 Reply, with Retry-After, when the budget lacks them."""
    if key is None or limiter is None:
        return None
    per_minute = key.token_limit or default_per_minute
    if per_minute <= 0:
        return None
    wait = limiter.take(key.key_id, tokens, per_minute)
    if wait == 0:
        return TokenCharge(limiter, key.key_id, per_minute, tokens)
    from skylift.serve.app import Reply

    limit = f"the token limit of {per_minute:g} tokens/min for key {key.name!r}"
    if math.isinf(wait):  # more than the bucket ever holds: waiting would not help
        need = f"this request takes {tokens:,} tokens (prompt + max_tokens)"
        raise Reply(429, f"{need}, more than {limit} allows: lower max_tokens")
    retry = max(1, math.ceil(wait))
    raise Reply(
        429,
        f"{limit} is used up: this request takes {tokens:,} tokens (prompt + max_tokens); retry in {retry} s",
        ((b"retry-after", str(retry).encode()),),
    )

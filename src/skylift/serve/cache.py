"""The response cache: answers to repeated inputs, kept in process memory (LRU by bytes) or in a shared Redis.

A key names the model, its version, the input tensor and the output options (`cache_key`); a value
is whatever bytes the server chooses to keep for it. Both backends share one contract
(`ResponseCache`) and one test suite. The cache is an optimisation only: a failing backend costs
a miss, never a failed request.
"""

from __future__ import annotations

import abc
import hashlib
import math
import re
import struct
import sys
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, TypeVar
from urllib.parse import urlsplit

import numpy as np

from skylift.errors import SpecError

if TYPE_CHECKING:
    import redis.asyncio

_MAX_CONNECTIONS = 64  # per replica: a local Redis answers in well under 1 ms each
REDIS_PREFIX = b"skylift:cache:"
"""Every Redis key the cache writes starts with this: skylift:cache:<model>:<version>:<sha256 hex>."""

_KEY_FORMAT = b"skylift-cache-key/1\0"  # bump when the hashed layout changes: old entries then miss
_T = TypeVar("_T")


def cache_key(model: str, version: int, x: np.ndarray | bytes, options: bytes) -> bytes:
    """`model:version:` then the SHA-256 hex of the canonical input and the output options.

    The input is hashed as float32 little-endian C-order bytes with its shape, so the same values
    give the same key whatever the caller's dtype, byte order or memory layout; values that differ
    in any bit (including 0.0 vs -0.0) give different keys. Bytes (a text model's inputs, as one
    BYTES tensor) are hashed as they are, as a 1-D uint8 "shape". `options` is everything else
    that changes the answer's bytes (requested outputs, binary or JSON, ...).
    """
    x_c = np.frombuffer(x, dtype=np.uint8) if isinstance(x, bytes) else np.asarray(x, dtype="<f4", order="C")
    h = hashlib.sha256(_KEY_FORMAT)
    # Lengths first, so no (shape, options, data) split can collide with another.
    h.update(struct.pack(f"<Q{x_c.ndim}QQ", x_c.ndim, *x_c.shape, len(options)))
    h.update(options)
    h.update(x_c.data)
    return f"{model}:{version}:".encode() + h.hexdigest().encode()


class ResponseCache(abc.ABC):
    """Maps `cache_key` bytes to response bytes within a byte budget.

    Contract, kept by every implementation and checked by one shared test suite:

    - `get` returns the value last `put` under the key, or None (a miss); `put` may decline to
      store (an entry over the size limit), so a `get` after a `put` may still miss.
    - Never raises to the caller because of the backend: a failing backend counts an error
      (`errors_total`) and behaves as a miss (`get`) or as a no-op (`put`, `invalidate`).
    - Threads: not thread-safe; one instance is used from one event loop (one per process).
    - Budget: `max_bytes` bounds the stored keys plus values (see each implementation for how).
    - `invalidate(model)` drops every entry of that model, all versions.
    - `stats()` is cheap (no I/O): hits_total, misses_total, errors_total, plus per-backend gauges.
    """

    def __init__(self, max_bytes: int) -> None:
        if max_bytes < 1:
            raise SpecError(f"cache max_bytes must be >= 1, got {max_bytes}")
        self.max_bytes = max_bytes
        self.hits = 0
        self.misses = 0
        self.errors = 0

    @abc.abstractmethod
    async def get(self, key: bytes) -> bytes | None:
        """The value stored under `key`, or None."""

    @abc.abstractmethod
    async def put(self, key: bytes, value: bytes) -> None:
        """Store `value` under `key` (or decline to, if it is too large)."""

    @abc.abstractmethod
    async def invalidate(self, model: str) -> None:
        """Drop every entry of `model`, all versions."""

    @abc.abstractmethod
    def stats(self) -> dict[str, float]:
        """Counters and gauges for /metrics, without I/O."""

    async def check(self) -> bool:
        """Whether the backend answers now (a start-up probe; logs like any failure)."""
        return True

    async def close(self) -> None:  # noqa: B027 - optional hook: most caches hold nothing to release
        """Release connections; the cache is not used afterwards."""

    def _counters(self) -> dict[str, float]:
        return {"hits_total": self.hits, "misses_total": self.misses, "errors_total": self.errors}


class MemoryCache(ResponseCache):
    """In-process LRU bounded by the summed length of keys and values.

    Python's per-object overhead (~100 bytes an entry) is not counted: the budget is payload bytes.
    An entry larger than the whole budget is not stored.
    """

    def __init__(self, max_bytes: int) -> None:
        super().__init__(max_bytes)
        self._entries: OrderedDict[bytes, bytes] = OrderedDict()  # oldest use first
        self._bytes = 0

    async def get(self, key: bytes) -> bytes | None:
        value = self._entries.get(key)
        if value is None:
            self.misses += 1
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        return value

    async def put(self, key: bytes, value: bytes) -> None:
        old = self._entries.pop(key, None)
        if old is not None:
            self._bytes -= len(key) + len(old)
        size = len(key) + len(value)
        if size > self.max_bytes:
            return
        self._entries[key] = value
        self._bytes += size
        while self._bytes > self.max_bytes:
            k, v = self._entries.popitem(last=False)
            self._bytes -= len(k) + len(v)

    async def invalidate(self, model: str) -> None:
        prefix = f"{model}:".encode()  # model names hold no ':' (registry rule)
        for key in [k for k in self._entries if k.startswith(prefix)]:
            self._bytes -= len(key) + len(self._entries.pop(key))

    def stats(self) -> dict[str, float]:
        return {**self._counters(), "bytes": self._bytes, "entries": len(self._entries)}


# The byte budget in Redis, kept by scripts so that replicas and hosts sharing the database update
# it atomically. Beside the entries: a sorted set of entry names by last use (`lru`), a hash of
# their sizes (`sizes`), the summed size (`bytes`) and a use counter (`clock`).
#
# Redis drops an expired entry by itself, but not from this bookkeeping. Every use (a put or a hit)
# sets the entry to expire one TTL later, so the expired entries are always the least recently
# used: a put first forgets the expired ones at the head of `lru`, so they hold no budget. At most
# 32 per put: after a long idle spell every entry may have expired, and a script blocks the Redis
# server (shared by every replica) while it runs; the eviction loop takes the rest, head first.
_PUT = """
local name, value, budget = KEYS[1], ARGV[1], tonumber(ARGV[2])
local function forget(victim)
  local vsize = tonumber(redis.call('HGET', KEYS[4], victim) or '0')
  redis.call('HDEL', KEYS[4], victim)
  redis.call('ZREM', KEYS[2], victim)
  redis.call('UNLINK', victim)
  return redis.call('DECRBY', KEYS[3], vsize)
end
for _ = 1, 32 do
  local head = redis.call('ZRANGE', KEYS[2], 0, 0)[1]
  if not head or redis.call('EXISTS', head) == 1 then break end
  forget(head)
end
local size = #name + #value
local old = tonumber(redis.call('HGET', KEYS[4], name) or '0')
redis.call('SET', name, value, 'PX', ARGV[3])
redis.call('HSET', KEYS[4], name, size)
redis.call('ZADD', KEYS[2], redis.call('INCR', KEYS[5]), name)
local total = redis.call('INCRBY', KEYS[3], size - old)
while total > budget do
  local victim = redis.call('ZRANGE', KEYS[2], 0, 0)[1]
  if not victim then redis.call('SET', KEYS[3], 0) break end
  total = forget(victim)
end
"""
_GET = """
local value = redis.call('GET', KEYS[1])
if value then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
  redis.call('ZADD', KEYS[2], 'XX', redis.call('INCR', KEYS[3]), KEYS[1])
end
return value
"""
_DROP = """
for _, name in ipairs(ARGV) do
  local size = tonumber(redis.call('HGET', KEYS[2], name) or '0')
  redis.call('HDEL', KEYS[2], name)
  redis.call('ZREM', KEYS[1], name)
  redis.call('UNLINK', name)
  redis.call('DECRBY', KEYS[3], size)
end
"""
# Model names never hold a NUL, so these cannot collide with an entry's name.
_LRU, _SIZES, _BYTES, _CLOCK = (REDIS_PREFIX + b"\0" + k for k in (b"lru", b"sizes", b"bytes", b"clock"))


class RedisCache(ResponseCache):
    """A cache shared by replicas and hosts in one Redis database, LRU within `max_bytes`.

    The budget counts entry names and values, like `MemoryCache` (Redis' own per-key overhead and
    the LRU bookkeeping are not counted); entries also expire `ttl_s` after their last use (a hit
    renews it), and leave the budget at the next `put`. A dead or hung Redis
    costs one `timeout_s` wait, after which Redis is skipped (every call a miss) for `retry_s`; the
    outage and the recovery are each logged once to stderr, and `healthy` is 0 in `stats()`
    meanwhile. `stats()` has no `bytes`/`entries`: the database is shared by all replicas, and
    Redis' INFO reports it better than any one replica.
    """

    def __init__(
        self,
        url: str,
        max_bytes: int,
        ttl_s: float = 3600.0,
        *,
        timeout_s: float = 0.05,
        retry_s: float = 1.0,
    ) -> None:
        super().__init__(max_bytes)
        self.url = _check_redis_url(url)
        """The URL without its password, for logs and errors."""
        if not (ttl_s > 0 and math.isfinite(ttl_s)):
            raise SpecError(f"cache ttl_s must be a positive number of seconds, got {ttl_s}")
        try:
            import redis.asyncio
            from redis.asyncio.retry import Retry
            from redis.backoff import NoBackoff
        except ImportError:
            raise SpecError(
                f"--cache {self.url} needs the redis package: pip install 'redis>=5.0.1'"
            ) from None
        # 50 ms: a local Redis answers in well under 1 ms; longer means it is gone or hung. No
        # client-side retries: the back-off below is the retry policy.
        # A blocking pool: past its connections a call waits (up to timeout_s) for a free one. The
        # default pool (redis-py 8: 100 connections) fails the call instead, and a burst of
        # concurrent requests then marked a healthy Redis unreachable.
        pool = redis.asyncio.BlockingConnectionPool.from_url(
            url,
            max_connections=_MAX_CONNECTIONS,
            timeout=timeout_s,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            retry=Retry(NoBackoff(), 0),
        )
        self._client: redis.asyncio.Redis = redis.asyncio.Redis.from_pool(pool)
        self._put, self._get, self._drop = (self._client.register_script(s) for s in (_PUT, _GET, _DROP))
        self._ttl_ms = max(1, int(ttl_s * 1000))
        self._retry_s = retry_s
        self._skip_until = 0.0  # time.monotonic() before which Redis is not tried
        self.healthy = True

    async def get(self, key: bytes) -> bytes | None:
        keys = [REDIS_PREFIX + key, _LRU, _CLOCK]
        value = await self._call(lambda c: self._get(keys=keys, args=[self._ttl_ms]))
        if not isinstance(value, bytes):
            self.misses += 1
            return None
        self.hits += 1
        return value

    async def put(self, key: bytes, value: bytes) -> None:
        name = REDIS_PREFIX + key
        if len(name) + len(value) > self.max_bytes:
            return
        keys = [name, _LRU, _BYTES, _SIZES, _CLOCK]
        await self._call(lambda c: self._put(keys=keys, args=[value, self.max_bytes, self._ttl_ms]))

    async def invalidate(self, model: str) -> None:
        pattern = REDIS_PREFIX + _glob_escape(model).encode() + b":*"

        async def drop(client: redis.asyncio.Redis) -> None:
            # The names in `sizes`, not SCAN of the keyspace: those include expired entries, still
            # counted in the budget. HSCAN, not HKEYS: that would block the Redis server (shared by
            # every replica) for a whole pass.
            batch: list[bytes] = []
            async for name, _ in client.hscan_iter(_SIZES, match=pattern, count=1000):
                batch.append(name)
                if len(batch) >= 500:
                    await self._drop(keys=[_LRU, _SIZES, _BYTES], args=batch)
                    batch.clear()
            if batch:
                await self._drop(keys=[_LRU, _SIZES, _BYTES], args=batch)

        await self._call(drop)

    async def check(self) -> bool:
        return await self._call(lambda c: c.ping()) is not None

    def stats(self) -> dict[str, float]:
        return {**self._counters(), "healthy": 1 if self.healthy else 0}

    async def close(self) -> None:
        await self._client.aclose()

    async def _call(self, op: Callable[[redis.asyncio.Redis], Awaitable[_T]]) -> _T | None:
        """`op(client)`, or None while backing off or when it fails (counted and logged)."""
        if time.monotonic() < self._skip_until:
            return None
        try:
            result = await op(self._client)
        except Exception as exc:  # any backend failure must cost a miss, never a failed request
            self.errors += 1
            self._skip_until = time.monotonic() + self._retry_s
            if self.healthy:
                self.healthy = False
                _log(
                    f"response cache {self.url} unreachable ({type(exc).__name__}: {str(exc)[:200]}); "
                    f"serving uncached, retrying every {self._retry_s:g} s"
                )
            return None
        if not self.healthy:
            self.healthy = True
            _log(f"response cache {self.url} is back")
        return result


def make_cache(spec: str | None, max_mb: float) -> ResponseCache | None:
    """The cache `--cache SPEC --cache-mb MAX_MB` asks for: None when MAX_MB is 0.

    SPEC: None or "memory" (in this process), or redis://HOST:PORT/DB (rediss:// for TLS).
    """
    if not (max_mb >= 0 and math.isfinite(max_mb)):
        raise SpecError(f"--cache-mb must be >= 0 (0 turns the cache off), got {max_mb}")
    if max_mb == 0:
        return None
    max_bytes = max(1, int(max_mb * 2**20))  # MiB
    if spec is None or spec == "memory":
        return MemoryCache(max_bytes)
    if spec.startswith(("redis://", "rediss://")):
        return RedisCache(spec, max_bytes)
    raise SpecError(f"--cache must be 'memory' or redis://HOST:PORT/DB, got {_redact(spec)!r}")


def _check_redis_url(url: str) -> str:
    """`url` without its password; SpecError naming the problem unless redis[s]://HOST[:PORT][/DB]."""
    shown = _redact(url)
    fix = "use redis://HOST:PORT/DB (rediss:// for TLS)"
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a port that is not a number in range
    except ValueError as exc:
        raise SpecError(f"--cache {shown!r} is not a valid URL ({exc}); {fix}") from None
    if parts.scheme not in ("redis", "rediss") or not parts.hostname:
        raise SpecError(f"--cache {shown!r} is not a Redis URL; {fix}")
    db = parts.path.strip("/")
    if db and not db.isdigit():
        raise SpecError(f"--cache {shown!r}: the database must be a number, got {db!r}; {fix}")
    return shown


def _redact(url: str) -> str:
    return re.sub(r"//[^/@]*@", "//****@", url)


def _glob_escape(text: str) -> str:
    return re.sub(r"([*?\[\]\\])", r"\\\1", text)


def _log(message: str) -> None:
    print(f"skylift serve: {message}", file=sys.stderr, flush=True)

"""The response cache: one contract suite run on memory and on a real redis-server, outages, key hashing."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Awaitable, Callable, Iterator

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from skylift.errors import SpecError
from skylift.serve.cache import MemoryCache, RedisCache, ResponseCache, cache_key, make_cache
from tests.conftest import free_port

REDIS = shutil.which("redis-server")
needs_redis = pytest.mark.skipif(
    REDIS is None, reason="redis-server not installed (scripts/test installs it)"
)
Body = Callable[[ResponseCache], Awaitable[None]]


class RedisServer:
    """A throwaway redis-server on 127.0.0.1:port, no persistence; restartable on the same port."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.url = f"redis://127.0.0.1:{port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        assert REDIS is not None
        args = ["--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        self.proc = subprocess.Popen([REDIS, *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.command(b"PING") == b"+PONG":
                return
            assert self.proc.poll() is None, f"redis-server exited with {self.proc.returncode}"
            time.sleep(0.02)
        raise TimeoutError(f"redis-server on port {self.port} did not answer PING")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, sig)

    def command(self, *words: bytes) -> bytes | None:
        """One inline command's first reply line, or None if the server does not answer."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                s.sendall(b" ".join(words) + b"\r\n")
                return s.recv(65536).split(b"\r\n")[0]
        except OSError:
            return None


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    if REDIS is None:
        pytest.skip("redis-server not installed (scripts/test installs it)")
    server = RedisServer(free_port())
    server.start()
    yield server
    server.stop()


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    """A server of the test's own, to kill and restart."""
    if REDIS is None:
        pytest.skip("redis-server not installed (scripts/test installs it)")
    server = RedisServer(free_port())
    server.start()
    yield server
    server.stop()


@pytest.fixture(params=["memory", "redis"])
def use(request: pytest.FixtureRequest) -> Callable[..., None]:
    """use(body, max_bytes): run `async body(cache)` on a fresh, empty cache of the parametrized kind."""

    def run(body: Body, max_bytes: int = 1 << 20) -> None:
        async def main() -> None:
            if request.param == "memory":
                cache: ResponseCache = MemoryCache(max_bytes)
            else:
                server: RedisServer = request.getfixturevalue("redis_server")
                assert server.command(b"FLUSHALL") == b"+OK"
                cache = RedisCache(server.url, max_bytes)
            try:
                await body(cache)
            finally:
                await cache.close()

        asyncio.run(main())

    return run


def _key(model: str = "m", version: int = 1, seed: int = 0, options: bytes = b"") -> bytes:
    x = np.random.default_rng(seed).standard_normal((2, 3)).astype(np.float32)
    return cache_key(model, version, x, options)


# ---- the contract, on every implementation -------------------------------------------------------


def test_miss_then_hit(use: Callable[..., None]) -> None:
    async def body(cache: ResponseCache) -> None:
        key = _key()
        assert await cache.get(key) is None
        await cache.put(key, b"answer")
        assert await cache.get(key) == b"answer"
        await cache.put(key, b"newer")
        assert await cache.get(key) == b"newer"

    use(body)


def test_options_version_model_and_input_are_separate_entries(use: Callable[..., None]) -> None:
    async def body(cache: ResponseCache) -> None:
        keys = [_key(), _key(options=b"binary"), _key(version=2), _key(model="n"), _key(seed=1)]
        assert len(set(keys)) == len(keys)
        for i, key in enumerate(keys):
            await cache.put(key, f"value {i}".encode())
        assert [await cache.get(k) for k in keys] == [f"value {i}".encode() for i in range(len(keys))]

    use(body)


def test_entry_over_the_budget_is_not_stored(use: Callable[..., None]) -> None:
    async def body(cache: ResponseCache) -> None:
        small, big = _key(seed=1), _key(seed=2)
        await cache.put(small, b"small")
        await cache.put(big, b"x" * 4096)
        assert await cache.get(big) is None
        assert await cache.get(small) == b"small"  # the refused entry evicted nothing

    use(body, max_bytes=4096)


def test_invalidate_drops_one_models_entries_only(use: Callable[..., None]) -> None:
    async def body(cache: ResponseCache) -> None:
        gone = [_key("mnist", 1), _key("mnist", 2, options=b"o")]
        kept = [_key("mnist-mlp", 1), _key("mnistx", 1), _key("other", 1)]
        for k in gone + kept:
            await cache.put(k, k)
        await cache.invalidate("mnist")
        assert [await cache.get(k) for k in gone] == [None, None]
        assert [await cache.get(k) for k in kept] == kept
        await cache.invalidate("never-cached")

    use(body)


def test_stats_count_hits_and_misses(use: Callable[..., None]) -> None:
    async def body(cache: ResponseCache) -> None:
        a, b = _key(seed=1), _key(seed=2)
        await cache.get(a)
        await cache.put(a, b"A")
        await cache.get(a)
        await cache.get(a)
        await cache.get(b)
        stats = cache.stats()
        assert (stats["hits_total"], stats["misses_total"], stats["errors_total"]) == (2, 2, 0)
        assert all(isinstance(v, int | float) for v in stats.values())
        if isinstance(cache, MemoryCache):
            assert (stats["entries"], stats["bytes"]) == (1, len(a) + 1)
        else:
            assert stats["healthy"] == 1

    use(body)


# ---- in memory -----------------------------------------------------------------------------------


def test_evicts_least_recently_used_by_bytes(use: Callable[..., None]) -> None:
    keys = [_key(seed=i) for i in range(4)]
    size = len(b"skylift:cache:" + keys[0]) + 100  # every entry: its (Redis) name + a 100-byte value

    async def body(cache: ResponseCache) -> None:
        for k in keys[:3]:
            await cache.put(k, b"v" * 100)
        assert await cache.get(keys[0]) is not None  # keys[0] becomes the most recent
        await cache.put(keys[3], b"v" * 100)
        assert await cache.get(keys[1]) is None  # the least recent went
        assert all([await cache.get(k) for k in (keys[0], keys[2], keys[3])])
        # One large entry pushes out as many old ones as it needs.
        await cache.put(keys[1], b"v" * (2 * size))
        assert [await cache.get(k) is not None for k in keys] == [False, True, False, False]

    use(body, 3 * size + 50)


def test_memory_counts_its_bytes() -> None:
    async def body() -> None:
        cache = MemoryCache(1000)
        for i in range(30):
            await cache.put(_key(seed=i), b"v" * 100)
        entry = len(_key()) + 100
        assert cache.stats()["entries"] == 1000 // entry and cache.stats()["bytes"] == (1000 // entry) * entry
        await cache.put(_key(seed=0), b"v" * (1000 - len(_key())))  # exactly the budget fits
        assert await cache.get(_key(seed=0)) is not None and cache.stats()["bytes"] == 1000

    asyncio.run(body())


# ---- in Redis ------------------------------------------------------------------------------------


@needs_redis
def test_redis_keys_are_namespaced_and_expire(redis_server: RedisServer) -> None:
    assert redis_server.command(b"FLUSHALL") == b"+OK"
    key = cache_key("mnist-mlp", 3, np.zeros((1, 4), np.float32), b"")

    async def body() -> None:
        cache = RedisCache(redis_server.url, max_bytes=1000, ttl_s=60)
        try:
            name = b"skylift:cache:" + key
            await cache.put(key, b"v" * (1000 - len(name)))  # exactly the budget: stored
            await cache.put(_key(), b"v" * 1000)  # over the budget: not stored
            assert await cache.get(key) is not None and await cache.get(_key()) is None
            assert redis_server.command(b"EXISTS", name) == b":1"
            assert name.startswith(b"skylift:cache:mnist-mlp:3:")
            # Every key the cache wrote (the entry and its LRU bookkeeping) is under the prefix.
            assert redis_server.command(b"KEYS", b"skylift:cache:*") == redis_server.command(
                b"DBSIZE"
            ).replace(b":", b"*")
            ttl_ms = int((redis_server.command(b"PTTL", name) or b":0")[1:])
            assert 0 < ttl_ms <= 60_000
        finally:
            await cache.close()

    asyncio.run(body())


@needs_redis
def test_replicas_sharing_redis_share_one_byte_budget(redis_server: RedisServer) -> None:
    """Two caches on one database (two replicas) never hold more than the budget between them."""
    import redis

    assert redis_server.command(b"FLUSHALL") == b"+OK"
    budget = 20_000

    async def body() -> None:
        a, b = RedisCache(redis_server.url, budget), RedisCache(redis_server.url, budget)
        try:
            await asyncio.gather(
                *(c.put(_key(seed=i), b"v" * (100 + i)) for i in range(300) for c in ((a, b)[i % 2],))
            )
        finally:
            await a.close()
            await b.close()

    asyncio.run(body())
    client = redis.Redis.from_url(redis_server.url)
    names = list(client.scan_iter(match=b"skylift:cache:m:*"))
    held = sum(len(n) + int(client.strlen(n)) for n in names)
    assert 0 < held <= budget
    assert int(client.get(b"skylift:cache:\0bytes") or 0) == held  # the shared count is exact
    assert client.zcard(b"skylift:cache:\0lru") == client.hlen(b"skylift:cache:\0sizes") == len(names)
    client.close()


@needs_redis
def test_redis_invalidate_scans_in_batches(redis_server: RedisServer) -> None:
    assert redis_server.command(b"FLUSHALL") == b"+OK"

    async def body() -> None:
        cache = RedisCache(redis_server.url, max_bytes=1 << 20)
        try:
            for i in range(1200):  # more than one SCAN page and one UNLINK batch
                await cache.put(_key("big", 1, options=str(i).encode()), b"v")
            await cache.put(_key("small", 1), b"v")
            await cache.invalidate("big")
            assert redis_server.command(b"KEYS", b"skylift:cache:[a-z]*") == b"*1"
            assert await cache.get(_key("small", 1)) == b"v"
            import redis

            with redis.Redis.from_url(redis_server.url) as client:  # the dropped entries left the budget
                small = b"skylift:cache:" + _key("small", 1)
                assert int(client.get(b"skylift:cache:\0bytes") or 0) == len(small) + 1
        finally:
            await cache.close()

    asyncio.run(body())


def _bookkeeping(server: RedisServer) -> tuple[int, int, int]:
    """(bytes counted, names in the LRU, names with a size): what the budget believes is stored."""
    import redis

    with redis.Redis.from_url(server.url) as client:
        counted = int(client.get(b"skylift:cache:\0bytes") or 0)
        return counted, client.zcard(b"skylift:cache:\0lru"), client.hlen(b"skylift:cache:\0sizes")


@needs_redis
def test_redis_expired_entries_leave_the_byte_budget(redis_server: RedisServer) -> None:
    assert redis_server.command(b"FLUSHALL") == b"+OK"
    old, new = _key(seed=1), _key(seed=2)

    async def body() -> None:
        cache = RedisCache(redis_server.url, max_bytes=1 << 20, ttl_s=0.3)
        try:
            await cache.put(old, b"v" * 100)
            await cache.put(_key(seed=3), b"v" * 100)
            await asyncio.sleep(0.5)  # both expired
            await cache.put(new, b"v" * 10)
        finally:
            await cache.close()

    asyncio.run(body())
    assert _bookkeeping(redis_server) == (len(b"skylift:cache:" + new) + 10, 1, 1)


@needs_redis
def test_redis_invalidate_drops_expired_entries_too(redis_server: RedisServer) -> None:
    assert redis_server.command(b"FLUSHALL") == b"+OK"

    async def body() -> None:
        cache = RedisCache(redis_server.url, max_bytes=1 << 20, ttl_s=0.3)
        try:
            await cache.put(_key("gone", 1), b"v" * 100)
            await cache.put(_key("gone", 2), b"v" * 100)
            await asyncio.sleep(0.5)  # expired: Redis no longer lists their names
            await cache.invalidate("gone")
        finally:
            await cache.close()

    asyncio.run(body())
    assert _bookkeeping(redis_server) == (0, 0, 0)


@needs_redis
def test_redis_a_read_renews_an_entrys_expiry(redis_server: RedisServer) -> None:
    """Entries expire a TTL after their last use, so the expired ones are always the least recent."""
    assert redis_server.command(b"FLUSHALL") == b"+OK"

    async def body() -> None:
        cache = RedisCache(redis_server.url, max_bytes=1 << 20, ttl_s=1.0)
        try:
            await cache.put(_key(), b"hot")
            for _ in range(3):
                await asyncio.sleep(0.5)
                assert await cache.get(_key()) == b"hot"  # 1.5 s after the put, read every 0.5 s
        finally:
            await cache.close()

    asyncio.run(body())


async def _twenty_calls(cache: ResponseCache) -> float:
    start = time.perf_counter()
    for i in range(10):
        assert await cache.get(_key(seed=i)) is None
        await cache.put(_key(seed=i), b"v")
    return time.perf_counter() - start


async def _until_hit(cache: ResponseCache, timeout_s: float = 5.0) -> None:
    key = _key(seed=99)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        await cache.put(key, b"back")
        if await cache.get(key) == b"back":
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the cache never hit again after Redis came back")


@needs_redis
@pytest.mark.parametrize("outage", ["killed", "hung"])
def test_redis_outage_is_a_fast_miss_then_recovers(
    own_redis: RedisServer, outage: str, capsys: pytest.CaptureFixture[str]
) -> None:
    async def body() -> None:
        cache = RedisCache(own_redis.url, max_bytes=1 << 20, retry_s=0.3)
        try:
            assert await cache.check()
            await cache.put(_key(), b"v")
            assert await cache.get(_key()) == b"v"
            if outage == "killed":
                own_redis.stop()
            else:
                own_redis.signal(signal.SIGSTOP)
            assert await _twenty_calls(cache) < 0.5  # one 50 ms timeout at most, then skipped
            stats = cache.stats()
            assert stats["healthy"] == 0 and stats["errors_total"] >= 1
            assert not await cache.check()
            await cache.invalidate("m")  # no raise either
            if outage == "killed":
                own_redis.start()
            else:
                own_redis.signal(signal.SIGCONT)
            await _until_hit(cache)
            assert cache.stats()["healthy"] == 1
        finally:
            if outage == "hung" and own_redis.proc is not None:
                own_redis.signal(signal.SIGCONT)
            await cache.close()

    asyncio.run(body())
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2, lines  # one line when it goes, one when it is back
    assert "unreachable" in lines[0] and "serving uncached" in lines[0] and own_redis.url in lines[0]
    assert lines[1].endswith("is back")


@needs_redis
def test_redis_down_from_the_start(capsys: pytest.CaptureFixture[str]) -> None:
    async def body() -> None:
        cache = RedisCache(f"redis://127.0.0.1:{free_port()}/0", max_bytes=1 << 20)
        try:
            assert not await cache.check()
            assert await _twenty_calls(cache) < 0.5
            assert cache.stats()["healthy"] == 0
        finally:
            await cache.close()

    asyncio.run(body())
    assert len(capsys.readouterr().err.splitlines()) == 1


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:6379/0",
        "redis://",
        "redis://127.0.0.1:notaport/0",
        "redis://127.0.0.1:6379/zero",
        "rediss://user:s3cret@127.0.0.1:99999/0",
    ],
)
def test_redis_url_is_checked_and_never_echoes_a_password(url: str) -> None:
    with pytest.raises(SpecError) as err:
        RedisCache(url, max_bytes=1 << 20)
    message = str(err.value)
    assert "\n" not in message and "s3cret" not in message and "redis://HOST:PORT/DB" in message


# ---- make_cache ----------------------------------------------------------------------------------


def test_make_cache() -> None:
    assert make_cache("memory", 0) is None
    assert make_cache("redis://127.0.0.1:1/0", 0) is None
    cache = make_cache(None, 1.5)
    assert isinstance(cache, MemoryCache) and cache.max_bytes == 3 << 19
    assert isinstance(make_cache("memory", 1), MemoryCache)
    redis_cache = make_cache("rediss://:pw@cache.internal:6380/2", 64)
    assert isinstance(redis_cache, RedisCache) and redis_cache.url == "rediss://****@cache.internal:6380/2"
    asyncio.run(redis_cache.close())
    for bad in (-1.0, float("nan"), float("inf")):
        with pytest.raises(SpecError, match="--cache-mb must be >= 0"):
            make_cache(None, bad)
    with pytest.raises(SpecError, match="--cache must be 'memory' or redis://"):
        make_cache("memcached://x:pw@h", 1)


# ---- cache_key -----------------------------------------------------------------------------------

float32s = st.floats(width=32, allow_nan=False)
inputs = hnp.arrays(
    np.float32, hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4), elements=float32s
)


def test_cache_key_is_readable_and_fixed() -> None:
    key = cache_key("mnist-mlp", 3, np.arange(6, dtype=np.float32).reshape(2, 3), b"json")
    model, version, digest = key.split(b":")
    assert (model, version, len(digest)) == (b"mnist-mlp", b"3", 64)
    int(digest, 16)


@given(inputs, st.binary(max_size=16))
def test_cache_key_same_values_same_key_whatever_the_layout(x: np.ndarray, options: bytes) -> None:
    key = cache_key("m", 1, x, options)
    assert cache_key("m", 1, x.copy(), bytes(options)) == key
    assert cache_key("m", 1, x.astype(">f4"), options) == key
    assert cache_key("m", 1, x.astype(np.float64), options) == key
    if x.ndim:  # asfortranarray and slicing turn a 0-d array into a 1-d one
        assert cache_key("m", 1, np.asfortranarray(x), options) == key
        strided = np.repeat(x, 2, axis=-1)[..., ::2]  # same values, not contiguous
        assert cache_key("m", 1, strided, options) == key


@given(inputs.filter(lambda x: x.size > 0), st.data())
def test_cache_key_any_changed_element_changes_the_key(x: np.ndarray, data: st.DataObject) -> None:
    i = data.draw(st.integers(0, x.size - 1))
    y = x.copy()
    y.flat[i] = data.draw(float32s)
    assume(y.tobytes() != x.tobytes())  # bitwise: 0.0 and -0.0 are different inputs here
    assert cache_key("m", 1, y, b"") != cache_key("m", 1, x, b"")


@given(inputs)
def test_cache_key_same_bytes_other_shape_changes_the_key(x: np.ndarray) -> None:
    shapes = {x.shape, (x.size,), (1, x.size), (x.size, 1), x.shape[::-1], (*x.shape, 1)}
    keys = {cache_key("m", 1, x.reshape(s), b"") for s in shapes}
    assert len(keys) == len(shapes)


@given(inputs, st.binary(max_size=8), st.binary(max_size=8), st.integers(1, 10**18), st.integers(1, 10**18))
def test_cache_key_options_version_and_model_change_the_key(
    x: np.ndarray, o1: bytes, o2: bytes, v1: int, v2: int
) -> None:
    base = cache_key("m", v1, x, o1)
    assert (cache_key("m", v1, x, o2) == base) == (o1 == o2)
    assert (cache_key("m", v2, x, o1) == base) == (v1 == v2)
    assert cache_key("n", v1, x, o1) != base

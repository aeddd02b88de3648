"""One client process: N keep-alive connections, each a closed loop of request -> response -> next.

Runs on uvloop when it is installed, else on asyncio's default loop (measured here against a
constant granian server at concurrency 64: 15-18 us of client CPU per request on uvloop, 16-20 us on
asyncio; wrk needs about 8). The hot path per response is: parse the head, record the latency, join
the pre-built request bytes around a fresh stamp, write. Times are `time.monotonic()`, one clock for
every process of the machine, so the parent can hand all workers the same window.
"""

from __future__ import annotations

import asyncio
import signal
import ssl
import time
from array import array
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

from skylift.loadgen._body import STAMPS, binary_stamp, text_stamp
from skylift.loadgen._http import ProtocolError, ResponseParser, error_text

if TYPE_CHECKING:
    from multiprocessing.connection import Connection

_SAMPLE_BYTES = 300  # characters of an error message kept as its example
_RECONNECT_PAUSE_S = 0.05  # between failed connection attempts: 20/s per connection, not a spin


@dataclass(frozen=True)
class Plan:
    """What one process sends (picklable: crosses to spawned processes)."""

    host: str
    port: int
    tls: bool
    server_hostname: str
    insecure: bool
    cacert: str | None
    head: bytes = field(repr=False)
    body: bytes = field(repr=False)
    slot: int
    binary: bool
    unique: bool
    connections: int
    quota: int | None
    """Measured requests after which this process stops early."""
    timeout_s: float
    index: int = 0
    """This process's number; with `processes` it keeps stamps distinct across processes."""
    processes: int = 1
    repeat_every: int = 0
    """With `unique`: every N-th request repeats one fixed body (0: none), a cache-hit workload."""


@dataclass(frozen=True)
class Window:
    """When to start sending, and the measured window [measure_from, measure_until)."""

    start: float
    measure_from: float
    measure_until: float


@dataclass
class WorkerResult:
    """What one process measured inside the window."""

    statuses: dict[int, int] = field(default_factory=dict)
    """HTTP responses by status."""
    failures: dict[str, int] = field(default_factory=dict)
    """Requests without an HTTP response: connect, closed, timeout, protocol."""
    samples: dict[str, str] = field(default_factory=dict)
    """First error message seen per status / failure kind."""
    latencies: bytes = b""
    """float64 seconds of the successful (2xx) responses, machine byte order."""
    measured_until: float = 0.0
    """End of this process's measurement (the window's end, or when its quota was reached)."""
    cpu_s: float = 0.0
    """CPU seconds this process used during the window."""
    loop: str = "asyncio"
    versions: dict[str, list[int]] = field(default_factory=dict)
    """X-Model-Version of the responses -> [responses, 2xx responses] (a traffic split's shares)."""


def ssl_context(insecure: bool, cacert: str | None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=cacert)
    if insecure:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def new_event_loop() -> tuple[asyncio.AbstractEventLoop, str]:
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop(), "asyncio"
    return uvloop.new_event_loop(), "uvloop"


class _Conn(asyncio.Protocol):
    __slots__ = ("client", "parser", "sent_at", "transport")

    def __init__(self, client: _Client) -> None:
        self.client = client
        self.parser = ResponseParser()
        self.transport: asyncio.Transport | None = None
        self.sent_at = 0.0  # 0: no request in flight

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        try:
            response = self.parser.feed(data)
        except ProtocolError as exc:
            self.client.fail(self, "protocol", str(exc))
            return
        if response is not None:
            self.client.on_response(self, *response)

    def eof_received(self) -> bool | None:
        response = self.parser.eof()
        if response is not None:
            self.client.on_response(self, *response)
        return None  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self.client.on_lost(self, exc)


class _Client:
    """The connections of one process, their shared counters and the window they record in."""

    def __init__(self, plan: Plan, loop: asyncio.AbstractEventLoop, ssl_ctx: ssl.SSLContext | None) -> None:
        self.plan = plan
        self.loop = loop
        self.ssl_ctx = ssl_ctx
        self.conns: set[_Conn] = set()
        self.tasks: set[asyncio.Task[None]] = set()
        self.pre = plan.head + plan.body[: plan.slot]
        self.post = plan.body[plan.slot + (4 if plan.binary else 11) :]
        self.fixed = plan.head + plan.body
        self.stamp = binary_stamp if plan.binary else text_stamp
        # Stamp 0 is the probe's; process i sends 1 + i, 1 + i + P, ... so none repeats another's.
        self.n = 1 + plan.index
        self.sent = 0
        self.sending = False  # requests go out (the window has started, and not ended)
        self.stopped = False  # the window has ended: no more requests, no more reconnects
        self.measure_from = self.measure_until = float("inf")
        self.latencies = array("d")
        self.statuses: dict[int, int] = {}
        self.failures: dict[str, int] = {}
        self.samples: dict[str, str] = {}
        self.versions: dict[bytes, list[int]] = {}
        self.counted = 0
        self.cpu_from = self.cpu_until = time.process_time()
        self.quota = plan.quota if plan.quota is not None else -1
        self.done: asyncio.Future[float] = loop.create_future()

    # -- connections -------------------------------------------------------------------------
    async def connect(self) -> _Conn:
        p = self.plan
        _, conn = await self.loop.create_connection(
            lambda: _Conn(self),
            p.host,
            p.port,
            ssl=self.ssl_ctx,
            server_hostname=p.server_hostname if self.ssl_ctx else None,
        )
        self.conns.add(conn)
        return conn

    async def reconnect(self) -> None:
        while not self.stopped:
            try:
                conn = await self.connect()
            except OSError as exc:
                self._count_failure("connect", str(exc))
                await asyncio.sleep(_RECONNECT_PAUSE_S)
                continue
            if self.sending:
                self.send(conn)
            return

    # -- the hot path --------------------------------------------------------------------------
    def send(self, conn: _Conn) -> None:
        self.sent += 1
        every = self.plan.repeat_every
        if self.plan.unique and not (every and self.sent % every == 0):
            data = self.pre + self.stamp(self.n) + self.post
            self.n = (self.n + self.plan.processes) % STAMPS
        else:
            data = self.fixed
        conn.sent_at = time.monotonic()
        conn.transport.write(data)  # type: ignore[union-attr]

    def on_response(self, conn: _Conn, status: int, body: bytes, close: bool) -> None:
        now = time.monotonic()
        sent_at, conn.sent_at = conn.sent_at, 0.0
        if sent_at and self.measure_from <= now < self.measure_until:
            self.statuses[status] = self.statuses.get(status, 0) + 1
            if 200 <= status < 300:
                self.latencies.append(now - sent_at)
            elif str(status) not in self.samples:
                self.samples[str(status)] = error_text(body, _SAMPLE_BYTES)
            version = conn.parser.version
            if version:
                counts = self.versions.get(version) or self.versions.setdefault(version, [0, 0])
                counts[0] += 1
                counts[1] += 200 <= status < 300
            self.counted += 1
            if self.counted == self.quota:
                self.stop(now)
        if close:
            conn.transport.close()  # type: ignore[union-attr]  # on_lost reopens it
        elif self.sending:
            self.send(conn)

    # -- failures ------------------------------------------------------------------------------
    def _count_failure(self, kind: str, message: str) -> None:
        now = time.monotonic()
        if self.measure_from <= now < self.measure_until:
            self.failures[kind] = self.failures.get(kind, 0) + 1
            self.samples.setdefault(kind, message[:_SAMPLE_BYTES])
            self.counted += 1
            if self.counted == self.quota:
                self.stop(now)

    def fail(self, conn: _Conn, kind: str, message: str) -> None:
        """Count the request in flight on `conn` as failed and drop the connection."""
        if conn.sent_at:
            conn.sent_at = 0.0
            self._count_failure(kind, message)
        if conn.transport is not None:
            conn.transport.abort()

    def on_lost(self, conn: _Conn, exc: Exception | None) -> None:
        self.conns.discard(conn)
        if conn.sent_at:
            conn.sent_at = 0.0
            self._count_failure("closed", f"connection closed mid-request: {exc or 'by the server'}")
        if not self.stopped:  # also before the start: a server may close idle connections
            task = self.loop.create_task(self.reconnect())
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    async def watchdog(self) -> None:
        timeout = self.plan.timeout_s
        while self.sending:
            await asyncio.sleep(min(timeout / 4, 0.25))
            limit = time.monotonic() - timeout
            for conn in list(self.conns):
                if conn.sent_at and conn.sent_at < limit:
                    self.fail(conn, "timeout", f"no response within {timeout:g} s")

    def stop(self, now: float) -> None:
        if not self.stopped:
            self.cpu_until = time.process_time()
            self.measure_until = min(self.measure_until, now)  # responses already read don't count
        self.sending = False
        self.stopped = True
        if not self.done.done():
            self.done.set_result(now)

    # -- one run -------------------------------------------------------------------------------
    async def run(self, window: Window) -> float:
        self.measure_from, self.measure_until = window.measure_from, window.measure_until
        await asyncio.sleep(max(0.0, window.start - time.monotonic()))
        self.sending = True
        for conn in list(self.conns):
            self.send(conn)
        dog = self.loop.create_task(self.watchdog())
        self.loop.call_at(self._loop_time(window.measure_from), self._mark_cpu)
        self.loop.call_at(self._loop_time(window.measure_until), self.stop, window.measure_until)
        until = await self.done
        self.sending = False
        tasks = [dog, *self.tasks]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for conn in list(self.conns):
            conn.sent_at = 0.0  # requests cut off by the end of the window are not failures
            if conn.transport is not None:
                conn.transport.abort()
        await asyncio.sleep(0)  # let connection_lost callbacks run before the loop closes
        return until

    def _mark_cpu(self) -> None:
        self.cpu_from = time.process_time()

    def _loop_time(self, monotonic: float) -> float:
        return self.loop.time() + (monotonic - time.monotonic())


async def run_plan(
    plan: Plan, gate: Callable[[], Awaitable[Window]], loop_name: str = "asyncio"
) -> WorkerResult:
    """Open the plan's connections, await the window from `gate`, run it, return what was measured.

    Opening every connection before the window starts keeps TCP/TLS handshakes out of the figures;
    an OSError while opening them propagates (the server is unreachable)."""
    loop = asyncio.get_running_loop()
    ctx = ssl_context(plan.insecure, plan.cacert) if plan.tls else None
    client = _Client(plan, loop, ctx)
    await asyncio.gather(*(client.connect() for _ in range(plan.connections)))
    window = await gate()
    until = await client.run(window)
    return WorkerResult(
        statuses=client.statuses,
        failures=client.failures,
        samples=client.samples,
        latencies=client.latencies.tobytes(),
        measured_until=until,
        cpu_s=client.cpu_until - client.cpu_from,
        loop=loop_name,
        versions={v.decode("latin-1"): counts for v, counts in client.versions.items()},
    )


def process_main(pipe: Connection, plan: Any, run: Callable[..., Awaitable[Any]] = run_plan) -> None:
    """Entry of a spawned client process: ("ready") -> wait ("go", Window) -> ("result", ...).

    `run` is `run_plan` for a Plan, or another mode's runner of the same shape (a module-level
    function, so it pickles). Any failure goes back as ("error", one line); Ctrl-C is the parent's."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    loop, name = new_event_loop()

    async def gate() -> Window:
        pipe.send(("ready", None))
        message: tuple[str, Any] = await loop.run_in_executor(None, pipe.recv)
        if message[0] != "go":
            raise SystemExit(0)
        window: Window = message[1]
        return window

    try:
        result = loop.run_until_complete(run(plan, gate, name))
    except OSError as exc:
        pipe.send(("error", f"cannot connect to {plan.host}:{plan.port}: {exc.strerror or exc}"))
    except SystemExit:
        pass
    except BaseException as exc:  # report, never hang the parent
        pipe.send(("error", f"{type(exc).__name__}: {exc}"))
    else:
        pipe.send(("result", result))
    finally:
        loop.close()

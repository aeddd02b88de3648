"""One client process of the OpenAI mode: N keep-alive connections, each streaming one completion
after another (closed loop), timing every server-sent event as it lands.

Per request: time to first token (the first chunk with text), the gaps between text chunks
(inter-token latency; the server sends a chunk per token unless the client reads slower than it
generates), time per output token after the first, the whole stream's latency, and the usage the
server reports at the end (`stream_options.include_usage`; without it, text chunks are counted).
A request counts when it was sent inside the measured window; at the window's end no new request
is sent and those in flight are read to their end (bounded by the timeout), so every token a
measured request made is counted, and nothing else is.
"""

from __future__ import annotations

import asyncio
import time
from array import array
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, cast

import orjson

from skylift.loadgen._http import ProtocolError, error_text
from skylift.loadgen._sse import StreamParser
from skylift.loadgen._worker import Window, ssl_context

_SAMPLE_CHARS = 300  # characters of an error message kept as its example
_RECONNECT_PAUSE_S = 0.05


def error_message(body: bytes) -> str:
    """The server's words: OpenAI's `{"error": {"message": ...}}`, `{"error": "..."}`, or the body."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        doc = None
    error = doc.get("error") if isinstance(doc, dict) else None
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        return str(error["message"])[:_SAMPLE_CHARS]
    return error_text(body, _SAMPLE_CHARS)


@dataclass(frozen=True)
class StreamPlan:
    """What one process sends (picklable: crosses to spawned processes)."""

    host: str
    port: int
    tls: bool
    server_hostname: str
    insecure: bool
    cacert: str | None
    head: bytes = field(repr=False)
    """The request line and headers up to (not including) Content-Length."""
    body: Callable[[int], bytes] = field(repr=False)
    """The JSON body of request number n (a module-level function: picklable)."""
    connections: int
    quota: int | None
    timeout_s: float
    index: int = 0
    processes: int = 1


@dataclass
class StreamResult:
    """What one process measured: requests sent inside the window."""

    statuses: dict[int, int] = field(default_factory=dict)
    failures: dict[str, int] = field(default_factory=dict)
    samples: dict[str, str] = field(default_factory=dict)
    latencies: bytes = b""
    """float64 seconds, send to the stream's end, of the successful requests."""
    ttfts: bytes = b""
    """float64 seconds, send to the first text chunk (requests whose stream had text)."""
    itls: bytes = b""
    """float64 seconds between consecutive text chunks."""
    tpots: bytes = b""
    """float64 seconds per output token after the first, one per request with two or more."""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    counted_chunks: int = 0
    """Successful requests whose tokens were counted from text chunks (the server sent no usage)."""
    measured_until: float = 0.0
    cpu_s: float = 0.0
    loop: str = "asyncio"


class _Conn(asyncio.Protocol):
    """One connection and the request in flight on it."""

    def __init__(self, client: _Client) -> None:
        self.client = client
        self.parser = StreamParser()
        self.transport: asyncio.Transport | None = None
        self.reset()

    def reset(self) -> None:
        self.sent_at = 0.0  # 0: no request in flight
        self.measured = False
        self.last_byte = 0.0
        self.first_at = self.last_at = 0.0
        self.chunks = 0
        self.gaps = array("d")
        self.usage: dict[str, Any] | None = None
        self.finished = False  # data: [DONE] seen
        self.error: str | None = None  # an error event inside the stream

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        now = time.monotonic()
        self.last_byte = now
        try:
            events = self.parser.feed(data)
        except ProtocolError as exc:
            self.client.fail(self, "protocol", str(exc))
            return
        for payload in events:
            self._event(payload, now)
        if self.parser.done:
            self.client.on_end(self, now)

    def _event(self, payload: bytes, now: float) -> None:
        if payload == b"[DONE]":
            self.finished = True
            return
        try:
            chunk = orjson.loads(payload)
        except orjson.JSONDecodeError:
            self.error = self.error or f"an event is not JSON: {payload[:60]!r}"
            return
        if not isinstance(chunk, dict):
            return
        if "error" in chunk:
            self.error = self.error or error_message(payload)
            return
        if isinstance(chunk.get("usage"), dict):
            self.usage = chunk["usage"]
        choices = chunk.get("choices")
        if not choices or not isinstance(choices[0], dict):
            return
        choice = choices[0]
        delta = choice.get("delta")
        text = delta.get("content") if isinstance(delta, dict) else choice.get("text")
        if text:
            if self.first_at:
                self.gaps.append(now - self.last_at)
            else:
                self.first_at = now
            self.last_at = now
            self.chunks += 1

    def eof_received(self) -> bool | None:
        for payload in self.parser.eof():
            self._event(payload, time.monotonic())
        if self.parser.done and self.sent_at:
            self.client.on_end(self, time.monotonic())
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.client.on_lost(self, exc)


class _Client:
    """The connections of one process, their counters and the window they measure in."""

    def __init__(self, plan: StreamPlan, loop: asyncio.AbstractEventLoop, ssl_ctx: Any) -> None:
        self.plan = plan
        self.loop = loop
        self.ssl_ctx = ssl_ctx
        self.conns: set[_Conn] = set()
        self.tasks: set[asyncio.Task[None]] = set()
        self.n = 1 + plan.index  # request numbers: process i sends 1 + i, 1 + i + P, ...
        self.sending = False
        self.stopped = False
        self.measure_from = self.measure_until = float("inf")
        self.sent_measured = 0
        self.in_flight = 0  # measured requests not ended yet
        self.last_end = 0.0
        self.result = StreamResult()
        self.latencies, self.ttfts, self.itls, self.tpots = array("d"), array("d"), array("d"), array("d")
        self.cpu_from = self.cpu_until = time.process_time()
        self.drained: asyncio.Future[None] = loop.create_future()

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
        while self.sending:
            try:
                conn = await self.connect()
            except OSError as exc:
                if self.measure_from <= time.monotonic():
                    self._count("connect", str(exc))
                await asyncio.sleep(_RECONNECT_PAUSE_S)
                continue
            self.send(conn)
            return

    # -- requests --------------------------------------------------------------------------------
    def send(self, conn: _Conn) -> None:
        now = time.monotonic()
        if not self.sending or now >= self.measure_until:
            self._stop_sending()
            return
        body = self.plan.body(self.n)
        self.n += self.plan.processes
        conn.reset()
        conn.parser.reset()
        conn.sent_at = conn.last_byte = now
        conn.measured = now >= self.measure_from
        if conn.measured:
            self.sent_measured += 1
            self.in_flight += 1
            if self.sent_measured == self.plan.quota:
                self._stop_sending()
        length = b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n"
        conn.transport.write(self.plan.head + length + body)  # type: ignore[union-attr]

    def on_end(self, conn: _Conn, now: float) -> None:
        """The response on `conn` ended (its body is whole)."""
        parser = conn.parser
        if not conn.sent_at:
            return
        if conn.measured:
            status = parser.status
            if not 200 <= status < 300:
                r = self.result
                r.statuses[status] = r.statuses.get(status, 0) + 1
                r.samples.setdefault(str(status), error_message(parser.body))
            elif conn.error is not None:  # a 200 whose stream carried an error: a failed request
                self._count("stream-error", conn.error)
            elif not parser.sse:
                self._count("not-a-stream", f"HTTP {status} answered {error_message(parser.body)!r:.200}")
            elif not conn.finished:
                self._count("stream-end", "the stream ended without data: [DONE]")
            else:
                self.result.statuses[status] = self.result.statuses.get(status, 0) + 1
                self._success(conn, now)
            self._ended(now)
        conn.sent_at = 0.0
        if parser.close:
            conn.transport.close()  # type: ignore[union-attr]  # on_lost reopens it
        else:
            self.send(conn)

    def _success(self, conn: _Conn, now: float) -> None:
        r = self.result
        self.latencies.append(now - conn.sent_at)
        usage = conn.usage or {}
        completion = usage.get("completion_tokens")
        if not isinstance(completion, int):
            completion = conn.chunks
            r.counted_chunks += 1
        prompt = usage.get("prompt_tokens")
        r.completion_tokens += completion
        r.prompt_tokens += prompt if isinstance(prompt, int) else 0
        if conn.first_at:
            self.ttfts.append(conn.first_at - conn.sent_at)
            self.itls.extend(conn.gaps)
            if completion > 1:
                self.tpots.append((conn.last_at - conn.first_at) / (completion - 1))

    def _ended(self, now: float) -> None:
        self.in_flight -= 1
        self.last_end = max(self.last_end, now)
        if not self.sending and self.in_flight <= 0 and not self.drained.done():
            self.drained.set_result(None)

    # -- failures --------------------------------------------------------------------------------
    def _count(self, kind: str, message: str) -> None:
        r = self.result
        r.failures[kind] = r.failures.get(kind, 0) + 1
        r.samples.setdefault(kind, message[:_SAMPLE_CHARS])

    def fail(self, conn: _Conn, kind: str, message: str) -> None:
        """The request in flight on `conn` failed: count it, drop the connection (on_lost reopens)."""
        if conn.sent_at:
            if conn.measured:
                self._count(kind, message)
                self._ended(time.monotonic())
            conn.sent_at = 0.0
        if conn.transport is not None:
            conn.transport.abort()

    def on_lost(self, conn: _Conn, exc: Exception | None) -> None:
        self.conns.discard(conn)
        if conn.sent_at:
            self.fail(conn, "closed", f"connection closed mid-stream: {exc or 'by the server'}")
        if self.sending:
            task = self.loop.create_task(self.reconnect())
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    async def watchdog(self) -> None:
        timeout = self.plan.timeout_s
        while not self.drained.done():
            await asyncio.sleep(min(timeout / 4, 0.25))
            now = time.monotonic()
            drain_over = not self.sending and now > self.measure_until + timeout
            for conn in list(self.conns):
                if conn.sent_at and (conn.last_byte < now - timeout or (drain_over and conn.measured)):
                    self.fail(conn, "timeout", f"no byte for {timeout:g} s")

    def _stop_sending(self) -> None:
        if self.sending:
            self.sending = False
            self.cpu_until = time.process_time()
            if self.in_flight <= 0 and not self.drained.done():
                self.drained.set_result(None)

    # -- one run ---------------------------------------------------------------------------------
    async def run(self, window: Window) -> float:
        self.measure_from, self.measure_until = window.measure_from, window.measure_until
        # uvloop's timers may fire up to a millisecond early: without a warm-up, a request sent then
        # would miss the window while the server counts its tokens.
        while (left := window.start - time.monotonic()) > 0:
            await asyncio.sleep(left)
        self.sending = True
        for conn in list(self.conns):
            self.send(conn)
        dog = self.loop.create_task(self.watchdog())
        self.loop.call_at(self._loop_time(window.measure_from), self._mark_cpu)
        self.loop.call_at(self._loop_time(window.measure_until), self._stop_sending)
        await self.drained
        end = max(self.last_end, min(window.measure_until, time.monotonic()))
        self.stopped = True
        tasks = [dog, *self.tasks]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for conn in list(self.conns):
            conn.sent_at = 0.0  # unmeasured (warm-up) requests still open are not failures
            if conn.transport is not None:
                conn.transport.abort()
        await asyncio.sleep(0)
        return end

    def _mark_cpu(self) -> None:
        self.cpu_from = time.process_time()

    def _loop_time(self, monotonic: float) -> float:
        return self.loop.time() + (monotonic - time.monotonic())


async def run_stream_plan(
    plan: StreamPlan, gate: Callable[[], Awaitable[Window]], loop_name: str = "asyncio"
) -> StreamResult:
    """Open the plan's connections, await the window from `gate`, stream through it, return the
    figures (an OSError while connecting propagates: the server is unreachable)."""
    loop = asyncio.get_running_loop()
    ctx = ssl_context(plan.insecure, plan.cacert) if plan.tls else None
    client = _Client(plan, loop, ctx)
    await asyncio.gather(*(client.connect() for _ in range(plan.connections)))
    window = await gate()
    until = await client.run(window)
    r = client.result
    r.latencies, r.ttfts = client.latencies.tobytes(), client.ttfts.tobytes()
    r.itls, r.tpots = client.itls.tobytes(), client.tpots.tobytes()
    r.measured_until, r.cpu_s, r.loop = until, client.cpu_until - client.cpu_from, loop_name
    return r

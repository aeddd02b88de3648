"""A tiny KServe V2 / TF-Serving speaking server on 127.0.0.1 for load-generator tests.

It answers model metadata for one model, checks every infer body it gets (shape, element count,
binary framing), records each request's first value, and answers a constant prediction, or a
chosen error status, or nothing at all, by the request's number. It runs its own asyncio loop in a
thread, so tests can drive it from the test process or from a `skylift` subprocess.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import struct
import threading
from collections.abc import Callable
from typing import Any

MODEL = "mnist"
FEATURES = 784
PREDICTION = json.dumps(
    {
        "model_name": MODEL,
        "outputs": [{"name": "probabilities", "shape": [1, 10], "datatype": "FP32", "data": [0.1] * 10}],
    }
).encode()
METADATA = json.dumps(
    {
        "name": MODEL,
        "platform": "test",
        "inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, FEATURES]}],
        "outputs": [{"name": "probabilities", "datatype": "FP32", "shape": [-1, 10]}],
    }
).encode()
REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 503: "Service Unavailable"}


def every_tenth(n: int) -> int:
    """Request n's status: 503 for n = 5, 15, ...; 400 for n = 8, 18, ...; else 200."""
    return {5: 503, 8: 400}.get(n % 10, 200)


class V2Server:
    """Use as `with V2Server(...) as srv: srv.url`; counters are read after the load."""

    def __init__(
        self,
        status: Callable[[int], int] = lambda n: 200,
        *,
        stall: Callable[[int], bool] = lambda n: False,
        drop: Callable[[int], bool] = lambda n: False,
        close_every: int = 0,
        chunked: bool = False,
        tls: ssl.SSLContext | None = None,
        metadata: bool = True,
    ) -> None:
        self.status, self.stall, self.drop = status, stall, drop
        self.close_every, self.chunked, self.tls, self.metadata = close_every, chunked, tls, metadata
        self.infers = 0
        self.first_values: list[float] = []
        self.invalid: list[str] = []
        self.headers_seen: list[dict[str, str]] = []
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._main, daemon=True)

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    def __enter__(self) -> V2Server:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("test server did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._loop is not None and self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    def _main(self) -> None:
        asyncio.run(self._serve())

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        handlers: dict[asyncio.Task[Any], asyncio.StreamWriter] = {}

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = asyncio.current_task()
            assert task is not None
            handlers[task] = writer
            try:
                await self._connection(reader, writer)
            except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
                pass
            finally:
                handlers.pop(task, None)
                writer.close()

        server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=self.tls)
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        await self._stop.wait()
        server.close()
        # Abort, not cancel: a cancelled stream handler makes asyncio log a spurious error.
        for writer in handlers.values():
            writer.transport.abort()
        await asyncio.gather(*handlers, return_exceptions=True)
        await server.wait_closed()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        answered = 0
        while True:
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
            line, *fields = head.rstrip("\r\n").split("\r\n")
            method, path, _ = line.split(" ")
            headers = {k.strip().lower(): v.strip() for k, v in (f.split(":", 1) for f in fields)}
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            status, payload = self._answer(method, path, headers, body)
            if status < 0:  # stall: never answer (until the server stops)
                assert self._stop is not None
                await self._stop.wait()
                return
            if status == 0:  # drop: close mid-request
                return
            answered += 1
            close = bool(self.close_every) and answered % self.close_every == 0
            writer.write(self._response(status, payload, close))
            await writer.drain()
            if close:
                return

    def _answer(self, method: str, path: str, headers: dict[str, str], body: bytes) -> tuple[int, bytes]:
        meta = f"/v2/models/{MODEL}"
        if method == "GET" and path.startswith("/v2/models/"):
            if path == meta and self.metadata:
                return 200, METADATA
            return 404, b'{"error": "unknown model"}'
        if method != "POST" or path not in (f"{meta}/infer", f"/v1/models/{MODEL}:predict"):
            return 404, json.dumps({"error": f"no route or model for {method} {path}"}).encode()
        n = self.infers
        self.infers += 1
        self.headers_seen.append(headers)
        self._check(path, headers, body)
        if self.stall(n):
            return -1, b""
        if self.drop(n):
            return 0, b""
        status = self.status(n)
        if status == 200:
            return 200, PREDICTION
        return status, json.dumps({"error": "server overloaded" if status == 503 else f"bad {n}"}).encode()

    def _check(self, path: str, headers: dict[str, str], body: bytes) -> None:
        """Decode the body as its protocol says; record its first value, or what was wrong."""
        try:
            if "inference-header-content-length" in headers:
                n = int(headers["inference-header-content-length"])
                header, raw = json.loads(body[:n]), body[n:]
                tensor = header["inputs"][0]
                count = tensor["shape"][0] * tensor["shape"][1]
                assert tensor["parameters"]["binary_data_size"] == len(raw) == 4 * count, "binary size"
                first = struct.unpack_from("<f", raw)[0]
            elif path.endswith(":predict"):
                rows = json.loads(body)["instances"]
                assert all(len(r) == FEATURES for r in rows), "v1 row length"
                first = rows[0][0]
            else:
                tensor = json.loads(body)["inputs"][0]
                assert tensor["datatype"] == "FP32" and tensor["shape"][1] == FEATURES, "v2 tensor"
                assert len(tensor["data"]) == tensor["shape"][0] * FEATURES, "v2 element count"
                first = tensor["data"][0]
            self.first_values.append(float(first))
        except Exception as exc:
            self.invalid.append(f"{type(exc).__name__}: {exc}")

    def _response(self, status: int, payload: bytes, close: bool) -> bytes:
        head = [f"HTTP/1.1 {status} {REASONS.get(status, 'Error')}", "Content-Type: application/json"]
        if close:
            head.append("Connection: close")
        if self.chunked:
            half = len(payload) // 2
            head.append("Transfer-Encoding: chunked")
            chunks = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in (payload[:half], payload[half:]) if c)
            return ("\r\n".join(head) + "\r\n\r\n").encode() + chunks + b"0\r\n\r\n"
        head.append(f"Content-Length: {len(payload)}")
        return ("\r\n".join(head) + "\r\n\r\n").encode() + payload

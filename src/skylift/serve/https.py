"""HTTPS for a replica: the TLS handshake on each new connection, or a plain-text 400 to plain HTTP.

uvicorn's own TLS drops a connection that speaks plain HTTP without a word (the client sees an
empty reply). Like nginx, this answers it with a short 400 that says to use https. A connection's
first byte tells them apart: TLS opens with a handshake record (0x16), no HTTP method does. The byte
is peeked, never read, so the handshake (uvloop's own, as fast as uvicorn's) starts from it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Any

_TLS_HANDSHAKE = b"\x16"  # the record type every ClientHello starts with
_FIRST_BYTE_S = 60.0  # a new connection that sends nothing is closed (uvicorn's TLS handshake timeout)
_LINGER_S = 2.0  # after the 400, how long to read and drop what the client still sends
_USE_HTTPS = b"This port speaks HTTPS: use https:// (a plain HTTP request was sent to a TLS port).\n"
_REFUSAL = (
    b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\n"
    b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(_USE_HTTPS), _USE_HTTPS)
)
_handovers: set[asyncio.Task[Any]] = set()  # running TLS handshakes (the loop keeps only weak references)


def https_only(cert: Path, key: Path, http: Callable[..., asyncio.Protocol]) -> type[asyncio.Protocol]:
    """A protocol class for uvicorn's `http` setting: TLS around `http` (uvicorn's), else a 400."""
    from uvicorn.config import SSL_PROTOCOL_VERSION, create_ssl_context

    # uvicorn's own context with its defaults, so TLS negotiates exactly as it did when uvicorn
    # held the certificate (ssl.create_default_context's server settings measured ~7% slower here)
    context = create_ssl_context(cert, key, None, SSL_PROTOCOL_VERSION, ssl.CERT_NONE, None, "TLSv1")

    class HttpsOnly(_FirstByte):
        _context = context
        _http = staticmethod(http)

    return HttpsOnly


class _FirstByte(asyncio.Protocol):
    """One new connection until its first byte is known; then the TLS handshake or the 400."""

    _context: ssl.SSLContext
    _http: Callable[..., asyncio.Protocol]

    def __init__(self, **uvicorn_args: Any) -> None:
        self._uvicorn_args = uvicorn_args  # for the HTTP protocol, once TLS is up
        self._loop = asyncio.get_running_loop()
        self._sock: socket.socket | None = None
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # The transport starts reading when this returns, and pausing it here is undone: keep the
        # connection on a second descriptor and close the transport (its descriptor only) unread.
        fd = transport.get_extra_info("socket").fileno()
        self._sock = socket.socket(fileno=os.dup(fd))
        self._sock.setblocking(False)
        transport.close()
        self._loop.add_reader(self._sock.fileno(), self._sniff)
        self._timer = self._loop.call_later(_FIRST_BYTE_S, self._close)

    def _sniff(self) -> None:
        assert self._sock is not None
        try:
            first = self._sock.recv(1, socket.MSG_PEEK)
        except BlockingIOError:
            return
        except OSError:
            first = b""
        if first == _TLS_HANDSHAKE:
            self._loop.remove_reader(self._sock.fileno())
            if self._timer is not None:
                self._timer.cancel()
            task = self._loop.create_task(self._handshake(self._sock))
            _handovers.add(task)
            task.add_done_callback(_handovers.discard)
            self._sock = None  # the TLS transport owns it now
        elif first:
            # Answer, then read and drop the request until the client hangs up: closing a socket
            # with unread bytes sends a reset, which can destroy the answer before it is read.
            try:
                self._sock.send(_REFUSAL)  # ~200 bytes into an empty send buffer: sent whole
                self._sock.shutdown(socket.SHUT_WR)
            except OSError:  # the client is gone already
                self._close()
                return
            self._loop.remove_reader(self._sock.fileno())
            self._loop.add_reader(self._sock.fileno(), self._drain)
            if self._timer is not None:
                self._timer.cancel()
            self._timer = self._loop.call_later(_LINGER_S, self._close)
        else:
            self._close()

    async def _handshake(self, sock: socket.socket) -> None:
        def http() -> asyncio.Protocol:
            return self._http(**self._uvicorn_args)

        with contextlib.suppress(OSError):  # the client left, or distrusts the certificate: nobody to answer
            # as uvicorn's own server sets on each connection: small responses go out at once
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            await self._loop.connect_accepted_socket(http, sock, ssl=self._context)

    def _drain(self) -> None:
        assert self._sock is not None
        try:
            data = self._sock.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._close()

    def _close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self._sock is not None:
            self._loop.remove_reader(self._sock.fileno())
            self._sock.close()
            self._sock = None

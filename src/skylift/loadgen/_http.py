"""The HTTP/1.1 response side of the client: a small incremental parser for keep-alive responses.

The load generator sends one request per connection at a time (no pipelining), so a connection
receives at most one response per request; the parser takes bytes as they arrive and returns the
response once it is whole: Content-Length bodies, chunked bodies and read-until-close bodies.
"""

from __future__ import annotations

import json

MAX_HEAD = 65_536  # bytes; a longer response head is a broken server, not a slow one
_NO_BODY = frozenset({204, 304})


class ProtocolError(Exception):
    """The server's bytes are not an HTTP/1.1 response."""


Response = tuple[int, bytes, bool]
"""(status, body, close): `close` when the server will not keep the connection open."""


class ResponseParser:
    """Feed it bytes; it returns a `Response` when one is complete, else None."""

    __slots__ = ("_buf", "_chunked", "_close", "_length", "_status", "version")

    def __init__(self) -> None:
        self._buf = b""
        self.version = b""
        """The X-Model-Version of the last response head (b'' without one): a split's pick."""
        self._reset()

    def _reset(self) -> None:
        self._status = -1
        self._length = -1  # -1: unknown (chunked, or until the connection closes)
        self._chunked = False
        self._close = False

    @property
    def idle(self) -> bool:
        """No response started."""
        return self._status < 0 and not self._buf

    def feed(self, data: bytes) -> Response | None:
        buf = self._buf + data if self._buf else data
        while self._status < 0:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > MAX_HEAD:
                    raise ProtocolError(f"response head longer than {MAX_HEAD} bytes")
                self._buf = buf
                return None
            self._head(buf[:end])
            buf = buf[end + 4 :]
            if 100 <= self._status < 200:  # 100 Continue and friends: the real response follows
                self._reset()
        if self._chunked:
            done = _dechunk(buf)
            if done is None:
                self._buf = buf
                return None
            body, used = done
        elif self._length >= 0:
            if len(buf) < self._length:
                self._buf = buf
                return None
            body, used = buf[: self._length], self._length
        else:
            self._buf = buf
            return None
        if used != len(buf):
            raise ProtocolError("bytes after the end of a response (the client never pipelines)")
        response = (self._status, body, self._close)
        self._buf = b""
        self._reset()
        return response

    def eof(self) -> Response | None:
        """The connection closed: completes a read-until-close response, if one was being read."""
        if self._status >= 0 and self._length < 0 and not self._chunked:
            response = (self._status, self._buf, True)
            self._buf = b""
            self._reset()
            return response
        return None

    def _head(self, head: bytes) -> None:
        # The hot path of the client: cheap `in` scans first, header values parsed only when present.
        if head[:7] != b"HTTP/1.":
            raise ProtocolError(f"not an HTTP/1.x status line: {head[:40]!r}")
        try:
            status = int(head[9:12])
        except ValueError:
            raise ProtocolError(f"bad status line: {head[:40]!r}") from None
        lower = head.lower()
        self._status = status
        self.version = _header(lower, b"x-model-version") if b"\r\nx-model-version:" in lower else b""
        # HTTP/1.0 closes unless it says keep-alive; HTTP/1.1 keeps open unless it says close.
        if b"\r\nconnection:" in lower:
            conn = _header(lower, b"connection")
            self._close = (b"close" in conn) if head[7:8] == b"1" else (b"keep-alive" not in conn)
        else:
            self._close = head[7:8] != b"1"
        if status in _NO_BODY:
            self._length = 0
        elif b"\r\ntransfer-encoding:" in lower and b"chunked" in _header(lower, b"transfer-encoding"):
            self._chunked = True
        else:
            i = lower.find(b"\r\ncontent-length:")
            if i < 0:
                self._close = True  # the body runs until the server closes the connection
                return
            j = lower.find(b"\r\n", i + 17)
            try:
                self._length = int(lower[i + 17 : j if j >= 0 else len(lower)])
            except ValueError:
                raise ProtocolError(f"bad Content-Length: {lower[i + 17 : i + 57]!r}") from None


def _header(lower_head: bytes, name: bytes) -> bytes:
    """The value of header `name` in a lower-cased head, or b'' (first occurrence)."""
    i = lower_head.find(b"\r\n" + name + b":")
    if i < 0:
        return b""
    start = i + len(name) + 3
    end = lower_head.find(b"\r\n", start)
    return lower_head[start : end if end >= 0 else len(lower_head)].strip()


def _dechunk(buf: bytes) -> tuple[bytes, int] | None:
    """A whole chunked body at the start of `buf` -> (body, bytes used); None if incomplete."""
    parts: list[bytes] = []
    pos = 0
    while True:
        eol = buf.find(b"\r\n", pos)
        if eol < 0:
            return None
        try:
            size = int(buf[pos:eol].split(b";", 1)[0], 16)
        except ValueError:
            raise ProtocolError(f"bad chunk size: {buf[pos:eol][:40]!r}") from None
        if size == 0:
            if buf[eol + 2 : eol + 4] == b"\r\n":  # no trailers
                return b"".join(parts), eol + 4
            end = buf.find(b"\r\n\r\n", eol + 2)
            return None if end < 0 else (b"".join(parts), end + 4)
        start = eol + 2
        if len(buf) < start + size + 2:
            return None
        parts.append(buf[start : start + size])
        pos = start + size + 2


def error_text(body: bytes, limit: int = 200) -> str:
    """The server's own words: `{"error": "..."}` when it sends that, else the start of the body."""
    try:
        doc = json.loads(body)
    except ValueError:
        doc = None
    if isinstance(doc, dict) and isinstance(doc.get("error"), str):
        return str(doc["error"])[:limit]
    return body[:limit].decode("utf-8", "replace").strip() or "(empty body)"

"""A streamed HTTP/1.1 response, read as it arrives: the status first, then server-sent events.

The OpenAI load generator needs each event when it lands (its arrival time is the measurement), so
unlike `_http.ResponseParser`, which returns a response once it is whole, `StreamParser` undoes the
chunked framing incrementally and hands back each complete `data:` payload at once. A body that is
not an event stream (an error's JSON) is kept whole, up to MAX_KEPT bytes, for the report.
"""

from __future__ import annotations

from skylift.loadgen._http import MAX_HEAD, ProtocolError, _header

MAX_KEPT = 65_536  # bytes of a non-stream body kept (an error message needs far fewer)
_NO_BODY = frozenset({204, 304})
_UNTIL_CLOSE = -1


class StreamParser:
    """Feed it the bytes of one response at a time (the client never pipelines).

    `feed` returns the `data:` payloads completed by the bytes given; `status` is set once the head
    is read, `done` once the body has ended, `close` when the server will close the connection."""

    __slots__ = ("_buf", "_chunked", "_events", "_left", "body", "close", "done", "sse", "status")

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Ready for the next response on the connection."""
        self._buf = b""
        self._events = b""  # event-stream text not yet ended by a blank line
        self._chunked = False
        self._left = 0  # bytes left in the current chunk or Content-Length body; _UNTIL_CLOSE
        self.sse = False
        """The response is an event stream (a 2xx text/event-stream)."""
        self.status = -1
        self.body = b""
        """A non-event-stream body (first MAX_KEPT bytes)."""
        self.close = False
        self.done = False

    def feed(self, data: bytes) -> list[bytes]:
        if self.done:
            raise ProtocolError("bytes after the end of a response (the client never pipelines)")
        buf = self._buf + data if self._buf else data
        self._buf = b""
        if self.status < 0:
            buf = self._read_head(buf)
            if self.status < 0 or self.done:
                return []
        return self._events_of(self._read_body(buf))

    def eof(self) -> list[bytes]:
        """The connection closed: ends a read-until-close body (else the response stays unfinished)."""
        if self.status >= 0 and not self.done and not self._chunked and self._left == _UNTIL_CLOSE:
            self.done = True
            return self._events_of([b"\n\n"]) if self.sse and self._events else []
        return []

    # -- head ------------------------------------------------------------------------------------
    def _read_head(self, buf: bytes) -> bytes:
        while self.status < 0:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > MAX_HEAD:
                    raise ProtocolError(f"response head longer than {MAX_HEAD} bytes")
                self._buf = buf
                return b""
            head, buf = buf[:end], buf[end + 4 :]
            if head[:7] != b"HTTP/1.":
                raise ProtocolError(f"not an HTTP/1.x status line: {head[:40]!r}")
            try:
                status = int(head[9:12])
            except ValueError:
                raise ProtocolError(f"bad status line: {head[:40]!r}") from None
            if 100 <= status < 200:  # 100 Continue: the real response follows
                continue
            self._start(status, head)
        return buf

    def _start(self, status: int, head: bytes) -> None:
        lower = head.lower()
        self.status = status
        connection = _header(lower, b"connection")
        self.close = (b"close" in connection) if head[7:8] == b"1" else (b"keep-alive" not in connection)
        self.sse = 200 <= status < 300 and _header(lower, b"content-type").startswith(b"text/event-stream")
        length = _header(lower, b"content-length")
        if status in _NO_BODY:
            self.done = True
        elif b"chunked" in _header(lower, b"transfer-encoding"):
            self._chunked = True
        elif length:
            try:
                self._left = int(length)
            except ValueError:
                raise ProtocolError(f"bad Content-Length: {length[:40]!r}") from None
            self.done = self._left == 0
        else:
            self._left, self.close = _UNTIL_CLOSE, True

    # -- body ------------------------------------------------------------------------------------
    def _read_body(self, buf: bytes) -> list[bytes]:
        """The body bytes in `buf`, framing removed; what is left of an incomplete frame is kept."""
        if not self._chunked:
            if self._left == _UNTIL_CLOSE:
                return [buf]
            piece = buf[: self._left]
            self._left -= len(piece)
            if len(buf) > len(piece):
                raise ProtocolError("bytes after the end of a response (the client never pipelines)")
            self.done = self._left == 0
            return [piece]
        pieces = []
        pos = 0
        while not self.done:
            if self._left > 0:  # inside a chunk's data
                piece = buf[pos : pos + self._left]
                pieces.append(piece)
                self._left -= len(piece)
                pos += len(piece)
                if self._left > 0:
                    break
                self._left = -2  # its CRLF follows
            if self._left == -2:
                if len(buf) - pos < 2:
                    break
                pos += 2
                self._left = 0
            eol = buf.find(b"\r\n", pos)
            if eol < 0:
                break
            line = buf[pos:eol]
            if self._left == -3:  # trailers: up to the blank line
                pos = eol + 2
                self.done = not line
                continue
            try:
                size = int(line.split(b";", 1)[0], 16)
            except ValueError:
                raise ProtocolError(f"bad chunk size: {line[:40]!r}") from None
            pos = eol + 2
            self._left = size if size else -3
        if self.done and pos != len(buf):
            raise ProtocolError("bytes after the end of a response (the client never pipelines)")
        self._buf = buf[pos:]
        return pieces

    def _events_of(self, pieces: list[bytes]) -> list[bytes]:
        if not self.sse:
            for piece in pieces:
                if len(self.body) < MAX_KEPT:
                    self.body += piece[: MAX_KEPT - len(self.body)]
            return []
        text = self._events + b"".join(pieces)
        if b"\r" in text:
            text = text.replace(b"\r\n", b"\n")
        end = text.rfind(b"\n\n")
        if end < 0:
            self._events = text
            return []
        self._events = text[end + 2 :]
        events = []
        for block in text[:end].split(b"\n\n"):
            data = [line[5:].removeprefix(b" ") for line in block.split(b"\n") if line.startswith(b"data:")]
            if data:
                events.append(b"\n".join(data))
        return events

"""The incremental HTTP/1.1 response parser: lengths, chunks, closes, and broken servers."""

from __future__ import annotations

import pytest

from skylift.loadgen._http import ProtocolError, ResponseParser, error_text

OK = b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n{"a": [1]}\n'


def feed_bytewise(parser: ResponseParser, data: bytes) -> list[tuple[int, bytes, bool]]:
    out = []
    for i in range(len(data)):
        r = parser.feed(data[i : i + 1])
        if r is not None:
            out.append(r)
    return out


def test_content_length_whole_and_byte_by_byte() -> None:
    p = ResponseParser()
    assert p.feed(OK) == (200, b'{"a": [1]}\n', False)
    assert p.idle
    assert feed_bytewise(p, OK + OK[:20]) == [(200, b'{"a": [1]}\n', False)]
    assert not p.idle
    assert p.feed(OK[20:]) == (200, b'{"a": [1]}\n', False)


def test_chunked_with_extensions_and_trailers() -> None:
    raw = b"HTTP/1.1 503 Service Unavailable\r\ntransfer-encoding: chunked\r\n\r\n"
    body = b"4;ext=1\r\nabcd\r\n3\r\nefg\r\n0\r\n\r\n"
    assert ResponseParser().feed(raw + body) == (503, b"abcdefg", False)
    assert feed_bytewise(ResponseParser(), raw + body) == [(503, b"abcdefg", False)]
    trailers = b"1\r\nx\r\n0\r\nX-Trailer: 1\r\n\r\n"
    assert ResponseParser().feed(raw + trailers) == (503, b"x", False)


def test_connection_close_http10_and_read_until_close() -> None:
    close = b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok"
    assert ResponseParser().feed(close) == (200, b"ok", True)
    assert ResponseParser().feed(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok") == (200, b"ok", True)
    keep = b"HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 2\r\n\r\nok"
    assert ResponseParser().feed(keep) == (200, b"ok", False)
    p = ResponseParser()
    assert p.feed(b"HTTP/1.1 200 OK\r\n\r\npart one ") is None
    assert p.feed(b"and two") is None
    assert p.eof() == (200, b"part one and two", True)
    assert ResponseParser().eof() is None


def test_no_body_statuses_and_interim_responses() -> None:
    assert ResponseParser().feed(b"HTTP/1.1 204 No Content\r\n\r\n") == (204, b"", False)
    cont = b"HTTP/1.1 100 Continue\r\n\r\n" + OK
    assert ResponseParser().feed(cont) == (200, b'{"a": [1]}\n', False)


@pytest.mark.parametrize(
    "raw",
    [
        b"SSH-2.0-OpenSSH\r\n\r\n",
        b"HTTP/1.1 2x0 OK\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: ten\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        OK + b"HTTP/1.1",  # bytes after the response: the client never pipelines
    ],
)
def test_broken_responses_raise(raw: bytes) -> None:
    with pytest.raises(ProtocolError):
        ResponseParser().feed(raw)


def test_endless_head_raises() -> None:
    p = ResponseParser()
    with pytest.raises(ProtocolError, match="longer than"):
        for _ in range(100):
            p.feed(b"X-Junk: " + b"a" * 1000 + b"\r\n")


def test_error_text_prefers_the_servers_error_field() -> None:
    assert error_text(b'{"error": "shape [1, 3] != [-1, 784]"}') == "shape [1, 3] != [-1, 784]"
    assert error_text(b"<html>Bad Gateway</html>") == "<html>Bad Gateway</html>"
    assert error_text(b"") == "(empty body)"
    assert error_text(b"x" * 1000, limit=10) == "x" * 10

"""The streamed-response reader of the OpenAI mode: events as soon as they are whole, however the
bytes are cut; chunked, Content-Length and read-until-close bodies; error bodies kept whole."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from skylift.loadgen._http import ProtocolError
from skylift.loadgen._sse import MAX_KEPT, StreamParser

EVENTS = [b'{"choices": [{"text": "a"}]}', b'{"choices": [{"text": "\\u00e9"}]}', b"[DONE]"]
SSE = b"".join(b"data: " + e + b"\n\n" for e in EVENTS)
HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"


def chunked(body: bytes, size: int) -> bytes:
    parts = [body[i : i + size] for i in range(0, len(body), size)]
    return b"".join(b"%x\r\n" % len(p) + p + b"\r\n" for p in parts) + b"0\r\n\r\n"


def feed_in(parser: StreamParser, data: bytes, cuts: list[int]) -> list[bytes]:
    events, start = [], 0
    for cut in [*sorted(set(cuts)), len(data)]:
        events += parser.feed(data[start:cut])
        start = cut
    return events


@given(size=st.integers(1, 40), cuts=st.lists(st.integers(0, 400), max_size=30))
def test_events_come_out_whole_wherever_the_bytes_are_cut(size: int, cuts: list[int]) -> None:
    raw = HEAD + chunked(SSE, size)
    parser = StreamParser()
    assert feed_in(parser, raw, [c for c in cuts if c < len(raw)]) == EVENTS
    assert parser.done and parser.status == 200 and parser.sse and not parser.close


def test_each_event_is_returned_by_the_feed_that_completes_it() -> None:
    parser = StreamParser()
    assert parser.feed(HEAD + b"8\r\ndata: {") == []
    assert parser.status == 200 and not parser.done
    assert parser.feed(b"}\r\n") == []
    assert parser.feed(b"2\r\n\n\n\r\n") == [b"{}"]
    assert parser.feed(b"0\r\n\r\n") == [] and parser.done


def test_crlf_events_multiline_data_comments_and_trailers() -> None:
    body = b": keep-alive\r\n\r\ndata: one\r\ndata: two\r\nid: 3\r\n\r\ndata:[DONE]\r\n\r\n"
    raw = HEAD + chunked(body, 5)[:-2] + b"X-Trailer: 1\r\n\r\n"
    parser = StreamParser()
    assert parser.feed(raw) == [b"one\ntwo", b"[DONE]"] and parser.done


def test_content_length_and_until_close_streams() -> None:
    head = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Length: %d\r\n\r\n" % len(SSE)
    parser = StreamParser()
    assert parser.feed(head + SSE) == EVENTS and parser.done
    until_close = b"HTTP/1.0 200 OK\r\nContent-Type: text/event-stream\r\n\r\n"
    parser = StreamParser()
    assert parser.feed(until_close + SSE + b"data: tail") == EVENTS and not parser.done
    assert parser.close and parser.eof() == [b"tail"] and parser.done


def test_an_error_answer_is_kept_whole_not_read_as_events() -> None:
    error = b'{"error": {"message": "rate limit", "type": "rate_limit_error"}}'
    raw = b"HTTP/1.1 429 Too Many Requests\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n"
    parser = StreamParser()
    assert parser.feed(raw % len(error) + error) == [] and parser.done
    assert parser.body == error and parser.status == 429 and not parser.sse
    big = b"x" * (MAX_KEPT + 10)
    parser = StreamParser()
    parser.feed(b"HTTP/1.1 500 Oops\r\ntransfer-encoding: chunked\r\n\r\n" + chunked(big, 4096))
    assert parser.done and len(parser.body) == MAX_KEPT
    parser.reset()
    assert parser.status == -1 and parser.body == b""


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"SSH-2.0-OpenSSH\r\n\r\n", "not an HTTP/1.x status line"),
        (HEAD + b"zz\r\n", "bad chunk size"),
        (HEAD + b"0\r\n\r\nextra", "bytes after the end of a response"),
        (b"HTTP/1.1 200 OK\r\ncontent-length: x\r\n\r\n", "bad Content-Length"),
    ],
)
def test_broken_servers_are_protocol_errors(raw: bytes, message: str) -> None:
    with pytest.raises(ProtocolError, match=message):
        StreamParser().feed(raw)

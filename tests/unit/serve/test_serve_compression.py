"""Request bodies in gzip and zstd: inflated within the limit, and every lie or truncation is a 4xx."""

from __future__ import annotations

import struct

import pytest
import zstandard

from skylift.serve.codec import BadRequest
from skylift.serve.compression import MAX_ZSTD_FRAMES, decode_body

LIMIT = 1 << 20
PAYLOAD = b'{"inputs": [' + b"0.5, " * 800 + b"0.5]}"


def lying_frame(frame: bytes, size: int) -> bytes:
    """`frame` with its header's content size replaced by `size` (a single-segment frame)."""
    desc = frame[4]
    assert desc & 0x20, "single segment: no window descriptor"
    old = (1, 2, 4, 8)[desc >> 6]
    if size < 256:
        flag, field = 0, bytes([size])
    elif size < 65536 + 256:
        flag, field = 1, struct.pack("<H", size - 256)
    elif size < 2**32:
        flag, field = 2, struct.pack("<I", size)
    else:
        flag, field = 3, struct.pack("<Q", size)
    return frame[:4] + bytes([(desc & 0x3F) | flag << 6]) + field + frame[5 + old :]


FRAME = zstandard.ZstdCompressor(write_content_size=True).compress(PAYLOAD)


def test_the_lying_frame_helper_changes_only_the_declared_size() -> None:
    assert zstandard.frame_content_size(FRAME) == len(PAYLOAD)
    assert lying_frame(FRAME, len(PAYLOAD)) == FRAME
    assert zstandard.frame_content_size(lying_frame(FRAME, 10)) == 10


@pytest.mark.parametrize(
    ("declared", "status", "message"),
    [
        (10, 400, "zstd body is corrupt"),  # smaller than the real content
        (len(PAYLOAD) - 1, 400, "zstd body is corrupt"),
        (len(PAYLOAD) + 1, 400, "zstd body is corrupt"),  # larger, within the limit
        (LIMIT + 1, 413, "inflates past"),  # larger than the limit: refused before any work
        (2**40, 413, "inflates past"),
    ],
)
def test_a_frame_lying_about_its_size_is_refused(declared: int, status: int, message: str) -> None:
    with pytest.raises(BadRequest, match=message) as caught:
        decode_body(lying_frame(FRAME, declared), b"zstd", LIMIT)
    assert caught.value.status == status


def test_every_frame_of_a_body_counts() -> None:
    c = zstandard.ZstdCompressor()
    assert decode_body(c.compress(b"[1, ") + c.compress(b"2]"), b"zstd", LIMIT) == b"[1, 2]"
    with pytest.raises(BadRequest, match="truncated"):
        decode_body(c.compress(b"[1, ") + c.compress(b"2]")[:-2], b"zstd", LIMIT)
    with pytest.raises(BadRequest, match="corrupt"):
        decode_body(c.compress(b"[1, 2]") + b"trailing junk", b"zstd", LIMIT)
    with pytest.raises(BadRequest, match="inflates past") as caught:  # the limit spans all frames
        decode_body(c.compress(b"0" * (LIMIT // 2 + 1)) * 2, b"zstd", LIMIT)
    assert caught.value.status == 413


def test_a_body_of_many_tiny_frames_is_refused_not_decoded_frame_by_frame() -> None:
    """Checking frame by frame copies the rest of the body each time: many empty frames would make
    that quadratic (minutes for a 16 MB body, the event loop blocked), so their number is capped."""
    empty = zstandard.ZstdCompressor().compress(b"")
    few = empty * MAX_ZSTD_FRAMES
    assert decode_body(few, b"zstd", 1 << 20) == b""
    with pytest.raises(BadRequest, match=f"more than {MAX_ZSTD_FRAMES} frames") as info:
        decode_body(empty * 200_000, b"zstd", 16 << 20)  # 1.8 MB: ~10 s before the cap
    assert info.value.status == 400

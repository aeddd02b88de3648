"""Streaming UTF-8 text: a file cut into decoded pieces at line ends, and where its first bad byte is."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

from skylift.errors import DataError

READ_BYTES = 1 << 20  # 1 MiB: one read() of a file being checked or cut into pieces


def cut_point(buffer: bytes | bytearray, limit: int) -> int:
    """Where to cut `buffer` (at most `limit` bytes in): after its last newline, else at a character start.

    A newline byte never occurs inside a multi-byte UTF-8 character, so a cut after one always
    leaves whole characters on both sides; a line longer than `limit` is cut before the last
    character that starts within it.
    """
    if len(buffer) <= limit:
        return len(buffer)
    cut = buffer.rfind(b"\n", 0, limit) + 1
    if cut:
        return cut
    cut = limit
    while cut > 0 and buffer[cut] & 0xC0 == 0x80:  # 0b10xxxxxx: a continuation byte
        cut -= 1
    return cut or limit


def decoded_pieces(path: Path, read: Callable[[int], bytes], piece_bytes: int) -> Iterator[tuple[int, str]]:
    """(byte offset, text) pieces of at most `piece_bytes` bytes each, cut at line ends; `read` is a file's.

    Raises a DataError naming `path`, the byte offset and the line of the first byte that is not
    UTF-8. Memory: about two pieces, whatever the file size.
    """
    buffer = bytearray()
    offset = 0  # bytes of the file before `buffer`
    lines = 0  # newlines before `buffer`, for the error message
    at_end = False
    while buffer or not at_end:
        while not at_end and len(buffer) <= piece_bytes:
            block = read(max(READ_BYTES, piece_bytes))
            at_end = not block
            buffer += block
        cut = cut_point(buffer, piece_bytes)  # the whole rest once the file has ended within a piece
        piece = bytes(buffer[:cut])
        try:
            text = piece.decode("utf-8")
        except UnicodeDecodeError as exc:
            line = lines + piece.count(b"\n", 0, exc.start) + 1
            raise DataError(
                f"{path}: not UTF-8 text: byte offset {offset + exc.start} (line {line}) "
                f"holds {piece[exc.start : exc.start + 1]!r}; save the file as UTF-8"
            ) from None
        if text:
            yield offset, text
        del buffer[:cut]
        offset += cut
        lines += piece.count(b"\n")


def check_utf8(path: Path) -> None:
    """Read `path` through once, raising decoded_pieces' DataError at its first byte that is not UTF-8."""
    with path.open("rb") as stream:
        for _ in decoded_pieces(path, stream.read, READ_BYTES):
            pass

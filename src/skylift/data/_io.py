"""Byte reads and error text shared by the binary file readers."""

from __future__ import annotations

import io

from skylift.errors import DataError


def read_exactly(stream: io.BufferedIOBase, n: int, where: str, what: str) -> bytearray:
    """n bytes into a fresh writable buffer (arrays built on it stay writable); fewer is truncation.

    Call only after checking `n` against what the file can hold: the buffer is allocated up front.
    """
    buffer = bytearray(n)
    view = memoryview(buffer)
    filled = 0
    while filled < n:
        got = stream.readinto(view[filled:])
        if not got:
            raise DataError(f"{where}: truncated: {what} ends after {filled} of {n} bytes")
        filled += got
    return buffer


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (at most 200 characters), or its type name."""
    lines = str(exc).strip().splitlines()
    return lines[0][:200] if lines else type(exc).__name__

"""Content negotiation for bodies: gzip and zstd requests (bomb-safe) and responses (above a threshold)."""

from __future__ import annotations

import io
import zlib

from skylift.serve.codec import BadRequest

MIN_COMPRESS_BYTES = 1024  # below this the header and CPU cost more than the bytes saved


def decode_body(body: bytes, encoding: bytes, limit: int) -> bytes:
    """The request body inflated per Content-Encoding; never more than `limit` bytes are produced."""
    kind = encoding.strip().lower()
    if kind in (b"", b"identity"):
        return body
    if kind in (b"gzip", b"x-gzip"):
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        try:
            out = inflater.decompress(body, limit + 1)
        except zlib.error as exc:
            raise BadRequest(f"gzip body is corrupt: {exc}") from None
        if len(out) > limit or inflater.unconsumed_tail:
            raise BadRequest(f"body inflates past the {limit}-byte limit", 413)
        if not inflater.eof:
            raise BadRequest("gzip body is truncated")
        return out
    if kind == b"zstd":
        import zstandard

        # stream_reader ignores the frame's declared content size: a frame that lies cannot make us
        # allocate more than limit + 1 bytes.
        try:
            with zstandard.ZstdDecompressor().stream_reader(io.BytesIO(body)) as reader:
                out = reader.read(limit + 1)
        except zstandard.ZstdError as exc:
            raise BadRequest(f"zstd body is corrupt: {exc}") from None
        if len(out) > limit:
            raise BadRequest(f"body inflates past the {limit}-byte limit", 413)
        # The output is known to be small now, so a second, incremental pass may check the frame is whole.
        whole = zstandard.ZstdDecompressor().decompressobj()
        try:
            whole.decompress(body)
        except zstandard.ZstdError as exc:
            raise BadRequest(f"zstd body is corrupt: {exc}") from None
        if not whole.eof:
            raise BadRequest("zstd body is truncated")
        return out
    raise BadRequest(f"Content-Encoding {kind.decode('latin-1')[:30]!r} is not supported (gzip, zstd)", 415)


def choose(accept_encoding: bytes) -> bytes | None:
    """The response encoding for an Accept-Encoding header: zstd, else gzip, else None."""
    offered = {}
    for part in accept_encoding.lower().split(b","):
        name, _, params = part.strip().partition(b";")
        q = 1.0
        if params.strip().startswith(b"q="):
            try:
                q = float(params.strip()[2:])
            except ValueError:
                q = 0.0
        offered[name.strip()] = q
    for name in (b"zstd", b"gzip"):
        if offered.get(name, 0.0) > 0:
            return name
    return None


def encode_body(body: bytes, encoding: bytes) -> bytes:
    if encoding == b"zstd":
        import zstandard

        return zstandard.ZstdCompressor(level=1).compress(body)
    compressor = zlib.compressobj(1, zlib.DEFLATED, 16 + zlib.MAX_WBITS)  # level 1: CPU is the bottleneck
    return compressor.compress(body) + compressor.flush()

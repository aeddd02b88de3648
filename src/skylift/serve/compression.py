"""Content negotiation for bodies: gzip and zstd requests (bomb-safe) and responses (above a threshold)."""

from __future__ import annotations

import io
import zlib

from skylift.serve.codec import BadRequest

MIN_COMPRESS_BYTES = 1024  # below this the header and CPU cost more than the bytes saved
MAX_ZSTD_FRAMES = 64  # a client's body is one frame, or a few when streamed; more is an attack


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
        return _zstd(body, limit)
    raise BadRequest(f"Content-Encoding {kind.decode('latin-1')[:30]!r} is not supported (gzip, zstd)", 415)


def _zstd(body: bytes, limit: int) -> bytes:
    """Every frame of a zstd body, inflated to at most `limit` bytes; a frame may lie about its size."""
    import zstandard

    try:
        declared = zstandard.frame_content_size(body)
    except zstandard.ZstdError as exc:
        raise BadRequest(f"zstd body is corrupt: {exc}") from None
    if declared > limit:  # -1: not declared
        raise BadRequest(
            f"body inflates past the {limit}-byte limit (its zstd frame declares {declared} bytes)", 413
        )
    # The stream reader ignores the declared size: a frame that lies cannot make us produce
    # more than limit + 1 bytes, and a size that does not match the data is a zstd error.
    try:
        with zstandard.ZstdDecompressor().stream_reader(io.BytesIO(body), read_across_frames=True) as reader:
            out = reader.read(limit + 1)
        if len(out) > limit:
            raise BadRequest(f"body inflates past the {limit}-byte limit", 413)
        # The output is known to be small now, so a second pass may check that every frame is whole.
        # Each pass copies the rest of the body: frames are capped, else many tiny frames would make
        # this quadratic (a 16 MB body of empty frames: minutes of a blocked event loop).
        rest, frames = body, 0
        while rest:
            frames += 1
            if frames > MAX_ZSTD_FRAMES:
                raise BadRequest(f"zstd body has more than {MAX_ZSTD_FRAMES} frames")
            frame = zstandard.ZstdDecompressor().decompressobj()
            frame.decompress(rest)
            if not frame.eof:
                raise BadRequest("zstd body is truncated")
            rest = frame.unused_data
    except zstandard.ZstdError as exc:
        raise BadRequest(f"zstd body is corrupt: {exc}") from None
    return out


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

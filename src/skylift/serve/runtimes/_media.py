"""Media inputs: images or audio clips as encoded files (PNG/JPEG/WebP, WAV/FLAC), decoded in the
server with the preprocessing recorded with the model (the ImagePrep / AudioPrep training applied),
or already-decoded float tensors of the model's input shape.

The wire forms are parsed on the event loop (`serve.media_codec`: V2 BYTES tensors, TF-Serving
`{"b64": ...}`, a plain POST of one file). The files are decoded on a small thread pool, never on
the loop (Pillow, libsndfile and numpy release the GIL for the heavy parts), then queued on the
batcher as float32 rows like any numeric model's. Files waiting to be decoded count against
`--max-queue-rows` with the queued rows (503 past it); decoding stops at the request's deadline.
One file that does not decode fails its request with a 400 naming it; other requests, batched
with it or not, never see it.

Shape legend: R rows (files)   S... the model's input shape (the preprocessing's output)
"""

from __future__ import annotations

import asyncio
import io
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import numpy as np

from skylift.errors import DataError, Overloaded
from skylift.serve import codec, media_codec
from skylift.serve.batcher import DeadlineExceeded
from skylift.serve.codec import BadRequest, V2Request
from skylift.serve.media_codec import Files
from skylift.serve.runtimes._base import Context
from skylift.serve.runtimes._rows import NumericRows, Run

if TYPE_CHECKING:
    from skylift.data._media import Preprocessing


def _png() -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("L", (8, 8)).save(buf, format="PNG")
    return buf.getvalue()


def _wav() -> bytes:
    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, np.zeros(160, np.float32), 16000, format="WAV")
    return buf.getvalue()


_SAMPLES: dict[str, Callable[[], bytes]] = {"image": _png, "audio": _wav}
"""A small file of each kind, decoded once at start-up: imports and first-call costs."""


class MediaRows(NumericRows):
    """Tensor `image` / `audio` (V2 BYTES: one encoded file per row), TF-Serving `{"b64": ...}`, a
    plain POST of one file; or the decoded tensor `input` as for a numeric model."""

    def __init__(self, ctx: Context, run: Run, prep: Preprocessing) -> None:
        super().__init__(ctx, run)
        loaded = ctx.loaded
        if tuple(prep.shape) != self.signature.input_shape:
            raise ValueError(
                f"{loaded.ref}: its preprocessing makes {list(prep.shape)} but the model takes "
                f"{list(self.signature.input_shape)}; re-register it"
            )
        self.prep = prep
        self.name = prep.kind
        """The V2 input of encoded files: "image" or "audio"."""
        self.media_types = media_codec.MEDIA_TYPES[prep.kind]
        self.where = f"input '{self.name}'"
        self.max_queue_rows = ctx.config.max_queue_rows
        self.decoding = 0
        """Files accepted and not yet decoded (they count against max_queue_rows)."""
        # One thread per core of this replica: decoding is CPU work, more threads only queue.
        self.pool = ThreadPoolExecutor(max(1, ctx.config.threads), thread_name_prefix="skylift-decode")
        prep.decode(_SAMPLES[prep.kind](), "warm-up sample")

    def metadata(self) -> list[dict[str, Any]]:
        files = {"name": self.name, "datatype": "BYTES", "shape": [-1]}
        return [files, *super().metadata()]

    def decode_v2(self, body: bytes, header_length: int | None, outputs: tuple[str, ...]) -> V2Request:
        try:
            header, spec, blob = codec._v2_input(body, header_length, self.name, codec.INPUT_NAME)
        except BadRequest as exc:
            raise _hinted(exc, body) from None
        if spec["name"] == codec.INPUT_NAME:
            return codec.v2_rows(header, spec, blob, self.signature, outputs)
        files = Files(media_codec.v2_files(spec, blob, self.where), self.where + " element {i}")
        return V2Request(files, codec._requested_outputs(header, outputs), codec._request_id(header))

    def decode_v1(self, body: bytes) -> tuple[Any, bool]:
        try:
            req = codec._loads(body)
        except BadRequest as exc:
            raise _hinted(exc, body) from None
        found = media_codec.v1_files(req, self.name)
        return codec.v1_rows(req, self.signature) if found is None else found

    def decode_file(self, body: bytes, media_type: bytes) -> Files:
        return media_codec.body_file(body, media_type)

    def cache_input(self, x: np.ndarray | Files) -> np.ndarray | bytes:
        return x.cache_input() if isinstance(x, Files) else x

    def submit(self, x: np.ndarray | Files, deadline: float) -> Awaitable[np.ndarray]:
        if isinstance(x, Files):
            return self._decode_and_submit(x, deadline)
        return self.batcher.submit(x, deadline)

    async def _decode_and_submit(self, files: Files, deadline: float) -> np.ndarray:
        rows = len(files)
        waiting = self.decoding + self.batcher.queued_rows
        if waiting + rows > self.max_queue_rows:
            raise Overloaded(f"queue full ({waiting} rows waiting, limit {self.max_queue_rows})")
        self.decoding += rows
        self.batcher.arriving += 1  # the batcher may hold a batch open for these rows
        try:
            x_RS = await asyncio.get_running_loop().run_in_executor(self.pool, self._decode, files, deadline)
        finally:
            self.decoding -= rows
            self.batcher.arriving -= 1
        return await self.batcher.submit(x_RS, deadline)

    def _decode(self, files: Files, deadline: float) -> np.ndarray:
        """float32 (R, S...) of the files, on a pool thread; BadRequest naming a file that fails."""
        x_RS = np.empty((len(files), *self.signature.input_shape), dtype=np.float32)
        for i, blob in enumerate(files.blobs):
            if time.monotonic() > deadline:  # the caller has had its 504: stop spending CPU on it
                raise DeadlineExceeded()
            try:
                x_RS[i] = self.prep.decode(blob, files.name(i))
            except DataError as exc:
                raise BadRequest(str(exc)) from None
        return x_RS

    async def stop(self) -> None:
        await super().stop()
        self.pool.shutdown(wait=False)


def _hinted(exc: BadRequest, body: bytes) -> BadRequest:
    """`exc`, saying so when the body is a media file sent without its Content-Type."""
    hint = media_codec.looks_like(body)
    return BadRequest(f"{exc}; {hint}", exc.status) if hint else exc

"""Text inputs: UTF-8 strings tokenized in the server with the model's sealed tokenizer, batched
together and run by length bucket, so one long text never pads a batch of short ones.

Requests queue their texts' token ids on one batcher (rows, as for numeric models). In the model
thread a batch is split by length bucket (16, 32, 64, ... tokens, up to the model's max length),
each bucket's rows are run in chunks of at most `--max-batch-tokens` tokens, cut to the longest
text among them; outputs go back in order. A text is cut at the model's max length (the special
tokens its tokenizer adds count within it), as in training.

Shape legend: R rows (texts)   L the model's max length   T tokens (a chunk's length)   O outputs per row
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np

from skylift.serve import codec
from skylift.serve.codec import V2Request
from skylift.serve.runtimes._base import Batched, Context

SMALLEST_BUCKET = 16  # tokens: below this a batch's cost is mostly per-call overhead anyway
Run = Callable[[np.ndarray], np.ndarray]


def buckets(max_length: int) -> tuple[int, ...]:
    """Bucket lengths: powers of two from SMALLEST_BUCKET, then max_length itself."""
    out, b = [], SMALLEST_BUCKET
    while b < max_length:
        out.append(b)
        b *= 2
    return (*out, max_length)


def by_bucket(run: Run, max_length: int, max_tokens: int) -> Run:
    """`run` over a batch of right-padded ids (R, L): rows grouped by length bucket, each group in
    chunks of at most `max_tokens` tokens cut to their longest text; outputs in the rows' order."""
    lengths = np.array(buckets(max_length))

    def run_batch(ids_RL: np.ndarray) -> np.ndarray:
        real_R = np.count_nonzero(ids_RL, axis=1)  # 0 is padding (tasks._text.encode)
        which_R = np.searchsorted(lengths, np.maximum(real_R, 1))
        parts: list[tuple[np.ndarray, np.ndarray]] = []
        for b in np.unique(which_R).tolist():
            rows = np.flatnonzero(which_R == b)
            per_chunk = max(1, max_tokens // int(lengths[b]))
            for lo in range(0, len(rows), per_chunk):
                chunk = rows[lo : lo + per_chunk]
                longest = max(1, int(real_R[chunk].max()))
                parts.append((chunk, run(np.ascontiguousarray(ids_RL[chunk, :longest]))))
        if len(parts) == 1:
            return parts[0][1]
        out_RO = np.empty((len(ids_RL), parts[0][1].shape[1]), dtype=np.float32)
        for rows, part in parts:
            out_RO[rows] = part
        return out_RO

    return run_batch


class TextRows(Batched):
    """Tensor `text` (V2 BYTES) or TF-Serving strings; `run` takes right-padded ids (R, T) int64
    with 0 at padding (skylift's convention, see tasks._text.encode) and returns float32 (R, O)."""

    def __init__(self, ctx: Context, run: Run) -> None:
        from skylift.data._tokenizer import TextTokenizer

        c, loaded = ctx.config, ctx.loaded
        if not loaded.tokenizer:
            raise ValueError(f"{loaded.ref} is a text model without its tokenizer; re-register it")
        self.tokenizer = TextTokenizer.from_json(loaded.tokenizer, source=f"{loaded.ref}: tokenizer.json")
        self.max_length = int(loaded.data["max_length"])
        for length in buckets(self.max_length):  # warm-up: first calls allocate and pick kernels
            run(np.ones((1, length), dtype=np.int64))
        run(
            np.ones(
                (min(c.max_batch_rows, max(1, c.max_batch_tokens // SMALLEST_BUCKET)), SMALLEST_BUCKET),
                np.int64,
            )
        )
        super().__init__(ctx, by_bucket(run, self.max_length, c.max_batch_tokens))

    def metadata(self) -> list[dict[str, Any]]:
        return [{"name": codec.TEXT_NAME, "datatype": "BYTES", "shape": [-1]}]

    def decode_v2(self, body: bytes, header_length: int | None, outputs: tuple[str, ...]) -> V2Request:
        return codec.decode_v2_text(body, header_length, outputs)

    def decode_v1(self, body: bytes) -> tuple[list[str], bool]:
        return codec.decode_v1_text(body)

    def cache_input(self, x: list[str]) -> bytes:
        return codec.bytes_tensor(x)

    def encode(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """(ids (R, max_length) int64 right-padded with 0, lengths (R,)) as the model was trained on."""
        from skylift.tasks._text import encode

        ids_RT = encode(self.tokenizer, texts, self.max_length)
        return ids_RT, np.count_nonzero(ids_RT, axis=1)  # real ids are never 0 after encode's swap

    def submit(self, x: list[str], deadline: float) -> Awaitable[np.ndarray]:
        return self.batcher.submit(self.encode(x)[0], deadline)

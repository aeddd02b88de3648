"""Token files: a corpus tokenized once into a flat file of ids, and packed blocks read from it by pread.

Shape legend: b blocks in a batch, T = block_size tokens per block.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import os
import weakref
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

from skylift._atomic import atomic_open, write_json
from skylift.data._corpus import Corpus, Piece
from skylift.data._io import first_line
from skylift.data._tokenizer import TextTokenizer
from skylift.errors import DataError, SpecError

FORMAT = 2  # bump when the file layout or the way text is cut into pieces changes: old caches are remade
# 256 KiB of text per encode call: 16 pieces or more, to keep 16 threads busy, and few enough tokens
# that the Rust encodings (~100 B per token while alive) stay near 25 MB even at one token per byte
# (1 MiB per call held ~100 MB, and the allocator's peak grew with the corpus: +21 MB for 10x text).
_BATCH_BYTES = 1 << 18
_SPLIT_SEGMENTS = 100  # contiguous stretches a split chooses its validation blocks among


@dataclass(frozen=True)
class TokenFile:
    """A flat file of token ids (`dtype`, `count` of them) and what it was made from.

    Each document's ids are followed by the tokenizer's end-of-text id. `text_bytes` is the UTF-8
    size of the text it holds, so `bytes_per_token` turns a loss in nats per token into bits per
    byte: bpb = loss / ln(2) / bytes_per_token.
    """

    path: Path
    dtype: str  # "uint16" or "uint32"
    count: int
    text_bytes: int
    tokenizer_fingerprint: str
    corpus_fingerprint: str

    @property
    def bytes_per_token(self) -> float:
        """UTF-8 bytes of text per token over the whole file (end-of-text ids counted as tokens)."""
        return self.text_bytes / self.count

    @property
    def itemsize(self) -> int:
        return np.dtype(self.dtype).itemsize

    def read_all(self) -> np.ndarray:
        """Every id as one int64 array: for tests and small files only."""
        return np.fromfile(self.path, dtype=self.dtype).astype(np.int64)


def cache_key(corpus: Corpus, tokenizer: TextTokenizer) -> str:
    """SHA-256 naming the token file of this corpus under this tokenizer (and this file format)."""
    text = f"skylift-tokens-v{FORMAT}\n{corpus.fingerprint}\n{tokenizer.fingerprint()}\n"
    return hashlib.sha256(text.encode("ascii")).hexdigest()


def tokenize_corpus(corpus: Corpus, tokenizer: TextTokenizer, cache_dir: Path) -> TokenFile:
    """The corpus as a token file under `cache_dir`, tokenized now unless an intact copy is there.

    Writes `<key>.tokens` and its sidecar `<key>.json` (dtype, count, fingerprints, text bytes),
    each atomically, the sidecar last; a sidecar that is missing, unreadable or disagrees with the
    file's size means the file is tokenized again. Streams: memory stays bounded whatever the
    corpus size (about one 256 KiB batch of text and its ids).
    """
    if tokenizer.eos_id is None:
        raise SpecError(
            f"data.tokenizer: {tokenizer!r} has no end-of-text token; language modelling needs one "
            "to separate documents"
        )
    key = cache_key(corpus, tokenizer)
    tokens_path = cache_dir / f"{key}.tokens"
    sidecar = cache_dir / f"{key}.json"
    expected = {"tokenizer_fingerprint": tokenizer.fingerprint(), "corpus_fingerprint": corpus.fingerprint}
    cached = _cached(tokens_path, sidecar, expected)
    if cached is not None:
        return cached
    dtype = "uint16" if tokenizer.vocab_size <= 1 << 16 else "uint32"
    try:
        with atomic_open(tokens_path, "wb", sync_dir=False) as out:
            count = _write_tokens(corpus, tokenizer, tokenizer.eos_id, np.dtype(dtype), out)
        made = TokenFile(tokens_path, dtype, count, corpus.total_bytes, **expected)
        write_json(sidecar, {"format": FORMAT, **_fields(made)})
    except OSError as exc:
        raise DataError(f"{cache_dir}: cannot write the token cache ({first_line(exc)})") from None
    return made


def _write_tokens(
    corpus: Corpus, tokenizer: TextTokenizer, eos_id: int, dtype: np.dtype[Any], out: IO[Any]
) -> int:
    """Tokenize `corpus` into `out`, a batch of pieces at a time; returns the number of ids written."""
    count = 0
    for batch in _batches(corpus.pieces()):
        flat, lengths = tokenizer.encode_pieces([piece.text for piece in batch])
        ends = np.cumsum(lengths)[np.array([piece.document_end for piece in batch], dtype=bool)]
        ids = np.insert(flat, ends, eos_id)  # an end-of-text id after each document's last piece
        out.write(ids.astype(dtype).tobytes())
        count += len(ids)
    return count


def _batches(pieces: Iterator[Piece]) -> Iterator[list[Piece]]:
    batch: list[Piece] = []
    size = 0
    for piece in pieces:
        batch.append(piece)
        size += len(piece.text)  # characters: close enough to bytes for sizing a batch
        if size >= _BATCH_BYTES:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


def _cached(tokens_path: Path, sidecar: Path, expected: dict[str, str]) -> TokenFile | None:
    """The token file recorded by `sidecar` when it is intact and made from the expected inputs."""
    try:
        meta = json.loads(sidecar.read_text(encoding="utf-8"))
        made = TokenFile(
            tokens_path,
            str(meta["dtype"]),
            int(meta["count"]),
            int(meta["text_bytes"]),
            str(meta["tokenizer_fingerprint"]),
            str(meta["corpus_fingerprint"]),
        )
        intact = (
            meta.get("format") == FORMAT
            and made.dtype in ("uint16", "uint32")
            and all(meta[name] == value for name, value in expected.items())
            and tokens_path.stat().st_size == made.count * made.itemsize
        )
    except (OSError, ValueError, KeyError, TypeError):  # missing, half-written by an old crash, edited
        return None
    return made if intact else None


def _fields(made: TokenFile) -> dict[str, Any]:
    return {
        "dtype": made.dtype,
        "count": made.count,
        "text_bytes": made.text_bytes,
        "tokenizer_fingerprint": made.tokenizer_fingerprint,
        "corpus_fingerprint": made.corpus_fingerprint,
    }


class TokenBlocks:
    """Packed blocks of a token file: block i holds tokens [i*T, i*T + T + 1) of the file.

    x is a block's first T tokens and y its last T (the next-token targets), so blocks overlap by
    one token. `take` reads just the blocks asked for with os.pread; no mmap, because file-backed
    mmap pages that have been read count in the process's resident memory (RSS) until the kernel
    reclaims them, so random reads over a file larger than memory would push RSS, and a container's
    memory limit, up to the file's size. pread copies into a small buffer and leaves the file's
    pages in the kernel's page cache, which RSS does not count. Safe to use from several threads
    and after fork: pread has no shared file position, and each process opens its own descriptor.
    """

    def __init__(
        self, token_file: TokenFile, block_size: int, start_block: int = 0, stop_block: int | None = None
    ) -> None:
        if block_size < 1:
            raise SpecError(f"data.block_size must be >= 1, got {block_size}")
        total = (token_file.count - 1) // block_size if token_file.count else 0
        if total < 1:
            raise DataError(
                f"{token_file.path}: data.block_size {block_size} needs at least {block_size + 1} tokens, "
                f"the corpus has {token_file.count}; lower data.block_size or add text"
            )
        stop = total if stop_block is None else stop_block
        if not 0 <= start_block < stop <= total:
            raise DataError(
                f"{token_file.path}: blocks [{start_block}, {stop}) lie outside its {total} blocks "
                f"of {block_size} tokens"
            )
        self.token_file = token_file
        self.block_size = block_size
        self._fd = -1
        self._pid = -1  # the process `_fd` was opened in
        self._set_ranges([(start_block, stop)])

    def _set_ranges(self, ranges: list[tuple[int, int]]) -> None:
        self._ranges = tuple(ranges)
        sizes = [stop - start for start, stop in ranges]
        self._firsts = np.array([start for start, _ in ranges], dtype=np.int64)
        self._starts = np.cumsum([0, *sizes[:-1]], dtype=np.int64)  # each range's first index in self
        self._len = sum(sizes)

    def __len__(self) -> int:
        return self._len

    @property
    def ranges(self) -> tuple[tuple[int, int], ...]:
        """The file's blocks this set holds, as [start, stop) block ranges in order."""
        return self._ranges

    def block_ids(self, idx: np.ndarray) -> np.ndarray:
        """The file's block numbers for indices `idx` into this set."""
        idx = np.asarray(idx, dtype=np.int64)
        if idx.size and (idx.min() < 0 or idx.max() >= self._len):
            raise IndexError(f"block index out of range [0, {self._len})")
        which = np.searchsorted(self._starts, idx, side="right") - 1
        ids: np.ndarray = self._firsts[which] + idx - self._starts[which]
        return ids

    def take(self, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(x int64 (b, T), y int64 (b, T)) for the blocks at indices `idx`, read from the file."""
        blocks = self.block_ids(idx)
        width = self.block_size + 1
        itemsize = self.token_file.itemsize
        buffer_bW = np.empty((len(blocks), width), dtype=self.token_file.dtype)
        fd = self._descriptor()
        for row, block in enumerate(blocks.tolist()):
            view = memoryview(buffer_bW[row]).cast("B")
            got = os.preadv(fd, [view], block * self.block_size * itemsize)
            if got != width * itemsize:
                raise DataError(
                    f"{self.token_file.path}: truncated at block {block}; delete the file to rebuild it"
                )
        tokens_bW = buffer_bW.astype(np.int64)
        return tokens_bW[:, :-1], tokens_bW[:, 1:]

    def split(self, fraction_val: float, seed: int) -> tuple[TokenBlocks, TokenBlocks]:
        """(train, validation): whole contiguous stretches of blocks, chosen by `seed`, go to validation.

        The blocks are cut into up to 100 equal stretches and round(fraction * stretches) of them,
        at least one, are drawn for validation: spread over the corpus (not just its tail, which
        may be one kind of text) yet contiguous, so a validation block's neighbours are mostly
        validation blocks too. Deterministic for a given seed and block count.
        """
        if not 0.0 < fraction_val < 1.0:
            raise SpecError(f"data.validation_split must be between 0 and 1, got {fraction_val}")
        if self._len < 2:
            raise DataError(f"{self.token_file.path}: one block of {self.block_size} tokens cannot be split")
        segments = min(_SPLIT_SEGMENTS, self._len)
        bounds = np.linspace(0, self._len, segments + 1).round().astype(np.int64)
        chosen = max(1, min(segments - 1, round(fraction_val * segments)))
        val = np.zeros(segments, dtype=bool)
        val[np.random.default_rng(seed).choice(segments, chosen, replace=False)] = True
        return self._subset(bounds, ~val), self._subset(bounds, val)

    def _subset(self, bounds: np.ndarray, keep: np.ndarray) -> TokenBlocks:
        """The blocks at indices [bounds[i], bounds[i + 1]) of this set for each i where `keep` holds."""
        ranges: list[tuple[int, int]] = []
        for i in np.flatnonzero(keep).tolist():
            for start, stop in self._file_ranges(int(bounds[i]), int(bounds[i + 1])):
                if ranges and ranges[-1][1] == start:
                    ranges[-1] = (ranges[-1][0], stop)  # neighbours merge into one range
                else:
                    ranges.append((start, stop))
        subset = copy.copy(self)
        subset._fd, subset._pid = -1, -1  # its own descriptor, closed with it
        subset._set_ranges(ranges)
        return subset

    def _file_ranges(self, lo: int, hi: int) -> list[tuple[int, int]]:
        """Indices [lo, hi) of this set as ranges of the file's block numbers."""
        out: list[tuple[int, int]] = []
        for (start, stop), first in zip(self._ranges, self._starts.tolist(), strict=True):
            a, b = max(lo, first), min(hi, first + stop - start)
            if a < b:
                out.append((start + a - first, start + b - first))
        return out

    def _descriptor(self) -> int:
        if self._pid != os.getpid():  # a fresh process (fork) opens its own, leaving the parent's be
            try:
                self._fd = os.open(self.token_file.path, os.O_RDONLY)
            except OSError as exc:
                raise DataError(f"{self.token_file.path}: cannot read ({first_line(exc)})") from None
            self._pid = os.getpid()
            weakref.finalize(self, _close, self._fd)
        return self._fd

    def __getstate__(self) -> dict[str, Any]:  # pickled for a spawned worker: the descriptor stays here
        return {**self.__dict__, "_fd": -1, "_pid": -1}


def _close(fd: int) -> None:
    with contextlib.suppress(OSError):
        os.close(fd)

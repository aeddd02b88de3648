"""Text corpora for language modelling: a .txt file, a folder or a glob of them; each file one document."""

from __future__ import annotations

import glob
import hashlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from skylift.data._io import first_line
from skylift.data._utf8 import READ_BYTES, decoded_pieces
from skylift.errors import DataError

PIECE_BYTES = 16 << 10  # 16 KiB: the most text of one document handed out (and tokenized) at once
_GLOB_CHARS = frozenset("*?[")


class Piece(NamedTuple):
    """Consecutive text of one document; `document_end` is true on its document's last piece."""

    text: str
    document_end: bool


@dataclass(frozen=True)
class Corpus:
    """The files of a corpus (in document order), their total size and a fingerprint of their content.

    `fingerprint` is the SHA-256 over each file's name (relative to the corpus root), size and
    bytes, in order: it changes when a file is added, removed, renamed or edited, and not when the
    corpus folder moves.
    """

    source: str
    files: tuple[Path, ...]
    total_bytes: int
    fingerprint: str

    def pieces(self, piece_bytes: int = PIECE_BYTES) -> Iterator[Piece]:
        """Every document's text, in file order, in pieces of at most `piece_bytes` UTF-8 bytes.

        A file larger than `piece_bytes` comes in several pieces cut at line ends (a line longer
        than that is cut between characters); empty files give nothing. Memory: about two pieces.
        """
        for path in self.files:
            held: str | None = None  # one piece held back to learn whether it ends the document
            try:
                with path.open("rb") as stream:
                    for _, text in decoded_pieces(path, stream.read, piece_bytes):
                        if held is not None:
                            yield Piece(held, False)
                        held = text
            except OSError as exc:
                raise DataError(f"{path}: cannot read ({first_line(exc)})") from None
            if held is not None:
                yield Piece(held, True)

    def texts(self, piece_bytes: int = PIECE_BYTES) -> Iterator[str]:
        """The pieces' text alone, e.g. to train a tokenizer on."""
        return (piece.text for piece in self.pieces(piece_bytes))


def read_corpus(source: str) -> Corpus:
    """The corpus named by `source`: one file, a folder (every *.txt below it, sorted) or a glob pattern.

    Every file is read through once here, streamed, to check that it is UTF-8 and to fingerprint
    it. A DataError names the source when nothing matches or the corpus holds no text, and the file
    and byte offset of the first byte that is not UTF-8.
    """
    text = source.strip()
    if not text:
        raise DataError("corpus source is empty; give a .txt file, a folder of .txt files or a glob pattern")
    root, files = _find(text)
    digest = hashlib.sha256()
    total = 0
    for path in files:
        name = path.relative_to(root).as_posix().encode("utf-8")
        try:
            size = path.stat().st_size
            # Lengths first, so that no two different corpora hash the same byte stream.
            digest.update(len(name).to_bytes(8, "little") + name + size.to_bytes(8, "little"))
            with path.open("rb") as stream:
                for _ in decoded_pieces(path, _hashing(stream.read, digest), READ_BYTES):
                    pass  # decoding is the UTF-8 check; the text is dropped
        except OSError as exc:
            raise DataError(f"{path}: cannot read ({first_line(exc)})") from None
        total += size
    if total == 0:
        raise DataError(f"{text}: the corpus is empty ({len(files)} file(s), 0 bytes of text)")
    return Corpus(text, tuple(files), total, digest.hexdigest())


def _find(text: str) -> tuple[Path, list[Path]]:
    """(root the names are taken relative to, files in document order)."""
    if _GLOB_CHARS.intersection(text):
        matches = glob.glob(os.path.expanduser(text), recursive=True)
        files = sorted(Path(p) for p in matches if os.path.isfile(p))
        if not files:
            raise DataError(f"{text}: no files match this pattern")
        return Path(os.path.commonpath([str(p.parent) for p in files])), files
    path = Path(text).expanduser()
    if path.is_dir():
        files = sorted(p for p in path.rglob("*.txt") if p.is_file())
        if not files:
            raise DataError(f"{path}: folder holds no .txt files")
        return path, files
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    return path.parent, [path]


def _hashing(read: Callable[[int], bytes], digest: hashlib._Hash) -> Callable[[int], bytes]:
    """`read`, with every block it returns also fed to `digest`."""

    def hashed(n: int) -> bytes:
        block = read(n)
        digest.update(block)
        return block

    return hashed

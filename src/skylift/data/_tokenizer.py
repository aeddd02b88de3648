"""Text <-> token ids: a thin typed wrapper over a Hugging Face `tokenizers.Tokenizer`.

Threads: batch encoding and training run on the Rust library's rayon pool, one thread per CPU
unless `RAYON_NUM_THREADS` is set before the first encode (the pool is sized once per process).
Several training processes on one node would each take every CPU, so the launcher should call
`limit_threads(cpus // local_world_size)` at start-up. In a process forked after the pool was used
(a DataLoader worker) the library turns its own parallelism off, as fork leaves the pool's
threads behind; we therefore tokenize in the main process, before any worker forks.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Sequence
from itertools import chain
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from skylift.data._io import first_line
from skylift.errors import DataError, SpecError

if TYPE_CHECKING:
    from tokenizers import Encoding, Tokenizer

PAD = "<pad>"
EOS = "<eos>"
SPECIALS = (PAD, EOS)  # their ids are their places here: <pad> = 0, <eos> = 1
MIN_VOCAB = 256 + len(SPECIALS)  # every byte, so no text is ever unknown, plus the special tokens
# Names used for padding and end of text by tokenizers trained elsewhere (BERT, GPT-2, Llama, ...).
_PAD_NAMES = (PAD, "[PAD]", "<|pad|>", "<|padding|>", "<|finetune_right_pad_id|>")
_EOS_NAMES = (EOS, "<|endoftext|>", "</s>", "<|end_of_text|>", "<|im_end|>", "<|eot_id|>", "[SEP]")


class TextTokenizer:
    """A tokenizer and the ids the training loop needs: `pad_id`, `eos_id`, `vocab_size`.

    Ids lie in [0, vocab_size). `pad_id` only fills the tail of short rows: `encode_batch` returns
    each row's length, so padded positions are masked by length and any valid id would do. A
    tokenizer.json that names no pad token (GPT-2's, for one) pads with its end-of-text token when
    it has one, else with id 0. Text that spells a special token ("<eos>") is encoded as plain
    text: only the tokenizer's own rules (a BERT post-processor's [CLS]/[SEP]) add special tokens.
    Thread-safe: encoding only reads the Rust tokenizer.
    """

    def __init__(self, tokenizer: Tokenizer, source: str) -> None:
        self._tokenizer = tokenizer
        self._json = tokenizer.to_str()
        self._source = source
        vocab = tokenizer.get_vocab(with_added_tokens=True)
        if not vocab:
            raise DataError(f"{source}: tokenizer has an empty vocabulary")
        self.vocab_size: int = max(vocab.values()) + 1  # ids may skip numbers; embeddings need max + 1
        self.eos_id: int | None = _first_id(vocab, _EOS_NAMES)
        padding = tokenizer.padding
        named_pad = _first_id(vocab, _PAD_NAMES)
        if padding is not None:
            self.pad_id: int = int(padding["pad_id"])
        elif named_pad is not None:
            self.pad_id = named_pad
        else:
            self.pad_id = self.eos_id if self.eos_id is not None else 0
        self._encoders: dict[int | None, Tokenizer] = {}

    @classmethod
    def train_bpe(cls, texts: Iterable[str], vocab_size: int) -> TextTokenizer:
        """A byte-level BPE tokenizer trained on `texts` (streamed), GPT-2 style; `<pad>` = 0, `<eos>` = 1.

        Deterministic: the same texts and `vocab_size` give the same JSON. The vocabulary may come
        out smaller than `vocab_size` when the texts allow fewer merges.
        """
        if vocab_size < MIN_VOCAB:
            raise SpecError(
                f"data.tokenizer.vocab_size must be >= {MIN_VOCAB} (256 bytes + {len(SPECIALS)} special "
                f"tokens), got {vocab_size}"
            )
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

        tokenizer = Tokenizer(models.BPE())
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tokenizer.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            min_frequency=2,  # a pair seen once is noise, not a unit worth a vocabulary slot
            show_progress=False,
            special_tokens=list(SPECIALS),
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # all 256 bytes, seen or not
        )
        tokenizer.train_from_iterator(texts, trainer=trainer)
        return cls(tokenizer, f"trained BPE ({vocab_size})")

    @classmethod
    def from_file(cls, path: str | Path) -> TextTokenizer:
        """Load a Hugging Face tokenizer.json, or the tokenizer.json inside a model folder."""
        file = Path(path).expanduser()
        if file.is_dir():
            file = file / "tokenizer.json"
        if not file.is_file():
            raise DataError(f"{file}: not found; give a tokenizer.json file or a folder holding one")
        try:
            text = file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise DataError(f"{file}: cannot read the tokenizer ({first_line(exc)})") from None
        return cls.from_json(text, source=str(file))

    @classmethod
    def from_json(cls, text: str, source: str = "tokenizer JSON") -> TextTokenizer:
        """A tokenizer from the text of a tokenizer.json; anything else is a one-line DataError."""
        from tokenizers import Tokenizer

        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DataError(f"{source}: not a tokenizer.json (invalid JSON: {exc.msg})") from None
        if not isinstance(data, dict) or not isinstance(data.get("model"), dict):
            hint = ""
            if isinstance(data, dict) and ("tokenizer_class" in data or "model_max_length" in data):
                hint = "; this looks like tokenizer_config.json, use tokenizer.json from the same folder"
            raise DataError(f"{source}: not a tokenizer.json (no 'model' object){hint}")
        try:
            tokenizer = Tokenizer.from_str(text)
        except BaseException as exc:  # the Rust side raises plain Exception, or PanicException
            if not isinstance(exc, Exception) and type(exc).__name__ != "PanicException":
                raise  # KeyboardInterrupt, SystemExit
            raise DataError(f"{source}: not a usable tokenizer.json ({first_line(exc)})") from None
        return cls(tokenizer, source)

    def to_json(self) -> str:
        """The tokenizer.json text (Hugging Face format); `from_json` of it gives this tokenizer back."""
        return self._json

    def fingerprint(self) -> str:
        """SHA-256 of the canonical JSON (sorted keys, no spaces): equal for equal tokenizers."""
        data = json.loads(self._json)
        canonical = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()

    def encode_batch(self, texts: Sequence[str], max_length: int) -> tuple[np.ndarray, np.ndarray]:
        """(ids int64 (N, max_length) right-padded with pad_id, lengths int64 (N,)); longer texts are cut.

        Special tokens the tokenizer adds itself ([CLS] ... [SEP]) count within `max_length`.
        """
        added = self._tokenizer.num_special_tokens_to_add(is_pair=False)  # e.g. 2: BERT's [CLS], [SEP]
        if max_length <= added:
            raise SpecError(
                f"data.block_size must be > {added} (the special tokens this tokenizer adds to every text), "
                f"got {max_length}"
            )
        encodings = self._encoder(max_length).encode_batch_fast(list(texts), add_special_tokens=True)
        flat, lengths = _flat(encodings)
        ids = np.full((len(lengths), max_length), self.pad_id, dtype=np.int64)
        ids[np.arange(max_length) < lengths[:, None]] = flat  # row-major, as `flat` is
        return ids, lengths

    def encode_pieces(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """(ids int64, the texts' ids one after another; lengths int64 (N,)), nothing cut or added."""
        return _flat(self._encoder(None).encode_batch_fast(list(texts), add_special_tokens=False))

    def decode(self, ids: Sequence[int] | np.ndarray, skip_special_tokens: bool = True) -> str:
        """The text of `ids`; special tokens (padding, end of text) are left out unless asked for."""
        values = ids.tolist() if isinstance(ids, np.ndarray) else list(ids)
        return self._tokenizer.decode(values, skip_special_tokens=skip_special_tokens)

    def __repr__(self) -> str:
        return f"TextTokenizer({self._source!r}, vocab_size={self.vocab_size})"

    def _encoder(self, max_length: int | None) -> Tokenizer:
        """A copy that cuts at `max_length` and reads "<eos>" in text as text; ours stays as loaded."""
        encoder = self._encoders.get(max_length)
        if encoder is None:
            from tokenizers import Tokenizer

            encoder = Tokenizer.from_str(self._json)
            encoder.no_padding()
            if max_length is None:
                encoder.no_truncation()
            else:
                encoder.enable_truncation(max_length)
            encoder.encode_special_tokens = True
            self._encoders[max_length] = encoder  # a race builds an equal copy twice: harmless
        return encoder


def limit_threads(threads: int) -> None:
    """Cap this process's tokenizer threads; call at start-up, before the first encode or training.

    Leaves a `RAYON_NUM_THREADS` the user set alone. One thread also turns the library's
    parallelism off, which silences its warning when a DataLoader worker forks.
    """
    if threads < 1:
        raise SpecError(f"tokenizer threads must be >= 1, got {threads}")
    os.environ.setdefault("RAYON_NUM_THREADS", str(threads))
    if threads == 1:
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _first_id(vocab: dict[str, int], names: Sequence[str]) -> int | None:
    for name in names:
        if name in vocab:
            return vocab[name]
    return None


def _flat(encodings: list[Encoding]) -> tuple[np.ndarray, np.ndarray]:
    """(every encoding's ids one after another, int64; each one's length, int64)."""
    lengths = np.fromiter((len(e) for e in encodings), dtype=np.int64, count=len(encodings))
    ids = chain.from_iterable(e.ids for e in encodings)
    return np.fromiter(ids, dtype=np.int64, count=int(lengths.sum())), lengths

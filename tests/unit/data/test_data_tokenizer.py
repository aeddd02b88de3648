"""TextTokenizer: BPE training, tokenizer.json files from elsewhere, batch encoding and decoding."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

from skylift.data import TextTokenizer
from skylift.errors import DataError, SpecError

TEXTS = [
    f"The {animal} number {i} jumps over the lazy dog; naïve café façade, 東京 {i * 7}!"
    for i in range(300)
    for animal in ("fox", "cat", "wolf")
]


@pytest.fixture(scope="module")
def bpe() -> TextTokenizer:
    return TextTokenizer.train_bpe(iter(TEXTS), vocab_size=400)


def test_training_is_deterministic_and_reserves_the_special_ids(bpe: TextTokenizer) -> None:
    again = TextTokenizer.train_bpe(iter(TEXTS), vocab_size=400)
    assert again.to_json() == bpe.to_json()
    assert again.fingerprint() == bpe.fingerprint()
    assert (bpe.pad_id, bpe.eos_id, bpe.vocab_size) == (0, 1, 400)
    other = TextTokenizer.train_bpe(iter(TEXTS), vocab_size=300)
    assert other.fingerprint() != bpe.fingerprint()


def test_training_is_deterministic_across_processes_and_thread_counts(bpe: TextTokenizer) -> None:
    code = (
        "from skylift.data import TextTokenizer\n"
        f"texts = {TEXTS!r}\n"
        "print(TextTokenizer.train_bpe(iter(texts), vocab_size=400).fingerprint())"
    )
    env = {**os.environ, "RAYON_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == bpe.fingerprint()


def test_a_vocabulary_below_the_byte_alphabet_is_a_spec_error() -> None:
    with pytest.raises(SpecError) as err:
        TextTokenizer.train_bpe(iter(TEXTS), vocab_size=100)
    assert str(err.value) == (
        "data.tokenizer.vocab_size must be >= 258 (256 bytes + 2 special tokens), got 100"
    )


@pytest.mark.parametrize(
    "text", ["plain words", "  leading and trailing  \n", "tabs\tand\r\nnewlines\n\n", "unseen: Ωmega ✓ 🚀 ß"]
)
def test_encode_then_decode_gives_the_text_back(bpe: TextTokenizer, text: str) -> None:
    ids, lengths = bpe.encode_batch([text], max_length=256)
    assert bpe.decode(ids[0, : lengths[0]]) == text


def test_text_spelling_a_special_token_is_encoded_as_text(bpe: TextTokenizer) -> None:
    ids, lengths = bpe.encode_batch(["a<eos>b"], max_length=32)
    row = ids[0, : lengths[0]].tolist()
    assert bpe.eos_id not in row
    assert bpe.decode(row) == "a<eos>b"
    assert bpe.decode([5, bpe.eos_id or 0, 6], skip_special_tokens=False).count("<eos>") == 1


def test_encode_batch_pads_right_cuts_and_reports_lengths(bpe: TextTokenizer) -> None:
    long = TEXTS[0] * 4
    ids, lengths = bpe.encode_batch(["The fox", long, "x"], max_length=16)
    assert ids.dtype == np.int64 and ids.shape == (3, 16)
    assert lengths.dtype == np.int64 and lengths.tolist() == [2, 16, 1]
    assert (ids[0, 2:] == bpe.pad_id).all() and (ids[2, 1:] == bpe.pad_id).all()
    full, full_lengths = bpe.encode_batch([long], max_length=512)
    np.testing.assert_array_equal(ids[1], full[0, :16])  # cutting keeps the first tokens
    assert full_lengths[0] > 16
    empty, empty_lengths = bpe.encode_batch([], max_length=8)
    assert empty.shape == (0, 8) and empty_lengths.shape == (0,)


def test_json_round_trip_and_file_round_trip(bpe: TextTokenizer, tmp_path: Path) -> None:
    loaded = TextTokenizer.from_json(bpe.to_json())
    assert loaded.to_json() == bpe.to_json() and loaded.fingerprint() == bpe.fingerprint()
    (tmp_path / "tokenizer.json").write_text(bpe.to_json(), encoding="utf-8")
    for path in (tmp_path / "tokenizer.json", tmp_path):  # the file, or a model folder holding it
        assert TextTokenizer.from_file(path).fingerprint() == bpe.fingerprint()
    np.testing.assert_array_equal(loaded.encode_batch(TEXTS[:5], 32)[0], bpe.encode_batch(TEXTS[:5], 32)[0])


def _wordpiece() -> Tokenizer:
    """A BERT-style tokenizer built with `tokenizers` directly: [PAD] = 0, [CLS] ... [SEP] added."""
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "the", "fox", "cat", "jump", "##s", "over"]
    tokenizer = Tokenizer(models.WordPiece({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )
    tokenizer.decoder = decoders.WordPiece()
    tokenizer.add_special_tokens(["[PAD]", "[UNK]", "[CLS]", "[SEP]"])
    return tokenizer


def test_a_wordpiece_tokenizer_json_written_by_tokenizers(tmp_path: Path) -> None:
    path = tmp_path / "tokenizer.json"
    _wordpiece().save(str(path))
    bert = TextTokenizer.from_file(path)
    assert (bert.pad_id, bert.eos_id, bert.vocab_size) == (0, 3, 10)
    ids, lengths = bert.encode_batch(["The fox jumps", "the cat jumps over the fox"], max_length=6)
    assert ids.tolist() == [[2, 4, 5, 7, 8, 3], [2, 4, 6, 7, 8, 3]]  # [SEP] kept when cutting
    assert lengths.tolist() == [6, 6]
    assert bert.decode(ids[0]) == "the fox jumps"
    with pytest.raises(SpecError) as err:
        bert.encode_batch(["the fox"], max_length=2)
    assert str(err.value) == (
        "data.block_size must be > 2 (the special tokens this tokenizer adds to every text), got 2"
    )


def test_a_gpt2_style_tokenizer_without_a_pad_token_pads_with_end_of_text() -> None:
    tokenizer = Tokenizer(models.BPE({"a": 0, "b": 1, "<|endoftext|>": 2}, []))
    tokenizer.add_special_tokens(["<|endoftext|>"])
    gpt = TextTokenizer.from_json(tokenizer.to_str())
    assert (gpt.pad_id, gpt.eos_id) == (2, 2)
    bare = Tokenizer(models.BPE({"a": 0, "b": 1}, []))
    plain = TextTokenizer.from_json(bare.to_str())
    assert (plain.pad_id, plain.eos_id) == (0, None)
    ids, lengths = plain.encode_batch(["ab", "a"], max_length=3)
    assert ids.tolist() == [[0, 1, 0], [0, 0, 0]] and lengths.tolist() == [2, 1]  # masked by length


def test_a_padding_token_set_in_the_json_wins() -> None:
    tokenizer = _wordpiece()
    tokenizer.enable_padding(pad_id=9, pad_token="over")
    assert TextTokenizer.from_json(tokenizer.to_str()).pad_id == 9


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("not json", "not a tokenizer.json (invalid JSON: Expecting value)"),
        ('{"name": "x"}', "not a tokenizer.json (no 'model' object)"),
        ("[1, 2]", "not a tokenizer.json (no 'model' object)"),
        (
            '{"tokenizer_class": "BertTokenizer", "model_max_length": 512}',
            "not a tokenizer.json (no 'model' object); this looks like tokenizer_config.json, "
            "use tokenizer.json from the same folder",
        ),
        (
            '{"model": {"type": "BPE"}}',
            "not a usable tokenizer.json (Missing vocab/merges at line 1 column 26)",
        ),
    ],
)
def test_a_json_that_is_not_a_tokenizer_is_one_line(text: str, message: str) -> None:
    with pytest.raises(DataError) as err:
        TextTokenizer.from_json(text, source="tok.json")
    assert str(err.value) == f"tok.json: {message}"


def test_missing_and_unreadable_tokenizer_files(tmp_path: Path) -> None:
    with pytest.raises(DataError) as err:
        TextTokenizer.from_file(tmp_path)
    assert str(err.value) == (
        f"{tmp_path / 'tokenizer.json'}: not found; give a tokenizer.json file or a folder holding one"
    )
    path = tmp_path / "tokenizer.json"
    path.write_bytes(b"\xff\xfe{}")
    with pytest.raises(DataError, match=r"tokenizer.json: cannot read the tokenizer \('utf-8' codec"):
        TextTokenizer.from_file(path)
    path.write_text(json.dumps({"version": "1.0"}), encoding="utf-8")
    with pytest.raises(DataError, match=r"tokenizer.json: not a tokenizer.json \(no 'model' object\)$"):
        TextTokenizer.from_file(path)

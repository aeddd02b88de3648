"""Token files: tokenize once and cache, rebuild what is damaged, read packed blocks in bounded memory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from tokenizers import Tokenizer, models, pre_tokenizers

from skylift.data import TextTokenizer, TokenBlocks, TokenFile, read_corpus, tokenize_corpus
from skylift.data._tokens import FORMAT
from skylift.errors import DataError, SpecError

LETTERS = "abcdefghijklmnopqrstuvwxyz"
# A word-level tokenizer (one token per letter) written by `tokenizers` itself: fast and predictable.
LETTER_TOKENIZER = f"""
from tokenizers import Tokenizer, models, pre_tokenizers
vocab = {{"<pad>": 0, "<eos>": 1, "<unk>": 2, **{{c: i + 3 for i, c in enumerate({LETTERS!r})}}}}
letter_tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
letter_tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
"""


def _letters() -> TextTokenizer:
    scope: dict[str, Tokenizer] = {}
    exec(LETTER_TOKENIZER, scope)
    return TextTokenizer.from_json(scope["letter_tokenizer"].to_str())


def _corpus_dir(root: Path, docs: list[str]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for i, doc in enumerate(docs):
        (root / f"doc{i:03d}.txt").write_text(doc, encoding="utf-8")
    return root


def test_documents_are_joined_by_end_of_text_in_a_uint16_file(tmp_path: Path) -> None:
    tokenizer = _letters()
    corpus = read_corpus(str(_corpus_dir(tmp_path / "c", ["a b c", "d e", "z\nz  a\n"])))
    made = tokenize_corpus(corpus, tokenizer, tmp_path / "cache")
    assert made.dtype == "uint16" and made.path.stat().st_size == made.count * 2
    assert made.read_all().tolist() == [3, 4, 5, 1, 6, 7, 1, 28, 28, 3, 1]
    assert made.text_bytes == corpus.total_bytes == 15
    assert made.bytes_per_token == pytest.approx(15 / 11)
    sidecar = json.loads((tmp_path / "cache" / f"{made.path.stem}.json").read_text())
    assert sidecar == {
        "format": FORMAT,
        "dtype": "uint16",
        "count": 11,
        "text_bytes": 15,
        "tokenizer_fingerprint": tokenizer.fingerprint(),
        "corpus_fingerprint": corpus.fingerprint,
    }


def test_a_large_vocabulary_uses_uint32_and_a_document_in_many_pieces(tmp_path: Path) -> None:
    vocab = {"<pad>": 0, "<eos>": 1, "<unk>": 2, **{f"w{i}": i + 3 for i in range(70_000)}}
    words = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    words.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = TextTokenizer.from_json(words.to_str())
    text = "".join(f"w{i} w69999\n" for i in range(30_000))  # ~370 KB: several 64 KiB pieces
    corpus = read_corpus(str(_corpus_dir(tmp_path / "c", [text, "w5"])))
    made = tokenize_corpus(corpus, tokenizer, tmp_path / "cache")
    assert made.dtype == "uint32"
    expected = [t for i in range(30_000) for t in (i + 3, 70_002)] + [1, 8, 1]
    assert made.read_all().tolist() == expected


def test_a_second_run_reuses_the_file_and_a_damaged_one_is_rebuilt(tmp_path: Path) -> None:
    tokenizer = _letters()
    corpus = read_corpus(str(_corpus_dir(tmp_path / "c", ["a b c d e f g"] * 20)))
    first = tokenize_corpus(corpus, tokenizer, tmp_path / "cache")
    stat = first.path.stat()
    again = tokenize_corpus(corpus, tokenizer, tmp_path / "cache")
    assert again == first
    assert (again.path.stat().st_ino, again.path.stat().st_mtime_ns) == (stat.st_ino, stat.st_mtime_ns)
    full = first.read_all()

    with first.path.open("r+b") as f:  # cut short, as by a full disk outside our atomic write
        f.truncate(first.count)
    rebuilt = tokenize_corpus(corpus, tokenizer, tmp_path / "cache")
    assert rebuilt == first and rebuilt.path.stat().st_ino != stat.st_ino
    np.testing.assert_array_equal(rebuilt.read_all(), full)

    sidecar = tmp_path / "cache" / f"{first.path.stem}.json"
    sidecar.write_text("{not json", encoding="utf-8")
    assert tokenize_corpus(corpus, tokenizer, tmp_path / "cache") == first
    assert json.loads(sidecar.read_text())["count"] == first.count


def test_another_tokenizer_or_changed_text_gets_its_own_file(tmp_path: Path) -> None:
    corpus = read_corpus(str(_corpus_dir(tmp_path / "c", ["a b", "c"])))
    letters = tokenize_corpus(corpus, _letters(), tmp_path / "cache")
    bpe = TextTokenizer.train_bpe(["a b c a b c"], vocab_size=260)
    other = tokenize_corpus(corpus, bpe, tmp_path / "cache")
    assert other.path != letters.path and other.tokenizer_fingerprint == bpe.fingerprint()
    (tmp_path / "c" / "doc001.txt").write_text("c d", encoding="utf-8")
    edited = tokenize_corpus(read_corpus(str(tmp_path / "c")), _letters(), tmp_path / "cache")
    assert edited.path != letters.path
    assert len(list((tmp_path / "cache").glob("*.tokens"))) == 3


def test_a_tokenizer_without_end_of_text_cannot_join_documents(tmp_path: Path) -> None:
    bare = TextTokenizer.from_json(Tokenizer(models.BPE({"a": 0}, [])).to_str(), source="my.json")
    corpus = read_corpus(str(_corpus_dir(tmp_path / "c", ["a"])))
    with pytest.raises(SpecError) as err:
        tokenize_corpus(corpus, bare, tmp_path / "cache")
    assert str(err.value) == (
        "data.tokenizer: TextTokenizer('my.json', vocab_size=1) has no end-of-text token; "
        "language modelling needs one to separate documents"
    )


def _token_file(tmp_path: Path, ids: np.ndarray) -> TokenFile:
    path = tmp_path / "t.tokens"
    ids.tofile(path)
    return TokenFile(path, str(ids.dtype), len(ids), len(ids) * 4, "tok", "corpus")


def test_blocks_equal_slices_of_the_token_array(tmp_path: Path) -> None:
    ids = np.random.default_rng(0).integers(0, 60_000, size=1001).astype(np.uint16)
    blocks = TokenBlocks(_token_file(tmp_path, ids), block_size=10)
    assert len(blocks) == 100  # block 99 ends at token 1000, the file's last
    idx = np.array([0, 99, 42, 42])
    x, y = blocks.take(idx)
    assert x.dtype == np.int64 and x.shape == (4, 10) and y.shape == (4, 10)
    for row, i in enumerate(idx):
        np.testing.assert_array_equal(x[row], ids[i * 10 : i * 10 + 10])
        np.testing.assert_array_equal(y[row], ids[i * 10 + 1 : i * 10 + 11])
    window = TokenBlocks(blocks.token_file, 10, start_block=40, stop_block=50)
    assert len(window) == 10
    np.testing.assert_array_equal(window.take(np.array([2]))[0], blocks.take(np.array([42]))[0])
    with pytest.raises(IndexError):
        window.take(np.array([10]))


def test_split_is_seeded_contiguous_and_covers_every_block_once(tmp_path: Path) -> None:
    ids = np.arange(100_001, dtype=np.uint32)
    blocks = TokenBlocks(_token_file(tmp_path, ids), block_size=100)
    train, val = blocks.split(0.1, seed=3)
    assert (len(train), len(val)) == (900, 100)
    every = np.concatenate([train.block_ids(np.arange(len(train))), val.block_ids(np.arange(len(val)))])
    assert sorted(every.tolist()) == list(range(1000))
    again_train, again_val = blocks.split(0.1, seed=3)
    assert (again_train.ranges, again_val.ranges) == (train.ranges, val.ranges)
    assert blocks.split(0.1, seed=4)[1].ranges != val.ranges
    assert all(stop - start >= 10 for start, stop in val.ranges)  # whole stretches, not scattered blocks
    x, y = val.take(np.arange(len(val)))
    starts = val.block_ids(np.arange(len(val))) * 100
    np.testing.assert_array_equal(x[:, 0], starts)
    np.testing.assert_array_equal(y[:, -1], starts + 100)
    _, sub_val = val.split(0.5, seed=0)  # a split of a split stays within it
    assert set(sub_val.block_ids(np.arange(len(sub_val))).tolist()) < set(every[len(train) :].tolist())


def test_a_block_larger_than_the_corpus_says_how_many_tokens_there_are(tmp_path: Path) -> None:
    made = _token_file(tmp_path, np.arange(100, dtype=np.uint16))
    with pytest.raises(DataError) as err:
        TokenBlocks(made, block_size=128)
    assert str(err.value) == (
        f"{made.path}: data.block_size 128 needs at least 129 tokens, the corpus has 100; "
        "lower data.block_size or add text"
    )
    with pytest.raises(SpecError, match=r"^data.validation_split must be between 0 and 1, got 1.5$"):
        TokenBlocks(made, block_size=10).split(1.5, seed=0)


def _peak_rss_mb(code: str) -> list[float]:
    env = {**os.environ, "RAYON_NUM_THREADS": "1", "MALLOC_ARENA_MAX": "1"}  # steadier peaks
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return [float(v) for v in out.stdout.split()]


# Peak RSS in MB from VmHWM, not getrusage's ru_maxrss: Linux carries ru_maxrss over execve, so in a
# child of pytest it starts at pytest's own size and hides any peak below that.
RSS = textwrap.dedent(
    """
    def rss():
        status = open("/proc/self/status").read()
        return int(status.split("VmHWM:")[1].split()[0]) / 1024
    """
)


def test_random_blocks_of_a_file_larger_than_the_budget_keep_rss_bounded(tmp_path: Path) -> None:
    path = tmp_path / "big.tokens"
    rng = np.random.default_rng(0)
    with path.open("wb") as f:
        for _ in range(8):  # 8 x 16 MB = 128 MB of uint16 ids, written without holding them all
            rng.integers(0, 50_000, size=8 << 20, dtype=np.uint16).tofile(f)
    count = path.stat().st_size // 2
    code = RSS + textwrap.dedent(
        f"""
        import numpy as np
        from pathlib import Path
        from skylift.data import TokenBlocks, TokenFile
        blocks = TokenBlocks(TokenFile(Path({str(path)!r}), "uint16", {count}, {count}, "t", "c"), 256)
        rng = np.random.default_rng(0)
        blocks.take(rng.integers(0, len(blocks), 64))
        before = rss()
        for _ in range(3000):  # 3000 x 64 blocks x 514 B = 99 MB read, over ~all of the file's pages
            x, y = blocks.take(rng.integers(0, len(blocks), 64))
        after = rss()
        mapped = np.memmap({str(path)!r}, dtype=np.uint16, mode="r")  # the control: the same reads by mmap
        for _ in range(3000):
            for start in rng.integers(0, len(blocks), 64) * 256:
                mapped[start : start + 257].sum()
        print(before, after, rss())
        """
    )
    before, after, with_mmap = _peak_rss_mb(code)
    assert after - before < 16, (before, after)  # MB; the file is 128 MB
    assert with_mmap - after > 64, (after, with_mmap)  # the control shows what mmap would have cost


def test_tokenizing_streams_a_corpus_in_bounded_memory(tmp_path: Path) -> None:
    line = " ".join(LETTERS * 4) + "\n"  # 208 bytes, 104 tokens
    for name, lines in (("small.txt", 12_000), ("big.txt", 40_000)):
        (tmp_path / name).write_text(line * lines, encoding="utf-8")
    code = (
        RSS
        + LETTER_TOKENIZER
        + textwrap.dedent(
            f"""
        from pathlib import Path
        from skylift.data import TextTokenizer, read_corpus, tokenize_corpus
        tokenizer = TextTokenizer.from_json(letter_tokenizer.to_str())
        cache = Path({str(tmp_path)!r})
        small = tokenize_corpus(read_corpus({str(tmp_path / "small.txt")!r}), tokenizer, cache)
        after_small = rss()
        big = tokenize_corpus(read_corpus({str(tmp_path / "big.txt")!r}), tokenizer, cache)
        print(after_small, rss(), big.count)
        """
        )
    )
    after_small, after_big, count = _peak_rss_mb(code)
    assert count == 40_000 * 104 + 1
    # 3.3 times the text (8.3 MB, 4.2M tokens: 33 MB as int64) leaves the peak where it was.
    assert after_big - after_small < 8, (after_small, after_big)

"""Text tables (.csv, .parquet, .jsonl) and .txt corpora: contents, fingerprints and every bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
import pytest

from skylift.data import read_corpus, read_text_table
from skylift.errors import DataError

ROWS = {"text": ["good film", "bad film", "ünïcode 😀"], "label": ["pos", "neg", "pos"], "y": [1.5, -2.0, 3]}


def _write(path: Path, columns: dict[str, list[object]]) -> str:
    if path.suffix == ".jsonl":
        names = list(columns)
        rows = [dict(zip(names, values, strict=True)) for values in zip(*columns.values(), strict=True)]
        path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    elif path.suffix == ".csv":
        pa_csv.write_csv(pa.table(columns), path)
    else:
        pq.write_table(pa.table(columns), path)
    return str(path)


@pytest.mark.parametrize("suffix", [".csv", ".parquet", ".jsonl"])
def test_every_format_reads_texts_labels_and_targets(tmp_path: Path, suffix: str) -> None:
    path = _write(tmp_path / f"t{suffix}", {**ROWS, "z": [0, 1, 2], "other": ["a", "b", "c"]})
    table = read_text_table(path, "text", label_column="label")
    assert table.texts == ROWS["text"]
    assert table.labels == ["pos", "neg", "pos"]
    assert table.targets is None
    table = read_text_table(path, "text", target_columns=["y", "z"])
    assert table.labels is None
    assert table.targets is not None and table.targets.dtype == np.float32
    np.testing.assert_array_equal(table.targets, [[1.5, 0], [-2, 1], [3, 2]])


@pytest.mark.parametrize("suffix", [".csv", ".parquet", ".jsonl"])
def test_integer_labels_become_strings(tmp_path: Path, suffix: str) -> None:
    path = _write(tmp_path / f"t{suffix}", {"text": ["a", "b"], "label": [3, 10]})
    assert read_text_table(path, "text", "label").labels == ["3", "10"]


def test_csv_keeps_quoted_newlines_and_number_like_text(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text('text,label\n"two\nlines, one cell",1\n007,NA\n', encoding="utf-8")
    table = read_text_table(str(path), "text", "label")
    assert table.texts == ["two\nlines, one cell", "007"]
    assert table.labels == ["1", "NA"]


@pytest.mark.parametrize("suffix", [".csv", ".parquet", ".jsonl"])
def test_a_missing_column_lists_the_columns_there_are(tmp_path: Path, suffix: str) -> None:
    path = _write(tmp_path / f"t{suffix}", ROWS)
    with pytest.raises(DataError) as err:
        read_text_table(path, "body")
    if suffix == ".jsonl":
        assert str(err.value) == f"{path}: line 1 has no field 'body'; fields present: text, label, y"
    else:
        assert str(err.value) == f"{path}: text column 'body' not found; columns present: text, label, y"
    with pytest.raises(DataError, match=r"'stars'.*: text, label, y$"):
        read_text_table(path, "text", target_columns=["y", "stars"])


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_an_empty_text_names_its_data_row(tmp_path: Path, suffix: str) -> None:
    path = _write(tmp_path / f"t{suffix}", {"text": ["fine", "also fine", "   "], "label": [1, 2, 3]})
    with pytest.raises(DataError) as err:
        read_text_table(path, "text", "label")
    assert str(err.value) == f"{path}: text column 'text' is empty at data row 3"
    path = _write(tmp_path / f"u{suffix}", {"text": ["fine", None], "label": [1, 2]})
    with pytest.raises(DataError, match=r"text column 'text' is empty at data row 2$"):
        read_text_table(path, "text", "label")


def test_an_empty_jsonl_text_or_label_names_its_line(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    path.write_text('{"text": "ok", "label": 1}\n\n{"text": "", "label": 2}\n', encoding="utf-8")
    with pytest.raises(DataError) as err:
        read_text_table(str(path), "text", "label")
    assert str(err.value) == f"{path}: line 3: text field 'text' is empty"
    path.write_text('{"text": "ok", "label": null}\n', encoding="utf-8")
    with pytest.raises(DataError, match=r": line 1: label field 'label' is empty$"):
        read_text_table(str(path), "text", "label")


def test_an_empty_label_cell_names_its_row(tmp_path: Path) -> None:
    path = _write(tmp_path / "t.parquet", {"text": ["a", "b"], "label": ["x", None]})
    with pytest.raises(DataError) as err:
        read_text_table(path, "text", "label")
    assert str(err.value) == f"{path}: label column 'label' is empty at data row 2"


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_bytes_that_are_not_utf8_name_the_byte_offset(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"t{suffix}"
    if suffix == ".csv":
        path.write_bytes(b"text,label\ngood,1\nbad \xff here,0\n")
        expected = "byte offset 22 (line 3) holds b'\\xff'"
    else:
        path.write_bytes(b'{"text": "good"}\n{"text": "bad \xff"}\n')
        expected = "byte offset 31 (line 2) holds b'\\xff'"
    with pytest.raises(DataError) as err:
        read_text_table(str(path), "text")
    assert str(err.value) == f"{path}: not UTF-8 text: {expected}; save the file as UTF-8"


def test_parquet_binary_text_that_is_not_utf8_names_its_row(tmp_path: Path) -> None:
    path = tmp_path / "t.parquet"
    pq.write_table(pa.table({"text": pa.array([b"fine", b"bad \xfe"], pa.binary())}), path)
    with pytest.raises(DataError) as err:
        read_text_table(str(path), "text")
    assert str(err.value) == (
        f"{path}: text column 'text' is not UTF-8 text at data row 2 (byte 4 of the cell)"
    )


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), 1e300])
def test_a_target_that_is_not_finite_names_row_and_column(tmp_path: Path, suffix: str, bad: float) -> None:
    path = _write(tmp_path / f"t{suffix}", {"text": ["a", "b"], "y": [1.0, 2.0], "z": [0.5, bad]})
    with pytest.raises(DataError) as err:
        read_text_table(path, "text", target_columns=["y", "z"])
    assert str(err.value) == (
        f"{path}: target column 'z' holds {bad!r} at data row 2; targets must be finite float32 numbers"
    )


def test_a_jsonl_target_that_is_not_finite_or_not_a_number(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    path.write_text('{"text": "a", "y": 1}\n{"text": "b", "y": NaN}\n', encoding="utf-8")
    with pytest.raises(DataError) as err:
        read_text_table(str(path), "text", target_columns=["y"])
    assert str(err.value) == (
        f"{path}: line 2: target field 'y' holds nan; targets must be finite float32 numbers"
    )
    path.write_text('{"text": "a", "y": "3.5"}\n', encoding="utf-8")
    with pytest.raises(DataError) as err:
        read_text_table(str(path), "text", target_columns=["y"])
    assert str(err.value) == f"{path}: line 1: target field 'y' holds '3.5', not a number"


def test_a_csv_target_that_is_not_a_number_names_row_and_cell(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text("text,y\na,1.5\nb,2e3\nc,three\n", encoding="utf-8")
    with pytest.raises(DataError) as err:
        read_text_table(str(path), "text", target_columns=["y"])
    assert str(err.value) == f"{path}: target column 'y' holds 'three' at data row 3, not a number"
    path.write_text("text,y\na,1.5\nb,\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"target column 'y' is empty at data row 2$"):
        read_text_table(str(path), "text", target_columns=["y"])


def test_a_malformed_jsonl_line_names_its_number(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    path.write_text('{"text": "a"}\n{"text": "b",}\n', encoding="utf-8")
    with pytest.raises(DataError) as err:
        read_text_table(str(path), "text")
    assert str(err.value) == (
        f"{path}: line 2 is not valid JSON (Expecting property name enclosed in double quotes at column 14)"
    )
    path.write_text('{"text": "a"}\n["b"]\n', encoding="utf-8")
    with pytest.raises(DataError) as err:
        read_text_table(str(path), "text")
    assert str(err.value) == f"{path}: line 2 is a JSON list, expected an object such as {{'text': ...}}"


@pytest.mark.parametrize("suffix", [".csv", ".parquet", ".jsonl"])
def test_an_empty_file_is_refused(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"t{suffix}"
    path.write_bytes(b"")
    with pytest.raises(DataError) as err:
        read_text_table(str(path), "text")
    assert str(err.value) == f"{path}: file is empty"


def test_header_only_and_unknown_kinds_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text("text,label\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"t.csv: holds no data rows$"):
        read_text_table(str(path), "text")
    with pytest.raises(DataError, match=r"t.tsv: unsupported text table; accepted: .csv, .parquet, .jsonl$"):
        read_text_table(str(tmp_path / "t.tsv"), "text")
    with pytest.raises(DataError, match=r"nope.csv: file not found$"):
        read_text_table(str(tmp_path / "nope.csv"), "text")


# --- corpora -------------------------------------------------------------------------------------


def _corpus(root: Path, files: dict[str, bytes]) -> Path:
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return root


def test_a_folder_corpus_is_every_txt_file_sorted_and_recursive(tmp_path: Path) -> None:
    root = _corpus(tmp_path / "c", {"b.txt": b"bee\n", "a/z.txt": b"zed\n", "a.md": b"skip", "c.txt": b""})
    corpus = read_corpus(str(root))
    assert [p.relative_to(root).as_posix() for p in corpus.files] == ["a/z.txt", "b.txt", "c.txt"]
    assert corpus.total_bytes == 8
    assert [(p.text, p.document_end) for p in corpus.pieces()] == [("zed\n", True), ("bee\n", True)]
    assert list(corpus.texts()) == ["zed\n", "bee\n"]


def test_a_glob_and_a_single_file(tmp_path: Path) -> None:
    root = _corpus(tmp_path, {"x1.txt": b"one", "x2.txt": b"two", "y.txt": b"why"})
    assert [p.name for p in read_corpus(str(root / "x*.txt")).files] == ["x1.txt", "x2.txt"]
    single = read_corpus(str(root / "y.txt"))
    assert single.files == (root / "y.txt",) and single.total_bytes == 3


def test_the_fingerprint_follows_content_and_names_not_location(tmp_path: Path) -> None:
    files = {"a.txt": b"alpha\n", "b.txt": b"beta\n"}

    def fingerprint(folder: str, files: dict[str, bytes]) -> str:
        return read_corpus(str(_corpus(tmp_path / folder, files))).fingerprint

    first = fingerprint("one", files)
    assert fingerprint("two", files) == first
    assert fingerprint("three", {"a.txt": b"alpha\n", "c.txt": b"beta\n"}) != first  # renamed
    assert fingerprint("four", {"a.txt": b"alpha\n", "b.txt": b"beta!\n"}) != first  # edited
    # The same bytes cut differently between files are a different corpus.
    assert fingerprint("five", {"a.txt": b"alpha\nb", "b.txt": b"eta\n"}) != first


def test_a_large_file_comes_in_pieces_cut_at_line_ends(tmp_path: Path) -> None:
    lines = [f"line {i} ünï\n" for i in range(500)]
    text = "".join(lines) + "x" * 300 + "é" * 200  # a last line longer than a piece, cut between characters
    root = _corpus(tmp_path, {"big.txt": text.encode("utf-8"), "small.txt": b"tail\n"})
    pieces = list(read_corpus(str(root)).pieces(piece_bytes=256))
    assert "".join(p.text for p in pieces[:-1]) == text
    assert all(len(p.text.encode("utf-8")) <= 256 for p in pieces)
    assert all(p.text.endswith("\n") for p in pieces[:-5] if not p.document_end)
    assert [p.document_end for p in pieces].count(True) == 2 and pieces[-2].document_end
    assert pieces[-1].text == "tail\n"


def test_a_corpus_file_that_is_not_utf8_names_file_and_offset(tmp_path: Path) -> None:
    root = _corpus(tmp_path, {"a.txt": b"fine\n", "b.txt": b"ok\n" * 700_000 + b"caf\xe9\n"})
    with pytest.raises(DataError) as err:
        read_corpus(str(root))
    assert str(err.value) == (
        f"{root / 'b.txt'}: not UTF-8 text: byte offset 2100003 (line 700001) holds b'\\xe9'; "
        "save the file as UTF-8"
    )


def test_corpora_that_match_nothing_or_hold_nothing(tmp_path: Path) -> None:
    with pytest.raises(DataError) as err:
        read_corpus(str(tmp_path / "*.txt"))
    assert str(err.value) == f"{tmp_path / '*.txt'}: no files match this pattern"
    with pytest.raises(DataError, match=r": folder holds no .txt files$"):
        read_corpus(str(tmp_path))
    with pytest.raises(DataError, match=r"missing.txt: file not found$"):
        read_corpus(str(tmp_path / "missing.txt"))
    _corpus(tmp_path, {"e1.txt": b"", "e2.txt": b""})
    with pytest.raises(DataError) as err:
        read_corpus(str(tmp_path))
    assert str(err.value) == f"{tmp_path}: the corpus is empty (2 file(s), 0 bytes of text)"

"""What `evaluate` reads: a data source made into rows the model's task can score, by the model's facts.

The model's recorded metadata (`meta`: task, classes or targets, input shape, tokenizer facts)
decides how the source is read: numeric features, a text column of a table (tokenized with the
model's own tokenizer), numeric targets, or a .txt corpus cut into the model's token blocks.
Shape legend: N rows, S... per-row input shape, K targets, T tokens.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from skylift.errors import DataError
from skylift.tasks import TaskData

if TYPE_CHECKING:
    from skylift.data._rows import Rows
    from skylift.data._tokenizer import TextTokenizer

TABLE_SUFFIXES = (".csv", ".parquet", ".pq", ".jsonl", ".ndjson")
TEXT_SUFFIXES = (".jsonl", ".ndjson", ".txt")  # never numeric features


def text_column_of(meta: dict[str, Any], given: str | None) -> str:
    """The text column to read: the one given, else the model's recorded one, else "text"."""
    return given or str(meta.get("text_column") or "text")


def tokenizer_of(meta: dict[str, Any], tokenizer_json: str | None, what: str) -> TextTokenizer:
    """The model's own tokenizer (a text model always has one)."""
    from skylift.data._tokenizer import TextTokenizer

    if not tokenizer_json:
        raise DataError(f"{what} is a text model but holds no tokenizer; re-register it from its run")
    return TextTokenizer.from_json(tokenizer_json, source=f"{what}: tokenizer")


def reads_text(meta: dict[str, Any]) -> bool:
    return meta.get("input") == "text" or meta.get("task") == "language_modeling"


def reads_media(meta: dict[str, Any]) -> bool:
    """Whether the model reads image or audio files (its recorded preprocessing decodes them)."""
    return meta.get("input") in ("image", "audio")


def check_input_kind(meta: dict[str, Any], source: str, what: str) -> None:
    """DataError when a text model is given numeric data or a numeric model is given text."""
    suffix = Path(source.strip()).suffix.lower()
    if meta.get("task") == "language_modeling" or reads_media(meta):
        return  # read_corpus and list_media name what they accept
    if reads_text(meta):
        if suffix not in TABLE_SUFFIXES:
            raise DataError(
                f"{source}: {what} reads text (a text column of a .csv, .parquet or .jsonl file), "
                f"not {suffix or 'this source'}"
            )
    elif suffix in TEXT_SUFFIXES:
        raise DataError(
            f"{source}: {what} takes numeric features (input_shape {list(meta['input_shape'])}); "
            f"{suffix} text is for text models"
        )


def eval_data(
    meta: dict[str, Any],
    tokenizer_json: str | None,
    source: str,
    *,
    what: str,
    label_column: str,
    text_column: str | None,
    cache: Path,
) -> TaskData:
    """The source as the model's task data: every row in `test` (also `val`, which tasks plot from)."""
    check_input_kind(meta, source, what)
    task = meta.get("task", "classification")
    extras: dict[str, Any] = {}
    if task == "language_modeling":
        rows, extras = _corpus_rows(meta, tokenizer_json, source, what, cache)
    elif reads_media(meta):
        rows = _media_rows(meta, source, label_column, cache)
    elif reads_text(meta):
        rows = _text_rows(meta, tokenizer_json, source, what, label_column, text_column_of(meta, text_column))
    elif task == "regression":
        rows = _target_rows(meta, source, what)
    else:
        rows = _feature_rows(meta, source, label_column)
    if task == "regression":
        # the training loss as recorded (older versions: MSE), on the standardized scale
        extras = {"loss": meta.get("loss", "mse"), "huber_delta": meta.get("huber_delta", 1.0)}
    shape = tuple(int(d) for d in meta["input_shape"])
    n_out = int(meta.get("n_outputs", len(meta.get("classes", ()))))
    terms = shape[0] if task == "language_modeling" else (n_out if task == "regression" else 1)
    return TaskData(rows, rows, rows, shape, n_out, terms, meta, fingerprint="", extras=extras)


def _feature_rows(meta: dict[str, Any], source: str, label_column: str) -> Rows:
    from skylift.data import read_source
    from skylift.data._rows import TensorRows
    from skylift.tasks.classification import as_input

    ds, bundled_test = read_source(source, label_column=label_column, classes=tuple(meta["classes"]))
    # An IDX folder or Keras-style npz holds train + test: evaluation uses the held-out part.
    ds = bundled_test if bundled_test is not None else ds
    return TensorRows(*as_input(ds, tuple(meta["input_shape"])))


def _media_rows(meta: dict[str, Any], source: str, label_column: str, cache: Path) -> Rows:
    """Image or audio files decoded with the model's recorded preprocessing, not any spec's."""
    from skylift.data._image import ImagePrep
    from skylift.data._media import preprocessing_from_json
    from skylift.data._media_files import MediaKind, list_media
    from skylift.data._media_source import read_media
    from skylift.data._rows import TensorRows
    from skylift.tasks.classification import as_input

    prep = preprocessing_from_json(meta.get("preprocessing"))
    if prep is None:
        raise DataError(f"the model reads {meta['input']} files but records no preprocessing; re-register it")
    kind: MediaKind = "image" if isinstance(prep, ImagePrep) else "audio"
    files = list_media(source, kind, path_column=meta.get("path_column"), label_column=label_column)
    ds = read_media(files, prep, tuple(str(c) for c in meta["classes"]), cache)
    return TensorRows(*as_input(ds, tuple(meta["input_shape"])))


def _target_rows(meta: dict[str, Any], source: str, what: str) -> Rows:
    import torch

    from skylift.data._regression import read_targets
    from skylift.data._rows import TensorRows

    table = read_targets(source, list(meta["targets"]))
    wanted = meta.get("features")
    named = not source.strip().lower().endswith(".npz")  # npz columns have no names to compare
    if named and wanted is not None and len(table.features) == len(wanted) and list(table.features) != wanted:
        raise DataError(
            f"{source}: feature columns {list(table.features)} differ from {what}'s {list(wanted)}"
        )
    shape = tuple(int(d) for d in meta["input_shape"])
    if table.x.shape[1] != int(np.prod(shape)):
        raise DataError(
            f"{source}: {table.x.shape[1]} feature columns but {what} takes input_shape {list(shape)}"
        )
    return TensorRows(torch.from_numpy(table.x).reshape(len(table), *shape), torch.from_numpy(table.y))


def _text_rows(
    meta: dict[str, Any], tokenizer_json: str | None, source: str, what: str, label_column: str, column: str
) -> Rows:
    import torch

    from skylift.data._rows import TensorRows
    from skylift.data._text import read_text_table
    from skylift.tasks._text import encode

    tok = tokenizer_of(meta, tokenizer_json, what)
    if meta.get("task") == "regression":
        table = read_text_table(source, column, target_columns=list(meta["targets"]))
        assert table.targets is not None  # read_text_table returns them when asked
        y = torch.from_numpy(np.ascontiguousarray(table.targets))
    else:
        table = read_text_table(source, column, label_column=label_column)
        assert table.labels is not None
        index = {str(c): i for i, c in enumerate(meta["classes"])}
        unknown = sorted(set(table.labels) - set(index))
        if unknown:
            raise DataError(f"{source}: label {unknown[0]!r} is not a class of {what} ({', '.join(index)})")
        y = torch.tensor([index[v] for v in table.labels], dtype=torch.int64)
    ids = encode(tok, table.texts, int(meta["max_length"]))
    return TensorRows(torch.from_numpy(ids), y)


def _corpus_rows(
    meta: dict[str, Any], tokenizer_json: str | None, source: str, what: str, cache: Path
) -> tuple[Rows, dict[str, Any]]:
    from skylift.data._corpus import read_corpus
    from skylift.data._rows import StreamRows
    from skylift.data._tokens import TokenBlocks, tokenize_corpus

    if Path(source.strip()).suffix.lower() in TABLE_SUFFIXES:
        raise DataError(
            f"{source}: {what} is a language model: evaluate it on a .txt corpus (file, folder or glob)"
        )
    tok = tokenizer_of(meta, tokenizer_json, what)
    tokens = tokenize_corpus(read_corpus(source), tok, cache / "tokens")
    block = int(meta["block_size"])
    if tokens.count <= block:
        raise DataError(
            f"{source}: {tokens.count} tokens, fewer than one block of {block} + 1 that {what} reads; "
            "give more text"
        )
    return StreamRows(TokenBlocks(tokens, block)), {"bytes_per_token": tokens.bytes_per_token}

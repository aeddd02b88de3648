"""Text inputs for classifiers and regressors: a table's text column, a tokenizer, padded token ids.

The tokenizer is trained on the training split only (or loaded from a tokenizer.json) and becomes
part of the model: its JSON travels in the checkpoint's and the registry version's metadata.
Shape legend: N rows, T tokens (the max length), K targets.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any

import numpy as np

from skylift.data._rows import TensorRows
from skylift.data._split import stratified_rows
from skylift.data._text import TextTable, read_text_table
from skylift.data._tokenizer import TextTokenizer
from skylift.errors import DataError
from skylift.tasks._base import TaskData

if TYPE_CHECKING:
    from skylift.spec import DataSpec, JobSpec

DEFAULT_MAX_LENGTH = 128  # tokens per text when data.block_size is not given


def tokenizer_for(d: DataSpec, texts: Any) -> TextTokenizer:
    """The spec's tokenizer: loaded from a tokenizer.json, or a byte-level BPE trained on `texts`."""
    if isinstance(d.tokenizer, str):
        return TextTokenizer.from_file(d.tokenizer)
    assert d.tokenizer is not None  # the spec requires one for text
    return TextTokenizer.train_bpe(texts, d.tokenizer.vocab_size)


def encode(tok: TextTokenizer, texts: list[str], max_length: int) -> np.ndarray:
    """Token ids int64 (N, max_length) as the model reads them: right-padded with id 0.

    The declarative text layers mask id 0 as padding; a loaded tokenizer that pads with another id
    (GPT-2's pads with end-of-text) gets that id and 0 swapped, a bijection applied alike in
    training and inference (`pad_id` is recorded with the model).
    """
    ids, _ = tok.encode_batch(texts, max_length)
    if tok.pad_id != 0:
        pad, zero = ids == tok.pad_id, ids == 0
        ids[pad], ids[zero] = 0, tok.pad_id
    return ids


def text_meta(tok: TextTokenizer, max_length: int, text_column: str | None = None) -> dict[str, Any]:
    """What a text model records: its tokenizer (JSON), the vocabulary and padding, the length, and
    the column its texts came from (evaluate and predict read the same column by default)."""
    return {
        "input": "text",
        **({"text_column": text_column} if text_column else {}),
        "tokenizer": tok.to_json(),
        "vocab_size": tok.vocab_size,
        "pad_id": tok.pad_id,
        "max_length": max_length,
    }


def _fingerprint(texts: list[str], other: Any) -> str:
    h = hashlib.sha256(b"skylift-text-v1")
    for t in texts:
        h.update(t.encode("utf-8"))
        h.update(b"\0")
    h.update(np.ascontiguousarray(other).tobytes() if isinstance(other, np.ndarray) else repr(other).encode())
    return h.hexdigest()


def load_text_classification(spec: JobSpec) -> TaskData:
    import torch

    d, seed = spec.data, spec.train.seed
    table = read_text_table(d.train, d.text_column or "", label_column=d.label_column)
    assert table.labels is not None
    classes = tuple(sorted(set(table.labels), key=_label_order))
    if len(classes) < 2:
        raise DataError(f"{d.train}: label column {d.label_column!r} holds a single class {classes[0]!r}")
    index = {c: i for i, c in enumerate(classes)}
    y = np.array([index[v] for v in table.labels], dtype=np.int64)
    texts = table.texts
    test_texts, test_y = None, None
    if d.test is not None:
        test = read_text_table(d.test, d.text_column or "", label_column=d.label_column)
        assert test.labels is not None
        unknown = sorted(set(test.labels) - set(classes))
        if unknown:
            raise DataError(f"{d.test}: label {unknown[0]!r} is not a class of the training data")
        test_texts, test_y = test.texts, np.array([index[v] for v in test.labels], dtype=np.int64)
    elif d.test_split > 0:
        rest, held = stratified_rows(y, len(classes), d.test_split, seed)
        test_texts, test_y = [texts[i] for i in held], y[held]
        texts, y = [texts[i] for i in rest], y[rest]
    rest, held = stratified_rows(y, len(classes), d.validation_split, seed)
    if not len(held):
        raise DataError(f"{d.train}: too few texts for data.validation_split (every class has one)")
    train_texts = [texts[i] for i in rest]
    tok = tokenizer_for(d, train_texts)
    length = d.block_size or DEFAULT_MAX_LENGTH

    def rows(some: list[str], labels: np.ndarray) -> TensorRows:
        ids = encode(tok, some, length)
        return TensorRows(torch.from_numpy(ids), torch.from_numpy(np.ascontiguousarray(labels)))

    return TaskData(
        train=rows(train_texts, y[rest]),
        val=rows([texts[i] for i in held], y[held]),
        test=rows(test_texts, test_y) if test_texts is not None and test_y is not None else None,
        input_shape=(length,),
        n_outputs=len(classes),
        terms_per_row=1,
        meta={"task": "classification", "classes": list(classes), **text_meta(tok, length, d.text_column)},
        fingerprint=_fingerprint(train_texts, y[rest]),
    )


def load_text_regression(spec: JobSpec) -> TaskData:
    import torch

    from skylift.tasks.regression import random_split, standardization

    d, seed = spec.data, spec.train.seed
    names = d.target_columns or ["target"]
    table = read_text_table(d.train, d.text_column or "", target_columns=names)
    test: TextTable | None = None
    if d.test is not None:
        test = read_text_table(d.test, d.text_column or "", target_columns=names)
    elif d.test_split > 0:
        rest, held = random_split(len(table.texts), d.test_split, seed)
        test, table = _take(table, held), _take(table, rest)
    rest, held = random_split(len(table.texts), d.validation_split, seed)
    train, val = _take(table, rest), _take(table, held)
    tok = tokenizer_for(d, train.texts)
    length = d.block_size or DEFAULT_MAX_LENGTH

    def rows(t: TextTable) -> TensorRows:
        ids = encode(tok, t.texts, length)
        assert t.targets is not None
        return TensorRows(torch.from_numpy(ids), torch.from_numpy(np.ascontiguousarray(t.targets)))

    assert train.targets is not None
    y_mean, y_std = standardization(train.targets)
    return TaskData(
        train=rows(train),
        val=rows(val),
        test=rows(test) if test is not None else None,
        input_shape=(length,),
        n_outputs=len(names),
        terms_per_row=len(names),
        meta={
            "task": "regression",
            "targets": list(names),
            "scale": {"y_mean": y_mean, "y_std": y_std},
            **text_meta(tok, length, d.text_column),
            "loss": spec.train.loss or "mse",
            "huber_delta": spec.train.huber_delta,
        },
        fingerprint=_fingerprint(train.texts, train.targets),
        extras={"loss": spec.train.loss or "mse", "huber_delta": spec.train.huber_delta},
    )


def _take(t: TextTable, rows: np.ndarray) -> TextTable:
    assert t.targets is not None
    return TextTable([t.texts[i] for i in rows], None, t.targets[rows])


def _label_order(label: str) -> tuple[int, Any]:
    """Numeric labels in numeric order ("2" before "10"), then the rest alphabetically."""
    try:
        return (0, float(label))
    except ValueError:
        return (1, label)

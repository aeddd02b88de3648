"""The source string of a job spec (`builtin:NAME`, a file, a pair, a folder) -> datasets."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from skylift.data._arrays import labels_sibling, read_npy_pair, read_npz
from skylift.data._build import encode_labels
from skylift.data._builtin import builtin_names, read_builtin
from skylift.data._dataset import Dataset
from skylift.data._idx import is_idx_name, read_idx_folder, read_idx_pair
from skylift.data._io import first_line
from skylift.data._media_files import MEDIA_EXAMPLE, media_folder_kind
from skylift.data._tables import read_table
from skylift.errors import DataError

_BUILTIN = "builtin:"


def accepted_forms() -> str:
    """The source forms, as one line for error messages and help text."""
    return (
        f"builtin:NAME ({', '.join(builtin_names())}), a .npz, .npy (or 'features.npy,labels.npy'), "
        ".csv or .parquet file, MNIST IDX files (*-images-idx3-ubyte[.gz]) or a folder of them"
    )


def read_source(
    source: str, label_column: str = "label", classes: tuple[str, ...] | None = None
) -> tuple[Dataset, Dataset | None]:
    """Read one source string; returns (data, bundled test set or None).

    Bundled test sets come from Keras' x_train/.../y_test .npz layout and from IDX folders holding
    train-* and t10k-* files; their labels are mapped onto the data's classes. When `classes` is
    given (the train set's classes) every label is mapped onto them; a label outside them is a
    DataError. Every error is a one-line DataError naming the source and the problem.
    """
    text = source.strip()
    if not text:
        raise DataError(f"data source is empty; accepted: {accepted_forms()}")
    if text.startswith(_BUILTIN):
        return map_onto(text, read_builtin(text[len(_BUILTIN) :]), classes), None
    if "://" in text:
        raise DataError(f"{text}: remote sources are not read; copy the file locally and give its path")
    try:
        return _read_path(text, label_column, classes)
    except OSError as exc:  # permissions, a file vanishing between checks, ...
        raise DataError(f"{text}: cannot read ({first_line(exc)})") from None


def _read_path(
    text: str, label_column: str, classes: tuple[str, ...] | None
) -> tuple[Dataset, Dataset | None]:
    path = Path(text).expanduser()
    if "," in text and not path.exists():
        return _read_pair(text, classes), None
    if not path.exists():
        raise DataError(f"{path}: file not found")
    if path.is_dir():
        kind = media_folder_kind(path)
        if kind is not None:
            raise DataError(
                f"{path}: holds class folders of {kind} files; they are read with data.{kind} in the spec "
                f"(e.g. data.{kind}: {MEDIA_EXAMPLE[kind]}), see docs/media.md"
            )
        return read_idx_folder(path, classes)
    name = path.name.lower()
    if name.endswith(".npz"):
        return read_npz(path, classes)
    if name.endswith(".npy"):
        return read_npy_pair(path, labels_sibling(path), classes), None
    if name.endswith((".csv", ".csv.gz")):
        return read_table(path, "csv", label_column, classes), None
    if name.endswith((".parquet", ".pq")):
        return read_table(path, "parquet", label_column, classes), None
    if is_idx_name(path.name):
        return read_idx_pair(path, classes), None
    raise DataError(f"{path}: unsupported data source; accepted: {accepted_forms()}")


def _read_pair(text: str, classes: tuple[str, ...] | None) -> Dataset:
    parts = [Path(p.strip()).expanduser() for p in text.split(",")]
    if len(parts) != 2 or not all(p.name.lower().endswith(".npy") for p in parts):
        raise DataError(f"{text}: a comma joins exactly two .npy files, 'features.npy,labels.npy'")
    for part in parts:
        if not part.is_file():
            raise DataError(f"{part}: file not found")
    return read_npy_pair(parts[0], parts[1], classes)


def map_onto(source: str, data: Dataset, classes: tuple[str, ...] | None) -> Dataset:
    """`data` with its labels mapped onto `classes` by name (unchanged when they already match)."""
    if classes is None or classes == data.classes:
        return data
    ids, _ = encode_labels(source, np.asarray(data.classes)[data.y], classes)
    return Dataset(data.x, ids, classes)

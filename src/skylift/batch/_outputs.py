"""The output file: chunk results in input order, written as npz, npy, csv, parquet or jsonl.

Columns (csv, parquet, jsonl) or arrays (npz): `class`, then with --proba one probability per
class (`proba_<name>`; jsonl: a `proba` object keyed by class name; npz: `proba` (N, C)), or
with --top-k K the K most likely classes and their probabilities (`top1_class`, `top1_proba`,
...; jsonl: a `top_k` list; npz: `top_k_class`, `top_k_proba` (N, K)). npz also holds `classes`.
`class` holds the model's label names, or the integer class ids when the model has no names
(its classes are just "0".."C-1"). Regressors and language models write named value columns
instead (`Outputs.columns`: one per target; `log_likelihood`, `tokens`): npz one array per column,
npy the values alone ((N,) or (N, K), same dtype only). Rows with a key (`Outputs.key`: each media
file's `path`) carry it as their first column (npz: one more array; npy cannot hold it). The bytes
depend only on the results: no timestamps.
"""

from __future__ import annotations

import json
import operator
import zipfile
from collections.abc import Callable, Iterator
from typing import IO, TYPE_CHECKING, Any

import numpy as np

from skylift.batch._predictor import Outputs

if TYPE_CHECKING:
    import pyarrow as pa

Parts = Callable[[], Iterator[list[np.ndarray]]]
"""Calling it iterates the chunk results in input order: [class ids, (proba | top-k ids, top-k proba)]."""

_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)  # the earliest zip date: member times never vary between runs


def class_values(classes: list[str]) -> np.ndarray:
    """What the `class` column holds for each class id: the ids themselves when names are just ids."""
    if classes == [str(i) for i in range(len(classes))]:
        return np.arange(len(classes), dtype=np.int64)
    return np.array(classes, dtype=str)


def write_output(
    f: IO[bytes], fmt: str, classes: list[str], outputs: Outputs, rows: int, parts: Parts
) -> None:
    """Write every part, in order, to the open file `f` in format `fmt`."""
    if outputs.columns:
        _columns(f, fmt, outputs, rows, parts)
        return
    values = class_values(classes)
    if fmt == "npy":
        _npy(f, rows, values, outputs, parts)
    elif fmt == "npz":
        _npz(f, rows, values, classes, outputs, parts)
    elif fmt == "jsonl":
        _jsonl(f, values, classes, outputs, parts)
    else:
        _arrow(f, fmt, values, classes, outputs, parts)


def _npy_header(f: IO[bytes], dtype: np.dtype[Any], shape: tuple[int, ...]) -> None:
    header = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": shape}
    np.lib.format.write_array_header_1_0(f, header)


def _npy(f: IO[bytes], rows: int, values: np.ndarray, outputs: Outputs, parts: Parts) -> None:
    if outputs.proba or outputs.top_k is not None:  # check_options refuses these before any work
        raise ValueError("an .npy output holds the class alone")
    _npy_header(f, values.dtype, (rows,))
    for arrays in parts():
        f.write(values[arrays[0]].tobytes())


Member = tuple[str, np.dtype[Any], tuple[int, ...], Callable[[list[np.ndarray]], np.ndarray]]
"""An npz member: name, dtype, shape, and its values from one part's arrays."""


def _npz(
    f: IO[bytes], rows: int, values: np.ndarray, classes: list[str], outputs: Outputs, parts: Parts
) -> None:
    members: list[Member] = [("class", values.dtype, (rows,), lambda a: values[a[0]])]
    if outputs.proba:
        members.append(("proba", np.dtype(np.float32), (rows, len(values)), lambda a: a[1]))
    elif outputs.top_k is not None:
        k = outputs.top_k
        members.append(("top_k_class", values.dtype, (rows, k), lambda a: values[a[1]]))
        members.append(("top_k_proba", np.dtype(np.float32), (rows, k), lambda a: a[2]))
    with zipfile.ZipFile(f, "w", compression=zipfile.ZIP_STORED) as archive:
        _members(archive, [*_key_member(outputs, rows, parts), *members], parts)
        with archive.open(_member("classes"), "w") as m:
            np.lib.format.write_array(m, np.array(classes, dtype=str), allow_pickle=False)


def _members(archive: zipfile.ZipFile, members: list[Member], parts: Parts) -> None:
    for name, dtype, shape, pick in members:
        with archive.open(_member(name), "w", force_zip64=True) as m:
            _npy_header(m, dtype, shape)
            for arrays in parts():
                m.write(np.ascontiguousarray(pick(arrays), dtype=dtype).tobytes())


def _key_member(outputs: Outputs, rows: int, parts: Parts) -> list[Member]:
    """The key column as an npz member (a fixed-width string array: one pass finds the width)."""
    if outputs.key is None:
        return []
    width = max([1, *(int(a[-1].dtype.itemsize // 4) for a in parts())])
    return [(outputs.key, np.dtype(f"<U{width}"), (rows,), lambda a: a[-1])]


def _with_key(lines: list[str], outputs: Outputs, arrays: list[np.ndarray]) -> list[str]:
    """jsonl lines (each a `{...}` object) led by the key, when the rows have one."""
    if outputs.key is None:
        return lines
    name = json.dumps(outputs.key)
    return [
        f"{{{name}:{json.dumps(k)},{line[1:]}" for k, line in zip(arrays[-1].tolist(), lines, strict=True)
    ]


def _keyed_schema(schema: pa.Schema, outputs: Outputs) -> pa.Schema:
    import pyarrow as pa

    return schema if outputs.key is None else schema.insert(0, pa.field(outputs.key, pa.string()))


def _keyed_batch(batch: pa.RecordBatch, schema: pa.Schema, outputs: Outputs, arrays: list[np.ndarray]) -> Any:
    import pyarrow as pa

    if outputs.key is None:
        return batch
    return pa.RecordBatch.from_arrays([pa.array(arrays[-1], pa.string()), *batch.columns], schema=schema)


def _member(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(f"{name}.npy", date_time=_ZIP_EPOCH)
    info.compress_type = zipfile.ZIP_STORED
    info.external_attr = 0o644 << 16
    return info


def arrow_schema(values: np.ndarray, classes: list[str], outputs: Outputs) -> pa.Schema:
    """Columns of a csv or parquet output."""
    import pyarrow as pa

    label = pa.int64() if values.dtype.kind == "i" else pa.string()
    fields = [pa.field("class", label)]
    if outputs.proba:
        fields += [pa.field(f"proba_{name}", pa.float32()) for name in classes]
    elif outputs.top_k is not None:
        for i in range(1, outputs.top_k + 1):
            fields += [pa.field(f"top{i}_class", label), pa.field(f"top{i}_proba", pa.float32())]
    return pa.schema(fields)


def _batch(
    schema: pa.Schema, values: np.ndarray, outputs: Outputs, arrays: list[np.ndarray]
) -> pa.RecordBatch:
    import pyarrow as pa

    columns = [values[arrays[0]]]
    if outputs.proba:
        columns += list(arrays[1].T)
    elif outputs.top_k is not None:
        for i in range(outputs.top_k):
            columns += [values[arrays[1][:, i]], arrays[2][:, i]]
    return pa.RecordBatch.from_arrays(
        [pa.array(c, type=field.type) for c, field in zip(columns, schema, strict=True)], schema=schema
    )


def _arrow(
    f: IO[bytes], fmt: str, values: np.ndarray, classes: list[str], outputs: Outputs, parts: Parts
) -> None:
    schema = arrow_schema(values, classes, outputs)
    keyed = _keyed_schema(schema, outputs)
    writer = _arrow_writer(f, fmt, keyed)
    try:
        for arrays in parts():
            writer.write_batch(_keyed_batch(_batch(schema, values, outputs, arrays), keyed, outputs, arrays))
    finally:
        writer.close()


def _arrow_writer(f: IO[bytes], fmt: str, schema: pa.Schema) -> Any:
    """A csv (header quoted only where a name needs it) or parquet writer of `schema` into `f`."""
    import pyarrow.csv as pa_csv
    import pyarrow.parquet as pq

    if fmt == "csv":
        plain = not any(c in name for name in schema.names for c in ',"\r\n')
        options = pa_csv.WriteOptions(quoting_header="none" if plain else "needed")
        return pa_csv.CSVWriter(f, schema, write_options=options)
    return pq.ParquetWriter(f, schema)


def _floats(x: np.ndarray) -> np.ndarray:
    """float32 values as their shortest round-trip text, e.g. 0.98 (Arrow's formatting, as in csv)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    text = pc.cast(pa.array(x.ravel(), type=pa.float32()), pa.string()).to_numpy(zero_copy_only=False)
    return np.asarray(text, dtype=object).reshape(x.shape)


def _jsonl(f: IO[bytes], values: np.ndarray, classes: list[str], outputs: Outputs, parts: Parts) -> None:
    label = [json.dumps(v) for v in values.tolist()]  # the JSON text of each class id's label
    keys = [json.dumps(name) for name in classes]
    for arrays in parts():
        ids = arrays[0]
        if outputs.proba:
            p = _floats(arrays[1])
            lines = [
                f'{{"class":{label[c]},"proba":{{'
                + ",".join(f"{k}:{v}" for k, v in zip(keys, row, strict=True))
                + "}}"
                for c, row in zip(ids.tolist(), p.tolist(), strict=True)
            ]
        elif outputs.top_k is not None:
            p = _floats(arrays[2])
            lines = [
                f'{{"class":{label[c]},"top_k":['
                + ",".join(f'{{"class":{label[i]},"proba":{v}}}' for i, v in zip(top, row, strict=True))
                + "]}"
                for c, top, row in zip(ids.tolist(), arrays[1].tolist(), p.tolist(), strict=True)
            ]
        else:
            lines = [f'{{"class":{label[c]}}}' for c in ids.tolist()]
        if lines:
            f.write(("\n".join(_with_key(lines, outputs, arrays)) + "\n").encode())


def _columns(f: IO[bytes], fmt: str, outputs: Outputs, rows: int, parts: Parts) -> None:
    """Named value columns, each part holding one (n,) array per column (then its keys, if any)."""
    import pyarrow as pa

    columns = outputs.columns
    n = len(columns)
    names = [name for name, _ in columns]
    dtypes = [np.dtype(d) for _, d in columns]
    if fmt == "npy":  # check_options allows it only when every column has one dtype
        _npy_header(f, dtypes[0], (rows,) if n == 1 else (rows, n))
        for arrays in parts():
            values = np.stack(arrays[:n], axis=1) if n > 1 else arrays[0]
            f.write(np.ascontiguousarray(values).tobytes())
    elif fmt == "npz":
        with zipfile.ZipFile(f, "w", compression=zipfile.ZIP_STORED) as archive:
            members: list[Member] = [
                (name, dtype, (rows,), operator.itemgetter(j))
                for j, (name, dtype) in enumerate(zip(names, dtypes, strict=True))
            ]
            _members(archive, [*_key_member(outputs, rows, parts), *members], parts)
    elif fmt == "jsonl":
        keys = [json.dumps(name) for name in names]
        for arrays in parts():
            cells = [
                _floats(a).tolist() if a.dtype == np.float32 else [json.dumps(v) for v in a.tolist()]
                for a in arrays[:n]
            ]
            lines = [
                "{" + ",".join(f"{k}:{v}" for k, v in zip(keys, row, strict=True)) + "}"
                for row in zip(*cells, strict=True)
            ]
            if lines:
                f.write(("\n".join(_with_key(lines, outputs, arrays)) + "\n").encode())
    else:
        schema = pa.schema([pa.field(n, pa.from_numpy_dtype(d)) for n, d in zip(names, dtypes, strict=True)])
        keyed = _keyed_schema(schema, outputs)
        writer = _arrow_writer(f, fmt, keyed)
        try:
            for arrays in parts():
                batch = pa.RecordBatch.from_arrays([pa.array(a) for a in arrays[:n]], schema=schema)
                writer.write_batch(_keyed_batch(batch, keyed, outputs, arrays))
        finally:
            writer.close()

"""Wire formats: KServe V2 / Open Inference Protocol (JSON and binary tensors) and TF-Serving REST.

Requests decode straight into one float32 array x_RS (R rows, S... the model's per-sample shape),
or into a list of R texts (a `BYTES` tensor, TF-Serving strings); responses carry the runtime's
named outputs: FP32 arrays (R, ...) or BYTES lists of R strings.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

OUTPUTS = ("probabilities", "label")
"""A classifier's outputs."""
INPUT_NAME = "input"
TEXT_NAME = "text"
_WHERE = f"input '{INPUT_NAME}'"  # built once: it is on every request's path
# V2 datatypes a client may send; all are converted to the model's float32.
DTYPES = {
    "FP32": np.float32,
    "FP64": np.float64,
    "FP16": np.float16,
    "INT8": np.int8,
    "INT16": np.int16,
    "INT32": np.int32,
    "INT64": np.int64,
    "UINT8": np.uint8,
    "UINT16": np.uint16,
    "UINT32": np.uint32,
    "UINT64": np.uint64,
    "BOOL": np.bool_,
}


class BadRequest(Exception):
    """The request is malformed; its message is sent back with a 4xx status."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Signature:
    """What a served model takes and gives: per-sample input shape and class names."""

    input_shape: tuple[int, ...]
    classes: tuple[str, ...]

    @property
    def features(self) -> int:
        return math.prod(self.input_shape)  # not np.prod: ~3 us a call, on every request


@dataclass(frozen=True)
class V2Request:
    x: Any
    """float32 rows (R, S...) or a list of R texts."""
    outputs: tuple[tuple[str, bool], ...]
    """(name, binary) of each output to return, in order."""
    request_id: str | None


def _loads(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"body is not valid JSON: {exc}") from None


def _rows(x: np.ndarray, sig: Signature, rows: int, where: str) -> np.ndarray:
    """x as float32 (rows, *input_shape), checked finite; BadRequest naming what is wrong."""
    if rows < 1:
        raise BadRequest(f"{where}: needs at least one row")
    if x.size != rows * sig.features:
        raise BadRequest(
            f"{where}: {x.size} values do not make {rows} row(s) of {sig.features} features "
            f"(model input shape {list(sig.input_shape)})"
        )
    with np.errstate(over="ignore", invalid="ignore"):  # out-of-range values become inf: refused below
        x = np.ascontiguousarray(x, dtype=np.float32).reshape(rows, *sig.input_shape)
    finite = np.isfinite(x.reshape(rows, -1)).all(axis=1)
    if not finite.all():
        raise BadRequest(f"{where}: row {int(np.argmin(finite))} contains NaN or Inf")
    return x


def _shape(value: Any, where: str) -> list[int]:
    if not isinstance(value, list) or not value or not all(type(d) is int and d >= 0 for d in value):
        raise BadRequest(
            f"{where}.shape must be a non-empty list of non-negative integers, got {value!r:.60}"
        )
    return value


def _named(input_name: str, other_name: str | None) -> str:
    return f"'{input_name}'" + (f" or '{other_name}'" if other_name else "")


def _v2_input(
    body: bytes, header_length: int | None, input_name: str, other_name: str | None = None
) -> tuple[dict[str, Any], dict[str, Any], bytes | None]:
    """(JSON header, the one input tensor's spec, its binary data or None) of a V2 infer request.

    `other_name`: a second name the one tensor may have instead (a media model takes its encoded
    files or the decoded `input`); the spec's "name" says which came."""
    if header_length is not None and not 0 < header_length <= len(body):
        raise BadRequest(
            f"Inference-Header-Content-Length {header_length} is outside the body's {len(body)} bytes"
        )
    header = _loads(body[:header_length] if header_length is not None else body)
    if not isinstance(header, dict):
        raise BadRequest("request must be a JSON object with an 'inputs' list")
    inputs = header.get("inputs")
    if not isinstance(inputs, list) or len(inputs) != 1 or not isinstance(inputs[0], dict):
        raise BadRequest(
            f"'inputs' must be a list of exactly one tensor named {_named(input_name, other_name)}"
        )
    spec = inputs[0]
    name = spec.get("name")
    if name != input_name:
        if other_name is None or name != other_name:
            raise BadRequest(
                f"unknown input {name!r:.60}: the model's input is {_named(input_name, other_name)}"
            )
        input_name = other_name
    params = spec.get("parameters") or {}
    binary_size = params.get("binary_data_size") if isinstance(params, dict) else None
    if binary_size is None:
        if header_length is not None and header_length != len(body):
            raise BadRequest(
                f"{len(body) - header_length} bytes after the JSON header but no binary_data_size"
            )
        return header, spec, None
    if header_length is None:
        raise BadRequest(
            f"input '{input_name}' has binary_data_size but no Inference-Header-Content-Length header"
        )
    blob = body[header_length:]
    if type(binary_size) is not int or binary_size != len(blob):
        raise BadRequest(
            f"input '{input_name}'.binary_data_size {binary_size!r:.30} != {len(blob)} bytes after the header"
        )
    return header, spec, blob


def decode_v2(
    body: bytes, header_length: int | None, sig: Signature, outputs: tuple[str, ...] = OUTPUTS
) -> V2Request:
    """A V2 infer request of numeric rows: JSON tensors, or a JSON header plus binary tensor data."""
    header, spec, blob = _v2_input(body, header_length, INPUT_NAME)
    return v2_rows(header, spec, blob, sig, outputs)


def v2_rows(
    header: dict[str, Any], spec: dict[str, Any], blob: bytes | None, sig: Signature, outputs: tuple[str, ...]
) -> V2Request:
    """The numeric tensor `spec` (with its binary data, if any) of a parsed V2 request, as rows."""
    where = _WHERE
    shape = _shape(spec.get("shape"), where)
    datatype = spec.get("datatype")
    dtype = DTYPES.get(datatype) if isinstance(datatype, str) else None  # a list or dict is unhashable
    if dtype is None:
        raise BadRequest(f"{where}.datatype {datatype!r:.30} is not one of {', '.join(DTYPES)}")
    if blob is not None:
        if len(blob) % np.dtype(dtype).itemsize:
            raise BadRequest(f"{where}: {len(blob)} bytes is not a whole number of {spec['datatype']} values")
        x = np.frombuffer(blob, dtype=np.dtype(dtype).newbyteorder("<"))
    else:
        data = spec.get("data")
        if not isinstance(data, list):
            raise BadRequest(f"{where}.data must be a list of numbers, got {type(data).__name__}")
        try:
            with np.errstate(over="ignore", invalid="ignore"):
                x = np.asarray(data, dtype=dtype)
        except (TypeError, ValueError, OverflowError):
            raise BadRequest(f"{where}.data must be numbers of datatype {spec['datatype']}") from None
    if math.prod(shape[1:]) != sig.features:
        raise BadRequest(f"{where}.shape {shape} does not match the model's input {[-1, *sig.input_shape]}")
    x = _rows(x, sig, shape[0], where)
    return V2Request(x, _requested_outputs(header, outputs), _request_id(header))


def decode_v2_text(
    body: bytes, header_length: int | None, outputs: tuple[str, ...], input_name: str = TEXT_NAME
) -> V2Request:
    """A V2 infer request of texts: a BYTES tensor [R] or [R, 1], JSON strings or binary elements
    (each a 4-byte little-endian length and its bytes); every text must be UTF-8."""
    header, spec, blob = _v2_input(body, header_length, input_name)
    where = f"input '{input_name}'"
    shape = _shape(spec.get("shape"), where)
    if spec.get("datatype") != "BYTES":
        raise BadRequest(f"{where}.datatype must be BYTES (UTF-8 texts), got {spec.get('datatype')!r:.30}")
    if math.prod(shape[1:]) != 1:
        raise BadRequest(f"{where}.shape {shape} must be [rows] or [rows, 1]: one text per row")
    if blob is not None:
        texts = _split_bytes_tensor(blob, where)
    else:
        data = spec.get("data")
        texts = _flat_strings(data, where)
    if len(texts) != shape[0]:
        raise BadRequest(f"{where}: {len(texts)} texts for shape {shape}")
    return V2Request(_texts(texts, shape[0], where), _requested_outputs(header, outputs), _request_id(header))


def _flat_strings(data: Any, where: str) -> list[Any]:
    """JSON `data` as a flat list (clients send [R] or [[t], [t], ...] for shape [R, 1])."""
    if not isinstance(data, list):
        raise BadRequest(f"{where}.data must be a list of strings, got {type(data).__name__}")
    if data and all(isinstance(d, list) and len(d) == 1 for d in data):
        return [d[0] for d in data]
    return data


def split_bytes(blob: bytes, where: str) -> list[bytes]:
    """The elements of a binary BYTES tensor (see bytes_tensor), as they are."""
    elements: list[bytes] = []
    at = 0
    while at < len(blob):
        if at + 4 > len(blob):
            raise BadRequest(f"{where}: binary BYTES data ends inside an element's 4-byte length")
        (n,) = struct.unpack_from("<I", blob, at)
        if at + 4 + n > len(blob):
            raise BadRequest(f"{where}: element {len(elements)} of {n} bytes runs past the binary data")
        elements.append(blob[at + 4 : at + 4 + n])
        at += 4 + n
    return elements


def _split_bytes_tensor(blob: bytes, where: str) -> list[Any]:
    """The elements of a binary BYTES tensor (see bytes_tensor), as UTF-8 strings."""
    texts: list[Any] = []
    for i, raw in enumerate(split_bytes(blob, where)):
        try:
            texts.append(raw.decode("utf-8"))
        except UnicodeDecodeError:
            raise BadRequest(f"{where}: element {i} is not UTF-8 text") from None
    return texts


def _texts(texts: list[Any], rows: int, where: str) -> list[str]:
    if rows < 1:
        raise BadRequest(f"{where}: needs at least one text")
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise BadRequest(f"{where}: element {i} is a {type(t).__name__}, not a string")
    return texts


def _request_id(header: dict[str, Any]) -> str | None:
    rid = header.get("id")
    return rid if isinstance(rid, str) and len(rid) <= 256 else None


def _requested_outputs(header: dict[str, Any], names: tuple[str, ...]) -> tuple[tuple[str, bool], ...]:
    params = header.get("parameters")
    default_binary = bool(params.get("binary_data_output")) if isinstance(params, dict) else False
    asked = header.get("outputs")
    if asked is None:
        return tuple((name, default_binary) for name in names)
    if not isinstance(asked, list) or not asked:
        raise BadRequest("'outputs' must be a non-empty list of {name, parameters}")
    chosen = []
    for out in asked:
        name = out.get("name") if isinstance(out, dict) else None
        if name not in names:
            raise BadRequest(f"unknown output {name!r:.40}: the model's outputs are {', '.join(names)}")
        p = out.get("parameters")
        binary = p.get("binary_data", default_binary) if isinstance(p, dict) else default_binary
        chosen.append((name, bool(binary)))
    return tuple(chosen)


def bytes_tensor(labels: list[str]) -> bytes:
    """V2 BYTES binary layout: each element a 4-byte little-endian length, then its bytes."""
    parts = []
    for text in labels:
        raw = text.encode()
        parts += [struct.pack("<I", len(raw)), raw]
    return b"".join(parts)


def pack_bytes(elements: tuple[bytes, ...] | list[bytes]) -> bytes:
    """Raw elements in the V2 BYTES binary layout (see bytes_tensor)."""
    return b"".join(part for raw in elements for part in (struct.pack("<I", len(raw)), raw))


def encode_v2(
    model: str, version: str, req: V2Request, named: dict[str, np.ndarray | list[str]]
) -> tuple[bytes, int | None]:
    """(body, JSON header length for binary outputs or None) of a V2 infer response.

    `named`: each output the runtime gives, an FP32 array (R, ...) or a list of R strings (BYTES).
    """
    outputs: list[dict[str, Any]] = []
    blobs: list[bytes] = []
    for name, binary in req.outputs:
        value = named[name]
        if isinstance(value, np.ndarray):
            out: dict[str, Any] = {"name": name, "datatype": "FP32", "shape": list(value.shape)}
            raw = value.astype("<f4", copy=False).tobytes() if binary else b""
        else:
            out = {"name": name, "datatype": "BYTES", "shape": [len(value)]}
            raw = bytes_tensor(value) if binary else b""
        if binary:
            out["parameters"] = {"binary_data_size": len(raw)}
            blobs.append(raw)
        else:
            out["data"] = value.ravel() if isinstance(value, np.ndarray) else value
        outputs.append(out)
    response: dict[str, Any] = {"model_name": model, "model_version": version, "outputs": outputs}
    if req.request_id is not None:
        response["id"] = req.request_id
    head = orjson.dumps(response, option=orjson.OPT_SERIALIZE_NUMPY)
    if not blobs:
        return head, None
    return head + b"".join(blobs), len(head)


def decode_v1(body: bytes, sig: Signature) -> tuple[np.ndarray, bool]:
    """A TF-Serving `:predict` request -> (x, columnar); `instances` is row format, `inputs` columnar."""
    return v1_rows(_loads(body), sig)


def v1_rows(req: Any, sig: Signature) -> tuple[np.ndarray, bool]:
    """A parsed TF-Serving `:predict` request of numeric rows -> (x, columnar)."""
    if not isinstance(req, dict) or ("instances" in req) == ("inputs" in req):
        raise BadRequest("request must be a JSON object with either 'instances' or 'inputs'")
    columnar = "inputs" in req
    data = req["inputs" if columnar else "instances"]
    if isinstance(data, dict):  # named input(s)
        if set(data) != {INPUT_NAME}:
            raise BadRequest(f"unknown input(s) {sorted(data)!r:.60}: the model's input is '{INPUT_NAME}'")
        data = data[INPUT_NAME]
    elif not columnar and isinstance(data, list) and data and all(isinstance(r, dict) for r in data):
        if any(set(r) != {INPUT_NAME} for r in data):
            raise BadRequest(f"each instance must be a list or {{'{INPUT_NAME}': [...]}}")
        data = [r[INPUT_NAME] for r in data]
    if not isinstance(data, list):
        raise BadRequest("'instances' / 'inputs' must be a list of rows")
    try:
        with np.errstate(over="ignore", invalid="ignore"):
            x = np.asarray(data, dtype=np.float32)
    except (TypeError, ValueError, OverflowError):
        raise BadRequest("every row must be a list of numbers of the same length") from None
    if x.ndim == 0 or (x.ndim == 1 and sig.features != 1):
        x = x.reshape(1, -1)
    return _rows(x, sig, x.shape[0], "instances" if not columnar else "inputs"), columnar


def decode_v1_text(body: bytes) -> tuple[list[str], bool]:
    """A TF-Serving `:predict` request of texts -> (texts, columnar): `instances` as strings or
    {"text": s} objects, or `inputs` as a list of strings or {"text": [...]}."""
    req = _loads(body)
    if not isinstance(req, dict) or ("instances" in req) == ("inputs" in req):
        raise BadRequest("request must be a JSON object with either 'instances' or 'inputs'")
    columnar = "inputs" in req
    data = req["inputs" if columnar else "instances"]
    if isinstance(data, dict):
        if set(data) != {TEXT_NAME}:
            raise BadRequest(f"unknown input(s) {sorted(data)!r:.60}: the model's input is '{TEXT_NAME}'")
        data = data[TEXT_NAME]
    elif isinstance(data, str):
        data = [data]
    if not isinstance(data, list):
        raise BadRequest("'instances' / 'inputs' must be a list of strings")
    if not columnar:  # each instance a string or {"text": string}
        if any(isinstance(r, dict) and set(r) != {TEXT_NAME} for r in data):
            raise BadRequest(f"each instance must be a string or {{'{TEXT_NAME}': string}}")
        data = [r[TEXT_NAME] if isinstance(r, dict) else r for r in data]
    where = "inputs" if columnar else "instances"
    return _texts(data, len(data), where), columnar


def encode_v1(named: dict[str, np.ndarray | list[str]], columnar: bool) -> bytes:
    """TF-Serving's answer: one output as bare rows, several as one object per row (or columns)."""
    if columnar:
        payload: Any = {"outputs": named if len(named) > 1 else next(iter(named.values()))}
    elif len(named) == 1:
        payload = {"predictions": next(iter(named.values()))}
    else:
        names = list(named)
        payload = {
            "predictions": [dict(zip(names, row, strict=True)) for row in zip(*named.values(), strict=True)]
        }
    return orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY)

"""Wire formats: KServe V2 / Open Inference Protocol (JSON and binary tensors) and TF-Serving REST.

Requests decode straight into one float32 array x_RS (R rows, S... the model's per-sample shape);
responses carry two outputs: `probabilities` (FP32 [R, C], softmax of the logits) and `label`
(BYTES [R], the class names).
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

OUTPUTS = ("probabilities", "label")
INPUT_NAME = "input"
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
    x: np.ndarray
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


def decode_v2(body: bytes, header_length: int | None, sig: Signature) -> V2Request:
    """A V2 infer request: JSON tensors, or a JSON header plus binary tensor data."""
    if header_length is not None and not 0 < header_length <= len(body):
        raise BadRequest(
            f"Inference-Header-Content-Length {header_length} is outside the body's {len(body)} bytes"
        )
    header = _loads(body[:header_length] if header_length is not None else body)
    if not isinstance(header, dict):
        raise BadRequest("request must be a JSON object with an 'inputs' list")
    inputs = header.get("inputs")
    if not isinstance(inputs, list) or len(inputs) != 1 or not isinstance(inputs[0], dict):
        raise BadRequest(f"'inputs' must be a list of exactly one tensor named '{INPUT_NAME}'")
    spec = inputs[0]
    if spec.get("name") != INPUT_NAME:
        raise BadRequest(f"unknown input {spec.get('name')!r:.60}: the model's input is '{INPUT_NAME}'")
    where = f"input '{INPUT_NAME}'"
    shape = _shape(spec.get("shape"), where)
    datatype = spec.get("datatype")
    dtype = DTYPES.get(datatype) if isinstance(datatype, str) else None  # a list or dict is unhashable
    if dtype is None:
        raise BadRequest(f"{where}.datatype {datatype!r:.30} is not one of {', '.join(DTYPES)}")
    params = spec.get("parameters") or {}
    binary_size = params.get("binary_data_size") if isinstance(params, dict) else None
    if binary_size is not None:
        if header_length is None:
            raise BadRequest(f"{where} has binary_data_size but no Inference-Header-Content-Length header")
        blob = body[header_length:]
        if type(binary_size) is not int or binary_size != len(blob):
            raise BadRequest(
                f"{where}.binary_data_size {binary_size!r} != {len(blob)} bytes after the header"
            )
        if len(blob) % np.dtype(dtype).itemsize:
            raise BadRequest(f"{where}: {len(blob)} bytes is not a whole number of {spec['datatype']} values")
        x = np.frombuffer(blob, dtype=np.dtype(dtype).newbyteorder("<"))
    else:
        if header_length is not None and header_length != len(body):
            raise BadRequest(
                f"{len(body) - header_length} bytes after the JSON header but no binary_data_size"
            )
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
    return V2Request(x, _requested_outputs(header), _request_id(header))


def _request_id(header: dict[str, Any]) -> str | None:
    rid = header.get("id")
    return rid if isinstance(rid, str) and len(rid) <= 256 else None


def _requested_outputs(header: dict[str, Any]) -> tuple[tuple[str, bool], ...]:
    params = header.get("parameters")
    default_binary = bool(params.get("binary_data_output")) if isinstance(params, dict) else False
    asked = header.get("outputs")
    if asked is None:
        return tuple((name, default_binary) for name in OUTPUTS)
    if not isinstance(asked, list) or not asked:
        raise BadRequest("'outputs' must be a non-empty list of {name, parameters}")
    chosen = []
    for out in asked:
        name = out.get("name") if isinstance(out, dict) else None
        if name not in OUTPUTS:
            raise BadRequest(f"unknown output {name!r:.40}: the model's outputs are {', '.join(OUTPUTS)}")
        p = out.get("parameters")
        binary = p.get("binary_data", default_binary) if isinstance(p, dict) else default_binary
        chosen.append((name, bool(binary)))
    return tuple(chosen)


def _bytes_tensor(labels: list[str]) -> bytes:
    """V2 BYTES binary layout: each element a 4-byte little-endian length, then its bytes."""
    parts = []
    for text in labels:
        raw = text.encode()
        parts += [struct.pack("<I", len(raw)), raw]
    return b"".join(parts)


def encode_v2(
    model: str, version: str, req: V2Request, probs_RC: np.ndarray, labels: list[str]
) -> tuple[bytes, int | None]:
    """(body, JSON header length for binary outputs or None) of a V2 infer response."""
    rows = probs_RC.shape[0]
    outputs: list[dict[str, Any]] = []
    blobs: list[bytes] = []
    for name, binary in req.outputs:
        if name == "probabilities":
            out: dict[str, Any] = {"name": name, "datatype": "FP32", "shape": list(probs_RC.shape)}
            value: Any = probs_RC
            raw = probs_RC.astype("<f4", copy=False).tobytes() if binary else b""
        else:
            out = {"name": name, "datatype": "BYTES", "shape": [rows]}
            value = labels
            raw = _bytes_tensor(labels) if binary else b""
        if binary:
            out["parameters"] = {"binary_data_size": len(raw)}
            blobs.append(raw)
        else:
            out["data"] = value.ravel() if name == "probabilities" else value
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
    req = _loads(body)
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


def encode_v1(probs_RC: np.ndarray, labels: list[str], columnar: bool) -> bytes:
    if columnar:
        payload: Any = {"outputs": {"probabilities": probs_RC, "label": labels}}
    else:
        payload = {
            "predictions": [{"probabilities": p, "label": c} for p, c in zip(probs_RC, labels, strict=True)]
        }
    return orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY)

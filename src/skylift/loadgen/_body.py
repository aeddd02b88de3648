"""Request bytes for the three protocols, built once; each request only re-stamps its first value.

A response cache keyed by the input (skylift's, or a proxy's) would answer identical bodies from
memory, so by default every request carries a distinct first value, the *stamp*: a float32 in
[0.5, 1) written at a fixed offset and width, so stamping costs one small bytes join.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from skylift import __version__
from skylift.loadgen._config import Protocol, Target

if TYPE_CHECKING:
    import numpy as np

STAMPS = 1 << 23  # distinct stamps: 0.5 + k * 2**-24 for k < 2**23 are exact, distinct float32s
_TEXT_STAMP = b"%.9f"  # 9 significant digits round-trip any float32; always 11 bytes in [0.5, 1)
TEXT_STAMP_WIDTH = 11


def stamp_value(n: int) -> float:
    """The first input value of request `n`: exact in float32 and distinct for n < 2**23."""
    return 0.5 + (n % STAMPS) * 2.0**-24


def text_stamp(n: int) -> bytes:
    return _TEXT_STAMP % stamp_value(n)


def binary_stamp(n: int) -> bytes:
    return struct.pack("<f", stamp_value(n))


@dataclass(frozen=True)
class RequestTemplate:
    """One protocol's request: head (request line and headers) and a body with a stamp slot."""

    method: str
    path: str
    headers: dict[str, str] = field(repr=False)
    body: bytes = field(repr=False)
    slot: int
    """Offset of the stamp in `body`."""
    binary: bool
    """Stamp as a little-endian float32 (else as 11 bytes of decimal text)."""
    stamped: bool = True
    """False: the body is a file, sent as it is (no stamp slot)."""

    @property
    def width(self) -> int:
        return 4 if self.binary else TEXT_STAMP_WIDTH

    def head(self) -> bytes:
        lines = [f"{self.method} {self.path} HTTP/1.1", *(f"{k}: {v}" for k, v in self.headers.items())]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    def stamp(self, n: int) -> bytes:
        return binary_stamp(n) if self.binary else text_stamp(n)

    def body_for(self, n: int) -> bytes:
        """The body of request `n` (same length as `body`)."""
        if not self.stamped:
            return self.body
        return self.body[: self.slot] + self.stamp(n) + self.body[self.slot + self.width :]

    def request(self, n: int) -> bytes:
        """The whole HTTP/1.1 request `n` as sent on the wire."""
        return self.head() + self.body_for(n)


def sample_rows(rows: int, row_shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    """Random inputs in [0, 1), float32, rounded to 6 decimals (about 9 bytes a value in JSON,
    like a normalised MNIST pixel written by a real client)."""
    import numpy as np

    x = np.random.default_rng(seed).random((rows, *row_shape))
    return np.round(x, 6).astype(np.float32)


def build_template(
    protocol: Protocol,
    target: Target,
    model: str,
    x: np.ndarray,
    *,
    input_name: str = "input",
    output_name: str = "probabilities",
    api_key: str | None = None,
) -> RequestTemplate:
    """The request for `x` (rows first, float32) in `protocol`, its stamp slot holding request 0's."""
    import numpy as np

    x = np.ascontiguousarray(x, dtype="<f4")
    flat = x.reshape(-1)
    if flat.size == 0:
        raise ValueError("x must hold at least one value")
    shape = list(x.shape)
    headers = {"Host": target.authority, "User-Agent": f"skylift-bench/{__version__}"}
    if protocol == "v2-binary":
        raw = bytearray(flat.tobytes())
        raw[:4] = binary_stamp(0)
        header = _dumps(
            {
                "inputs": [
                    {
                        "name": input_name,
                        "shape": shape,
                        "datatype": "FP32",
                        "parameters": {"binary_data_size": len(raw)},
                    }
                ],
                "outputs": [{"name": output_name, "parameters": {"binary_data": True}}],
            }
        )
        body, slot = header + bytes(raw), len(header)
        headers["Content-Type"] = "application/octet-stream"
        headers["Inference-Header-Content-Length"] = str(len(header))
    else:
        values = _floats(flat[1:])
        data = b"[" + text_stamp(0) + (b"," + values if values else b"") + b"]"
        if protocol == "v1":
            # Nested row lists: re-bracket the flat text row by row (values hold no brackets).
            data = _nest(data, shape)
            doc: dict[str, object] = {"instances": "@DATA@"}
        else:
            doc = {"inputs": [{"name": input_name, "shape": shape, "datatype": "FP32", "data": "@DATA@"}]}
        prefix, suffix = _dumps(doc).split(b'"@DATA@"')
        slot = len(prefix) + data.index(text_stamp(0))
        body = prefix + data + suffix
        headers["Content-Type"] = "application/json"
    headers["Content-Length"] = str(len(body))
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    return RequestTemplate(
        "POST", target.route(protocol, model), headers, body, slot, binary=protocol == "v2-binary"
    )


def _dumps(doc: object) -> bytes:
    return json.dumps(doc, separators=(",", ":")).encode()


def _floats(values: np.ndarray) -> bytes:
    # float64 repr of the rounded values is the short decimal ("0.548814"), as clients send.
    return ",".join(repr(v) for v in values.astype("f8").round(6).tolist()).encode()


def _nest(flat_list: bytes, shape: list[int]) -> bytes:
    """`[v0,...,vn]` -> the same values nested as `shape` (e.g. [[...],[...]] for [2, 3])."""
    items = flat_list[1:-1].split(b",")
    for dim in reversed(shape[1:]):
        items = [b"[" + b",".join(items[i : i + dim]) + b"]" for i in range(0, len(items), dim)]
    return b"[" + b",".join(items) + b"]"


def file_template(
    protocol: Protocol, target: Target, model: str, body: bytes, content_type: str, api_key: str | None = None
) -> RequestTemplate:
    """A plain POST of `body` (a file) to `protocol`'s route; sent as it is, never stamped."""
    headers = {
        "Host": target.authority,
        "User-Agent": f"skylift-bench/{__version__}",
        "Content-Type": content_type,
        "Content-Length": str(len(body)),
    }
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    return RequestTemplate(
        "POST", target.route(protocol, model), headers, body, 0, binary=False, stamped=False
    )

"""Encoded media files on the wire: KServe V2 BYTES tensors, TF-Serving `{"b64": ...}` values and a
plain POST of one file. What comes out is each file's bytes, in order; decoding them into the
model's input is its runtime's job (`runtimes._media`), off the event loop.

Conventions (docs/serving-media.md):
- V2 binary tensor extension: each element is the file itself, after its 4-byte little-endian
  length (tritonclient's BYTES layout: `set_data_from_numpy(np.array([png], dtype=object),
  binary_data=True)`). No base64: the fast path for clients that can send binary.
- V2 JSON: each element a base64 string. A JSON string cannot carry arbitrary bytes, and base64 is
  what KServe's own image examples and MLServer's base64 codec send; standard or URL-safe
  alphabet, padding optional, whitespace (line-wrapped `base64` output) ignored.
- TF-Serving: `{"b64": "..."}` wherever a binary value goes, its own convention for binary data.
"""

from __future__ import annotations

import base64
import binascii
import math
from dataclasses import dataclass
from typing import Any

from skylift.serve import codec
from skylift.serve.codec import BadRequest

MEDIA_TYPES: dict[str, tuple[bytes, ...]] = {
    "image": (b"image/png", b"image/jpeg", b"image/webp"),
    "audio": (b"audio/wav", b"audio/x-wav", b"audio/wave", b"audio/vnd.wave", b"audio/flac", b"audio/x-flac"),
}
"""Content-Types a plain POST of one file may carry, by the model's preprocessing kind."""

# Leading bytes of the formats, to say what a body sent with the wrong Content-Type looks like.
_MAGIC = (
    (b"\x89PNG\r\n\x1a\n", "a PNG image", "image/png"),
    (b"\xff\xd8\xff", "a JPEG image", "image/jpeg"),
    (b"RIFF", "a RIFF (WAV or WebP) file", "audio/wav or image/webp"),
    (b"fLaC", "a FLAC file", "audio/flac"),
)


@dataclass(frozen=True)
class Files:
    """The encoded files of one request, in order, and how errors name them."""

    blobs: tuple[bytes, ...]
    label: str
    """How errors name file {i}: "input 'image' element {i}", "instances[{i}]", "body (image/png)"."""

    def __len__(self) -> int:
        return len(self.blobs)

    def name(self, i: int) -> str:
        return self.label.format(i=i)

    def cache_input(self) -> bytes:
        """What the response cache hashes: every file, each after its length (no two lists alike)."""
        return codec.pack_bytes(self.blobs)


def b64decode(value: Any, where: str) -> bytes:
    """The bytes of a base64 string (standard or URL-safe, padding optional, whitespace ignored)."""
    if not isinstance(value, str):
        raise BadRequest(f"{where} must be a base64 string, got {type(value).__name__}")
    try:
        return _b64(value)
    except (binascii.Error, ValueError):
        pass
    try:
        return _b64("".join(value.split()))  # line-wrapped (`base64 FILE`): rare, so tried second
    except (binascii.Error, ValueError):
        raise BadRequest(f"{where} is not valid base64") from None


def _b64(text: str) -> bytes:
    alt = b"-_" if ("-" in text or "_" in text) else None
    return base64.b64decode(text + "=" * (-len(text) % 4), altchars=alt, validate=True)


def v2_files(spec: dict[str, Any], blob: bytes | None, where: str) -> tuple[bytes, ...]:
    """The files of a V2 BYTES tensor [R] or [R, 1]: binary elements as they are, JSON ones base64."""
    shape = codec._shape(spec.get("shape"), where)
    if spec.get("datatype") != "BYTES":
        raise BadRequest(
            f"{where}.datatype must be BYTES (encoded files), got {spec.get('datatype')!r:.30}; "
            f"decoded tensors go as input '{codec.INPUT_NAME}'"
        )
    if math.prod(shape[1:]) != 1:
        raise BadRequest(f"{where}.shape {shape} must be [files] or [files, 1]: one file per row")
    if blob is not None:
        files = codec.split_bytes(blob, where)
    else:
        data = codec._flat_strings(spec.get("data"), where)
        files = [b64decode(s, f"{where} element {i}") for i, s in enumerate(data)]
    if len(files) != shape[0]:
        raise BadRequest(f"{where}: {len(files)} files for shape {shape}")
    return _nonempty(files, where, where + " element {i}")


def v1_files(req: Any, name: str) -> tuple[Files, bool] | None:
    """(files, columnar) of a parsed TF-Serving request, or None when it carries no file (numbers:
    the decoded input, for the numeric codec). Files go as `{"b64": s}` or `{name: {"b64": s}}`,
    in `instances` (a list) or `inputs` (one, a list, or `{name: [...]}`)."""
    if not isinstance(req, dict) or ("instances" in req) == ("inputs" in req):
        raise BadRequest("request must be a JSON object with either 'instances' or 'inputs'")
    columnar = "inputs" in req
    where = "inputs" if columnar else "instances"
    data = req[where]
    if isinstance(data, dict) and set(data) == {name}:
        data, where = data[name], f"{where}.{name}"
    if isinstance(data, dict) and "b64" in data:  # one file
        data = [data]
    if not isinstance(data, list) or not any(_file_like(d, name) for d in data):
        return None
    blobs = []
    for i, item in enumerate(data):
        if isinstance(item, dict) and set(item) == {name}:
            item = item[name]
        if not (isinstance(item, dict) and set(item) == {"b64"}):
            raise BadRequest(
                f'{where}[{i}] must be {{"b64": "<base64 of the file>"}} like the others '
                f"(or {{{name!r}: {{...}}}}); decoded inputs go as rows of numbers"
            )
        blobs.append(b64decode(item["b64"], f"{where}[{i}].b64"))
    label = where + "[{i}]"
    return Files(_nonempty(blobs, where, label), label), columnar


def _file_like(item: Any, name: str) -> bool:
    return isinstance(item, str) or (isinstance(item, dict) and ("b64" in item or name in item))


def _nonempty(files: list[bytes], where: str, label: str) -> tuple[bytes, ...]:
    if not files:
        raise BadRequest(f"{where}: needs at least one file")
    for i, blob in enumerate(files):
        if not blob:
            raise BadRequest(f"{label.format(i=i)} is empty")
    return tuple(files)


def body_file(body: bytes, media_type: bytes) -> Files:
    """The one file of a plain POST with a media Content-Type."""
    where = f"body ({media_type.decode('latin-1')})"
    if not body:
        raise BadRequest(f"{where} is empty: send the file's bytes (curl --data-binary @FILE)")
    return Files((body,), where)


def looks_like(body: bytes) -> str:
    """A hint for a media file sent as JSON (a missing Content-Type), or "" when it is not one."""
    for magic, what, media in _MAGIC:
        if body.startswith(magic):
            return f"the body looks like {what}: send it with Content-Type: {media}"
    return ""

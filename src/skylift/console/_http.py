"""Request bodies (bounded) and JSON answers (NaN and infinities become null: browsers' JSON has none)."""

from __future__ import annotations

import json
import math
from typing import Any
from urllib.parse import parse_qs

from starlette.requests import Request
from starlette.responses import Response

from skylift.errors import SpecError

FORM_BYTES = 64 * 1024
JSON_BYTES = 2 * 2**20  # a playground request: 64 rows of 784 numbers fit easily


class TooLarge(SpecError):
    """A request body over its limit (413)."""


async def _body(request: Request, limit: int) -> bytes:
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise TooLarge(f"request body over {limit // 1024} KiB")
        chunks.append(chunk)
    return b"".join(chunks)


async def read_form(request: Request) -> dict[str, str]:
    """An HTML form (application/x-www-form-urlencoded): the first value of each field."""
    if not request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
        raise SpecError("expected a form (application/x-www-form-urlencoded)")
    raw = (await _body(request, FORM_BYTES)).decode("utf-8", errors="replace")
    return {k: v[0] for k, v in parse_qs(raw, keep_blank_values=True).items()}


async def read_json(request: Request) -> dict[str, Any]:
    try:
        found = json.loads(await _body(request, JSON_BYTES))
    except ValueError:
        raise SpecError("the request body is not JSON") from None
    if not isinstance(found, dict):
        raise SpecError("the request body must be a JSON object")
    return found


def finite(obj: Any) -> Any:
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [finite(v) for v in obj]
    return obj


def json_response(obj: Any, status: int = 200) -> Response:
    body = json.dumps(finite(obj), allow_nan=False, separators=(",", ":"))
    return Response(body, status, media_type="application/json", headers={"Cache-Control": "no-store"})

"""HTTP to a running `skylift serve` over its public API only (KServe V2, OpenAI routes, /metrics).

Blocking `http.client` calls, made from a worker thread. Only the address a server recorded in
SKYLIFT_HOME/endpoints/ is ever contacted (its loopback URL only from its own host), and only on the
paths built here, so a page cannot make the console fetch anything else. The caller's API key, if
any, is sent as a bearer token.
"""

from __future__ import annotations

import http.client
import json
import math
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

from skylift.endpoints import Endpoint, url_from_here
from skylift.errors import SpecError

TIMEOUT_S = 60.0
MAX_ROWS = 64
MAX_TEXTS = 16
MAX_TEXT_CHARS = 10_000


class Unreachable(Exception):
    """The server did not answer (stopped, or not listening yet)."""


def _connection(endpoint: Endpoint, home: Path, timeout: float) -> http.client.HTTPConnection:
    where = url_from_here(endpoint)
    if where is None:  # its loopback URL would reach whatever listens on that port here
        raise Unreachable(f"{endpoint.url} is bound to loopback on host {endpoint.host}: not reachable here")
    url = urlsplit(where)
    host, port = url.hostname or "127.0.0.1", url.port or (443 if url.scheme == "https" else 80)
    if url.scheme != "https":
        return http.client.HTTPConnection(host, port, timeout=timeout)
    cert = home / "tls" / "tls-cert.pem"  # `serve --tls-self-signed` writes its certificate here
    context = ssl.create_default_context(cafile=str(cert) if cert.is_file() else None)
    return http.client.HTTPSConnection(host, port, timeout=timeout, context=context)


def _headers(key: str | None, body: bool) -> dict[str, str]:
    headers = {"Accept": "application/json"}
    if body:
        headers["Content-Type"] = "application/json"
    if key:
        headers["Authorization"] = f"Bearer {key}"
    return headers


def call(
    endpoint: Endpoint, home: Path, method: str, path: str, body: Any = None, key: str | None = None
) -> tuple[int, bytes]:
    """(status, body) of one request; Unreachable when nothing answers."""
    conn = _connection(endpoint, home, TIMEOUT_S)
    data = json.dumps(body).encode() if body is not None else None
    try:
        conn.request(method, path, body=data, headers=_headers(key, data is not None))
        resp = conn.getresponse()
        return resp.status, resp.read()
    except (OSError, http.client.HTTPException) as exc:
        raise Unreachable(f"{url_from_here(endpoint)} did not answer: {exc}") from None
    finally:
        conn.close()


def stream(endpoint: Endpoint, home: Path, path: str, body: Any, key: str | None) -> Iterator[bytes]:
    """The server-sent events of a streamed completion, chunk by chunk as they arrive.

    An error answer (or no answer) becomes one `data: {"error": ...}` event, so the page shows it.
    """
    try:
        conn = _connection(endpoint, home, TIMEOUT_S)
    except Unreachable as exc:
        yield _event({"error": str(exc), "status": 502})
        return
    try:
        conn.request("POST", path, body=json.dumps(body).encode(), headers=_headers(key, True))
        resp = conn.getresponse()
        if resp.status != 200:
            yield _event({"error": error_message(resp.read()), "status": resp.status})
            return
        while chunk := resp.read1(65536):
            yield chunk
    except (OSError, http.client.HTTPException) as exc:
        yield _event({"error": f"{url_from_here(endpoint)} did not answer: {exc}", "status": 502})
    finally:
        conn.close()


def _event(obj: Any) -> bytes:
    return b"data: " + json.dumps(obj).encode() + b"\n\n"


def error_message(raw: bytes) -> str:
    try:
        found = json.loads(raw)
    except ValueError:
        return raw.decode(errors="replace")[:300]
    err = found.get("error") if isinstance(found, dict) else None
    if isinstance(err, dict):
        return str(err.get("message", err))[:300]
    return str(err if err is not None else found)[:300]


def infer_path(model: str) -> str:
    return f"/v2/models/{quote(model, safe='')}/infer"


def _number(v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        raise SpecError(f"inputs must be finite numbers, got {str(v)[:40]!r}")
    return float(v)


def v2_body(signature: dict[str, Any], request: dict[str, Any]) -> dict[str, Any]:
    """A KServe V2 request for a model's first input, from the page's `rows` (numbers) or `texts`."""
    first = (signature.get("inputs") or [{}])[0]
    name, datatype = str(first.get("name", "input")), str(first.get("datatype", "FP32"))
    if datatype == "BYTES":
        texts = request.get("texts")
        if not isinstance(texts, list) or not texts or len(texts) > MAX_TEXTS:
            raise SpecError(f"send 'texts': a list of 1 to {MAX_TEXTS} strings")
        if not all(isinstance(t, str) and 0 < len(t) <= MAX_TEXT_CHARS for t in texts):
            raise SpecError(f"each text must be 1 to {MAX_TEXT_CHARS} characters")
        return {"inputs": [{"name": name, "shape": [len(texts)], "datatype": "BYTES", "data": texts}]}
    rows = request.get("rows")
    width = math.prod(int(d) for d in first.get("shape", [-1])[1:] if int(d) > 0)
    if not isinstance(rows, list) or not rows or len(rows) > MAX_ROWS:
        raise SpecError(f"send 'rows': a list of 1 to {MAX_ROWS} rows of {width} numbers")
    if not all(isinstance(r, list) and len(r) == width for r in rows):
        raise SpecError(f"each row must hold {width} numbers")
    flat = [_number(v) for r in rows for v in r]
    shape = [len(rows), *(int(d) for d in first.get("shape", [-1, width])[1:])]
    return {"inputs": [{"name": name, "shape": shape, "datatype": "FP32", "data": flat}]}


def chat_body(model: str, request: dict[str, Any]) -> dict[str, Any]:
    """An OpenAI chat request (streamed) from the page's messages."""
    messages = request.get("messages")
    if not isinstance(messages, list) or not 0 < len(messages) <= 64:
        raise SpecError("send 'messages': a list of 1 to 64 {role, content} objects")
    for m in messages:
        if not (isinstance(m, dict) and m.get("role") in ("system", "user", "assistant")):
            raise SpecError("each message needs a role: system, user or assistant")
        if not isinstance(m.get("content"), str) or len(m["content"]) > MAX_TEXT_CHARS:
            raise SpecError(f"each message needs a content string of at most {MAX_TEXT_CHARS} characters")
    max_tokens = request.get("max_tokens", 48)
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or not 1 <= max_tokens <= 1024:
        raise SpecError("max_tokens must be a whole number from 1 to 1024")
    body = {"model": model, "messages": messages, "max_tokens": max_tokens, "stream": True}
    if isinstance(request.get("temperature"), int | float):
        body["temperature"] = float(request["temperature"])
    return body

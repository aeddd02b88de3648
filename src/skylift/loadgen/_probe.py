"""Before the load: learn the model's input from V2 metadata, then send one real request.

Both use the stdlib's blocking `http.client` (two requests, no need for speed) and turn what the
server says into skylift errors: unreachable -> SkyliftError (exit 1), 401/403 -> AuthError
(exit 1), unknown model -> ModelNotFound (exit 2), an input the client cannot build -> SpecError.
"""

from __future__ import annotations

import http.client
import json
import math
import ssl
from dataclasses import dataclass

from skylift.errors import AuthError, ModelNotFound, SkyliftError, SpecError
from skylift.loadgen._body import RequestTemplate
from skylift.loadgen._config import BenchConfig, Target
from skylift.loadgen._http import error_text


@dataclass(frozen=True)
class InputSpec:
    """The request tensor: per-row shape (no batch dimension) and the tensor names."""

    row_shape: tuple[int, ...]
    input_name: str = "input"
    output_name: str = "probabilities"
    source: str = "--features"
    """Where the shape came from: 'metadata' (GET /v2/models/NAME) or '--features'."""

    @property
    def features(self) -> int:
        return math.prod(self.row_shape)


def fetch(
    target: Target,
    method: str,
    path: str,
    *,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    ssl_ctx: ssl.SSLContext | None = None,
    timeout_s: float = 10.0,
) -> tuple[int, bytes]:
    """One request on a fresh connection -> (status, body); OSError becomes a SkyliftError."""
    conn: http.client.HTTPConnection
    if target.tls:
        conn = http.client.HTTPSConnection(target.host, target.port, timeout=timeout_s, context=ssl_ctx)
    else:
        conn = http.client.HTTPConnection(target.host, target.port, timeout=timeout_s)
    url = f"{target.scheme}://{target.authority}{target.prefix}"
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.read()
    except ssl.SSLError as exc:
        hint = " (pass --cacert CA.pem, or --insecure to skip verification)" if "VERIFY" in str(exc) else ""
        raise SkyliftError(f"TLS with {url} failed: {exc.reason or exc}{hint}") from None
    except (OSError, http.client.HTTPException) as exc:
        reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        raise SkyliftError(f"cannot connect to {url}: {reason}") from None
    finally:
        conn.close()


def _auth_headers(config: BenchConfig, target: Target) -> dict[str, str]:
    headers = {"Host": target.authority}
    if config.api_key:
        headers["Authorization"] = f"Bearer {config.api_key}"
    return headers


def discover(config: BenchConfig, ssl_ctx: ssl.SSLContext | None = None) -> InputSpec:
    """The model's input from `GET /v2/models/NAME` (V2 model metadata), else `config.features`."""
    target = config.target
    path = target.metadata_route(config.model)
    status, body = fetch(target, "GET", path, headers=_auth_headers(config, target), ssl_ctx=ssl_ctx)
    if status in (401, 403):
        raise refused(config, status, body)
    problem: str
    if status == 200:
        try:
            return _from_metadata(json.loads(body))
        except (ValueError, KeyError, TypeError, IndexError, AttributeError) as exc:
            problem = f"its model metadata is not V2 metadata ({exc})"
        except SpecError:
            if config.features is None:
                raise
            problem = "its metadata is unusable"
    else:
        problem = f"GET {path} answered HTTP {status}: {error_text(body)}"
    if config.features is not None:
        return InputSpec((config.features,))
    if status == 404:
        raise ModelNotFound(
            f"model {config.model!r} not found at {config.url} ({problem}); "
            "for a server without V2 metadata pass --features N"
        )
    raise SpecError(f"cannot learn the input shape of {config.model!r}: {problem}; pass --features N")


def _from_metadata(doc: dict[str, object]) -> InputSpec:
    inputs = doc["inputs"]
    outputs = doc.get("outputs") or [{}]
    if not isinstance(inputs, list) or not isinstance(outputs, list) or not isinstance(inputs[0], dict):
        raise TypeError("inputs and outputs must be lists of tensor metadata")
    # A media model lists its BYTES input of encoded files first, then `input` (FP32, decoded).
    numeric = [i for i in inputs if isinstance(i, dict) and i.get("datatype", "FP32") == "FP32"]
    if not numeric:
        first = inputs[0]
        raise SpecError(
            f"input {first.get('name')!r} has datatype {first.get('datatype')}; "
            "skylift bench serve sends FP32 tensors only (or a file: --body-file)"
        )
    first = numeric[0]
    shape = [int(d) for d in first["shape"]]
    row_shape = tuple(shape[1:]) if len(shape) > 1 else tuple(shape)
    if not row_shape or any(d < 1 for d in row_shape):
        raise SpecError(f"input shape {shape} has a variable row dimension; pass --features N")
    return InputSpec(
        row_shape,
        input_name=str(first.get("name", "input")),
        output_name=str(outputs[0].get("name", "probabilities")),
        source="metadata",
    )


def probe(config: BenchConfig, template: RequestTemplate, ssl_ctx: ssl.SSLContext | None = None) -> int:
    """Send request 0 once; refuse to start when the model is unknown or the key is refused.

    Any other status is left to the report (a server that rejects every request shows it there,
    with the server's message). Returns the status."""
    status, body = fetch(
        config.target,
        template.method,
        template.path,
        body=template.body,
        headers=template.headers,
        ssl_ctx=ssl_ctx,
        timeout_s=config.timeout_s,
    )
    if status == 404:
        raise ModelNotFound(
            f"model {config.model!r} not found at {config.url}: "
            f"{template.method} {template.path} answered HTTP 404: {error_text(body)}"
        )
    if status in (401, 403):
        raise refused(config, status, body)
    return status


def refused(config: BenchConfig, status: int, body: bytes) -> AuthError:
    """The error for a 401/403, with the fix that fits: a key to pass, check, or give a scope."""
    said = f"HTTP {status}: {error_text(body)}"
    if not config.api_key:
        return AuthError(f"{config.url} needs an API key ({said}); pass --api-key or set SKYLIFT_API_KEY")
    given = "the API key given with --api-key (or SKYLIFT_API_KEY)"
    if status == 403:
        return AuthError(
            f"{config.url} refused {given} ({said}): it lacks the scope; "
            "use a key made with `skylift keys create --scope predict`"
        )
    return AuthError(
        f"{config.url} refused {given} ({said}): check it is a current key of this server "
        "(`skylift keys list` on the server), or make one with `skylift keys create`"
    )

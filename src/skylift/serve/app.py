"""The ASGI application of one replica: routing, body limits, protocol handlers, errors as JSON 4xx/5xx.

A plain ASGI callable rather than a framework: a handful of routes, and per-request framework
overhead would be the largest cost after JSON parsing (see DESIGN.md section 7).
"""

from __future__ import annotations

import asyncio
import math
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np
import orjson

from skylift.errors import AuthError, ModelNotFound, Overloaded, SkyliftError
from skylift.security.apikeys import KeyInfo, KeyStore
from skylift.serve import codec, compression
from skylift.serve.batcher import DeadlineExceeded
from skylift.serve.cache import ResponseCache, cache_key
from skylift.serve.codec import BadRequest
from skylift.serve.config import ServeConfig
from skylift.serve.metrics import Metrics
from skylift.serve.openapi import openapi
from skylift.serve.ratelimit import RateLimiter
from skylift.serve.repository import Repository, ServedModel

Send = Callable[[dict[str, Any]], Awaitable[None]]
Receive = Callable[[], Awaitable[dict[str, Any]]]
JSON = (b"content-type", b"application/json")
_JSON_TYPES = (b"application/json", b"application/x-www-form-urlencoded", b"text/plain")
_VERSION = "0.1.0"


class Reply(Exception):
    """An early answer (an error) from anywhere inside a handler."""

    def __init__(self, status: int, message: str, headers: tuple[tuple[bytes, bytes], ...] = ()) -> None:
        super().__init__(message)
        self.status = status
        self.headers = headers


def _error(message: str) -> bytes:
    return orjson.dumps({"error": message})


class App:
    def __init__(self, config: ServeConfig, repo: Repository, metrics: Metrics) -> None:
        self.config = config
        self.repo = repo
        self.metrics = metrics
        self.served = 0
        self.on_request: Callable[[], None] | None = None
        """Called after each response (the replica uses it to count towards --max-requests)."""
        self.keys = None if config.no_auth else KeyStore(config.keys)
        self.cache: ResponseCache | None = None
        """Response cache, set by the replica (None: off)."""
        self.limiter: RateLimiter | None = None
        """Shared per-key token buckets, set by the replica (None: no limits)."""
        self._keys_read = time.monotonic()

    def _authorize(self, scope: dict[str, Any]) -> KeyInfo | None:
        """The caller's key, checked against the route's scope; Reply(401/403) otherwise."""
        path = scope["path"]
        if self.keys is None or path == "/v2/health/live":
            return None
        now = time.monotonic()
        if now - self._keys_read > 2.0:  # created and revoked keys apply within ~2 s
            self._keys_read = now
            self.keys.refresh()
        need = (
            "admin" if path.startswith("/v2/repository") else "metrics" if path == "/metrics" else "predict"
        )
        presented = None
        for name, value in scope["headers"]:
            if name == b"authorization":
                scheme, _, token = value.partition(b" ")
                presented = token.strip().decode("latin-1") if scheme.lower() == b"bearer" else ""
            elif name == b"x-api-key":
                presented = value.strip().decode("latin-1")
        challenge = ((b"www-authenticate", b"Bearer"),)
        if not presented:
            self._audit(scope, None, "denied: no API key")
            raise Reply(401, "missing API key: send Authorization: Bearer KEY or X-API-Key: KEY", challenge)
        try:
            key = self.keys.verify(presented)
        except AuthError:
            self._audit(scope, None, "denied: invalid key")
            raise Reply(401, "invalid, expired or revoked API key", challenge) from None
        if need not in key.scopes:
            self._audit(scope, key.name, f"denied: needs scope {need}")
            raise Reply(403, f"API key {key.name!r} lacks the {need!r} scope")
        return key

    def _limit(self, key: KeyInfo) -> None:
        rate = key.rate_limit or self.config.rate_limit
        if rate <= 0 or self.limiter is None:
            return
        wait = self.limiter.allow(key.key_id, rate)
        if wait > 0:
            retry = str(max(1, math.ceil(wait))).encode()
            raise Reply(
                429,
                f"rate limit of {rate:g} requests/s for key {key.name!r} exceeded",
                ((b"retry-after", retry),),
            )

    def _compress(
        self, scope: dict[str, Any], body: bytes, extra: tuple[tuple[bytes, bytes], ...]
    ) -> tuple[bytes, tuple[tuple[bytes, bytes], ...]]:
        for name, value in scope["headers"]:
            if name == b"accept-encoding":
                chosen = compression.choose(value)
                if chosen:
                    vary = ((b"content-encoding", chosen), (b"vary", b"Accept-Encoding"))
                    return compression.encode_body(body, chosen), (*extra, *vary)
        return body, extra

    def _audit(self, scope: dict[str, Any], key: str | None, outcome: str) -> None:
        """One JSON line per admin action or auth failure; never the key itself."""
        client = scope.get("client") or ("", 0)
        line = (
            orjson.dumps(
                {
                    "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                    "key": key,
                    "method": scope["method"],
                    "route": scope["path"][:200],
                    "outcome": outcome,
                    "client": f"{client[0]}:{client[1]}",
                }
            )
            + b"\n"
        )
        # O_APPEND: each line lands whole even with several replicas writing.
        fd = os.open(self.config.audit, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        start = time.perf_counter()
        route = "unmatched"
        extra: tuple[tuple[bytes, bytes], ...] = ()
        try:
            key = self._authorize(scope)
            if key is not None and self.limiter is not None:
                self._limit(key)
            route, status, body, headers = await self._dispatch(scope, receive)
            if key is not None and route.startswith("v2/repository/"):
                self._audit(scope, key.name, f"ok: {route.rsplit('/', 1)[1]}")
        except Reply as r:
            status, body, headers, extra = r.status, _error(str(r)), [JSON], r.headers
        except BadRequest as exc:
            status, body, headers = exc.status, _error(str(exc)), [JSON]
        except Overloaded as exc:
            status, body, headers, extra = 503, _error(str(exc)), [JSON], ((b"retry-after", b"1"),)
        except DeadlineExceeded:
            status, body, headers = 504, _error(f"deadline of {self.config.timeout_ms} ms exceeded"), [JSON]
        except ModelNotFound as exc:
            status, body, headers = 404, _error(str(exc)), [JSON]
        except SkyliftError as exc:
            status, body, headers = 500, _error(str(exc)), [JSON]
        if len(body) >= compression.MIN_COMPRESS_BYTES:
            body, extra = self._compress(scope, body, extra)
        length = (b"content-length", str(len(body)).encode())  # not chunked: no framing per response
        await send({"type": "http.response.start", "status": status, "headers": [*headers, *extra, length]})
        await send({"type": "http.response.body", "body": body})
        self.metrics.observe(route, status, time.perf_counter() - start)
        self.served += 1
        if self.on_request:
            self.on_request()

    async def _read(self, scope: dict[str, Any], receive: Receive) -> bytes:
        limit = self.config.max_body_bytes
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit() and int(value) > limit:
                raise Reply(413, f"body of {int(value)} bytes is over the {limit}-byte limit")
        chunks = []
        size = 0
        while True:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                raise Reply(499, "client disconnected")
            chunk = msg.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise Reply(413, f"body is over the {limit}-byte limit")
            chunks.append(chunk)
            if not msg.get("more_body"):
                break
        body = b"".join(chunks)
        for name, value in scope["headers"]:
            if name == b"content-encoding":
                return compression.decode_body(body, value, limit)
        return body

    def _model(self, name: str, version: str | None) -> ServedModel:
        model = self.repo.models.get(name)
        if model is None:
            raise Reply(
                404, f"unknown model {name!r:.80}; serving: {', '.join(sorted(self.repo.models)) or 'none'}"
            )
        if version is not None and version != str(model.version):
            raise Reply(
                404, f"version {version!r:.20} of {name} is not loaded (serving version {model.version})"
            )
        return model

    async def _dispatch(
        self, scope: dict[str, Any], receive: Receive
    ) -> tuple[str, int, bytes, list[tuple[bytes, bytes]]]:
        method, path = scope["method"], scope["path"]
        parts = path.strip("/").split("/")
        if parts[0] == "v2":
            return await self._v2(method, parts[1:], scope, receive)
        if parts[0] == "v1" and len(parts) >= 3 and parts[1] == "models":
            return await self._v1(method, parts[2:], scope, receive)
        if path == "/metrics":
            _expect(method, "GET")
            body = self.metrics.render().encode()
            return "metrics", 200, body, [(b"content-type", b"text/plain; version=0.0.4")]
        if path == "/openapi.json":
            _expect(method, "GET")
            return "openapi", 200, orjson.dumps(openapi()), [JSON]
        raise Reply(404, f"no route {path[:100]!r}")

    async def _v2(
        self, method: str, parts: list[str], scope: dict[str, Any], receive: Receive
    ) -> tuple[str, int, bytes, list[tuple[bytes, bytes]]]:
        if parts == ["health", "live"]:
            return "v2/health/live", 200, orjson.dumps({"live": True}), [JSON]
        if parts == ["health", "ready"]:
            ready = self.repo.ready and bool(self.repo.models)
            return "v2/health/ready", 200 if ready else 503, orjson.dumps({"ready": ready}), [JSON]
        if parts == [""] or not parts:
            body = {
                "name": "skylift",
                "version": _VERSION,
                "extensions": ["binary_tensor_data", "model_repository"],
            }
            return "v2", 200, orjson.dumps(body), [JSON]
        if parts[0] == "repository":
            return await self._repository(method, parts[1:], receive, scope)
        if parts[0] != "models" or len(parts) < 2:
            raise Reply(404, "no such route under /v2")
        name, rest = parts[1], parts[2:]
        version = None
        if rest[:1] == ["versions"]:
            if len(rest) < 2:
                raise Reply(404, "missing version after /versions")
            version, rest = rest[1], rest[2:]
        model = self._model(name, version)
        if not rest:
            _expect(method, "GET")
            return "v2/models/metadata", 200, orjson.dumps(_metadata(model)), [JSON]
        if rest == ["ready"]:
            _expect(method, "GET")
            return "v2/models/ready", 200, orjson.dumps({"name": name, "ready": True}), [JSON]
        if rest == ["infer"]:
            _expect(method, "POST")
            return "v2/models/infer", *await self._infer_v2(model, scope, receive)
        raise Reply(404, "no such route under /v2/models")

    async def _infer_v2(
        self, model: ServedModel, scope: dict[str, Any], receive: Receive
    ) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
        header_length = None
        for name, value in scope["headers"]:
            if name == b"inference-header-content-length":
                if not value.isdigit():
                    raise BadRequest(f"Inference-Header-Content-Length must be a number, got {value[:20]!r}")
                header_length = int(value)
        batcher = model.batcher
        batcher.arriving += 1
        try:
            _content_type(scope, binary=header_length is not None)
            req = codec.decode_v2(await self._read(scope, receive), header_length, model.signature)
        finally:
            batcher.arriving -= 1
        probs, cached = await self._predict(model, req.x)
        labels = _labels(model, probs)
        body, head_len = codec.encode_v2(model.name, str(model.version), req, probs, labels)
        if head_len is None:
            return 200, body, [JSON, *cached]
        binary = (b"content-type", b"application/octet-stream")
        return 200, body, [binary, (b"inference-header-content-length", str(head_len).encode()), *cached]

    async def _predict(self, model: ServedModel, x: Any) -> tuple[Any, list[tuple[bytes, bytes]]]:
        """(probabilities, extra headers): from the response cache, else from the model's batcher."""
        key = None
        n_classes = len(model.signature.classes)
        if self.cache is not None:
            # The model's output is cached, not the encoded body: that echoes the request id and
            # the output options, which are applied again to the cached probabilities.
            key = cache_key(model.name, model.version, x, b"probabilities")
            hit = await self.cache.get(key)
            if hit is not None and len(hit) == len(x) * n_classes * 4:
                return np.frombuffer(hit, dtype="<f4").reshape(len(x), n_classes), [(b"x-cache", b"hit")]
        deadline = time.monotonic() + self.config.timeout_ms / 1000
        try:
            async with asyncio.timeout(self.config.timeout_ms / 1000):  # no extra task, unlike wait_for
                probs = await model.batcher.submit(x, deadline)
        except TimeoutError:
            raise DeadlineExceeded from None
        except RuntimeError as exc:
            raise Reply(500, str(exc)) from None
        if self.cache is None or key is None:
            return probs, []
        await self.cache.put(key, probs.astype("<f4", copy=False).tobytes())
        return probs, [(b"x-cache", b"miss")]

    async def _v1(
        self, method: str, parts: list[str], scope: dict[str, Any], receive: Receive
    ) -> tuple[str, int, bytes, list[tuple[bytes, bytes]]]:
        verb = None
        if ":" in parts[-1]:
            parts[-1], verb = parts[-1].split(":", 1)
        name, version = parts[0], None
        if len(parts) == 3 and parts[1] == "versions":
            version = parts[2]
        elif len(parts) != 1:
            raise Reply(404, "no such route under /v1/models")
        model = self._model(name, version)
        if verb is None:
            _expect(method, "GET")
            status = {
                "model_version_status": [
                    {
                        "version": str(model.version),
                        "state": "AVAILABLE",
                        "status": {"error_code": "OK", "error_message": ""},
                    }
                ]
            }
            return "v1/models/status", 200, orjson.dumps(status), [JSON]
        if verb != "predict":
            raise Reply(404, f"unsupported verb :{verb[:20]} (only :predict)")
        _expect(method, "POST")
        _content_type(scope, binary=False)
        model.batcher.arriving += 1
        try:
            x, columnar = codec.decode_v1(await self._read(scope, receive), model.signature)
        finally:
            model.batcher.arriving -= 1
        probs, cached = await self._predict(model, x)
        return (
            "v1/models/predict",
            200,
            codec.encode_v1(probs, _labels(model, probs), columnar),
            [JSON, *cached],
        )

    async def _repository(
        self, method: str, parts: list[str], receive: Receive, scope: dict[str, Any]
    ) -> tuple[str, int, bytes, list[tuple[bytes, bytes]]]:
        _expect(method, "POST")
        if parts == ["index"]:
            index = [
                {"name": m.name, "version": str(m.version), "state": "READY", "reference": m.requested}
                for m in self.repo.models.values()
            ]
            return "v2/repository/index", 200, orjson.dumps(index), [JSON]
        if len(parts) == 3 and parts[0] == "models" and parts[2] in ("load", "unload"):
            body = await self._read(scope, receive)
            name = parts[1]
            if parts[2] == "unload":
                await self.repo.admin_unload(name)
                return "v2/repository/unload", 200, orjson.dumps({"unloaded": name}), [JSON]
            ref = _load_reference(body, name, self.repo)
            model = await self.repo.admin_load(ref)
            answer = {"loaded": f"{model.name}:{model.version}", "reference": ref}
            return "v2/repository/load", 200, orjson.dumps(answer), [JSON]
        raise Reply(404, "no such route under /v2/repository")


def _load_reference(body: bytes, name: str, repo: Repository) -> str:
    """The reference to (re)load: body {"parameters": {"reference": "name@alias"}}, else what is served."""
    ref = None
    if body.strip():
        req = codec._loads(body)
        params = req.get("parameters") if isinstance(req, dict) else None
        ref = params.get("reference") if isinstance(params, dict) else None
        if ref is not None and not isinstance(ref, str):
            raise BadRequest("parameters.reference must be a model reference string")
    if ref is None:
        current = repo.models.get(name)
        ref = current.requested if current else name
    if ref.split(":")[0].split("@")[0] != name:
        raise BadRequest(f"reference {ref!r:.80} is not a version of model {name!r}")
    return ref


def _expect(method: str, allowed: str) -> None:
    if method != allowed:
        raise Reply(405, f"method {method} not allowed here (use {allowed})", ((b"allow", allowed.encode()),))


def _content_type(scope: dict[str, Any], binary: bool) -> None:
    for name, value in scope["headers"]:
        if name == b"content-type":
            kind = value.split(b";")[0].strip().lower()
            # x-www-form-urlencoded: what `curl -d` sends for a JSON body; the body is still parsed as JSON.
            ok = (*_JSON_TYPES, b"application/octet-stream") if binary else _JSON_TYPES
            if kind not in ok:
                raise BadRequest(f"Content-Type {kind.decode('latin-1')[:60]!r} is not supported here", 415)


def _labels(model: ServedModel, probs: Any) -> list[str]:
    classes = model.signature.classes
    return [classes[i] for i in probs.argmax(axis=1).tolist()]


def _metadata(model: ServedModel) -> dict[str, Any]:
    sig = model.signature
    return {
        "name": model.name,
        "versions": [str(model.version)],
        "platform": "pytorch",
        "inputs": [{"name": codec.INPUT_NAME, "datatype": "FP32", "shape": [-1, *sig.input_shape]}],
        "outputs": [
            {"name": "probabilities", "datatype": "FP32", "shape": [-1, len(sig.classes)]},
            {"name": "label", "datatype": "BYTES", "shape": [-1]},
        ],
        "parameters": {"classes": list(sig.classes), "reference": model.requested},
    }

"""The ASGI application of one replica: routing, body limits, protocol handlers, errors as JSON 4xx/5xx.

A plain ASGI callable rather than a framework: a handful of routes, and per-request framework
overhead would be the largest cost after JSON parsing (see DESIGN.md section 7).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import math
import re
import sys
import time
import traceback
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import numpy as np
import orjson

from skylift.errors import ModelNotFound, Overloaded, SkyliftError, SpecError
from skylift.security.apikeys import KeyInfo
from skylift.serve import codec, compression, routes
from skylift.serve.audit import AuditLog
from skylift.serve.auth import Auth, Denied
from skylift.serve.batcher import DeadlineExceeded
from skylift.serve.cache import ResponseCache, cache_key
from skylift.serve.codec import BadRequest
from skylift.serve.config import ServeConfig
from skylift.serve.metrics import Metrics
from skylift.serve.openai import OpenAIRoutes, Stream, error_body, model_object, until_disconnect
from skylift.serve.openapi import openapi
from skylift.serve.ratelimit import RateLimiter
from skylift.serve.repository import Repository, ServedModel
from skylift.serve.rollout_routes import AUDITED, RolloutRoutes
from skylift.serve.routes import Route

Send = Callable[[dict[str, Any]], Awaitable[None]]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Answer = tuple[int, "bytes | Stream", list[tuple[bytes, bytes]]]
Handler = Callable[[Route, dict[str, Any], Receive], Awaitable[Answer]]
_KEY_LIKE = re.compile(r"sk_[0-9a-f]{8}_[A-Za-z0-9_-]*")
JSON = (b"content-type", b"application/json")
_JSON_TYPES = (b"application/json", b"application/x-www-form-urlencoded", b"text/plain")
_VERSION = "0.1.0"
SERVED = "skylift.served"
"""Scope key: the ServedModel a request ran on (set once it is looked up)."""
ROUTED = "skylift.routed"
"""Scope key: the Traffic that picked it, when a rollout routed the request."""


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
        self.audit = AuditLog(config.audit)
        self.auth = None if config.no_auth else Auth(config.keys, self.audit)
        self.cache: ResponseCache | None = None
        """Response cache, set by the replica (None: off)."""
        self.limiter: RateLimiter | None = None
        """Shared per-key token buckets, set by the replica (None: no limits)."""
        self.root_path = config.root_path
        """--root-path: a request under it is routed without it (one without it as it is)."""
        metrics.extra["internal_errors_total"] = 0
        self._handlers: dict[str, Handler] = {
            "v2/health/live": self._live,
            "v2/health/ready": self._ready,
            "v2": self._server_metadata,
            "v2/models/metadata": self._model_metadata,
            "v2/models/ready": self._model_ready,
            "v2/models/infer": self._infer_v2,
            "v2/repository/index": self._index,
            "v2/repository/load": self._load,
            "v2/repository/unload": self._unload,
            **RolloutRoutes(self).handlers(),
            "v1/models/status": self._status_v1,
            "v1/models/predict": self._predict_v1,
            "metrics": self._metrics,
            "openapi": self._openapi,
            **OpenAIRoutes(self).handlers(),
        }

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

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        start = time.perf_counter()
        # Matched first, before anything can raise: errors are counted under the route they hit.
        route = routes.match(self._unprefixed(scope) if self.root_path else scope["path"])
        extra: tuple[tuple[bytes, bytes], ...] = ()
        body: bytes | Stream
        message: str | None = None  # an error's, set by the except clauses below
        key: KeyInfo | None = None
        authorized = False
        try:
            key = self.auth.check(scope, route) if self.auth is not None else None
            authorized = True
            if key is not None and self.limiter is not None:
                self._limit(key)
            if route.method is not None and scope["method"] != route.method:
                allow = ((b"allow", route.method.encode()),)
                raise Reply(405, f"method {scope['method']} not allowed here (use {route.method})", allow)
            handler = self._handlers.get(route.name, self._unmatched)
            status, body, headers = await handler(route, scope, receive)
        except (Reply, Denied) as r:
            status, message, extra = r.status, str(r), r.headers
        except BadRequest as exc:
            status, message = exc.status, str(exc)
        except Overloaded as exc:
            retry = str(getattr(exc, "retry_after_s", 1)).encode()  # the engine's estimate, if any
            status, message, extra = 503, str(exc), ((b"retry-after", retry),)
        except DeadlineExceeded:
            status, message = 504, f"deadline of {self.config.timeout_ms} ms exceeded"
        except ModelNotFound as exc:
            status, message = 404, str(exc)
        except SpecError as exc:  # e.g. a malformed model reference in an admin load, bad sampling
            status, message = 400, str(exc)
        except SkyliftError as exc:
            _log(f"{route.name}: {exc}")
            status, message = 500, str(exc)
        except Exception as exc:  # a bug: answer JSON, log it, count it; the worker carries on
            self.metrics.extra["internal_errors_total"] += 1
            _log(f"internal error on {scope['method']} {route.name}: {exc}", exc)
            status, message = 500, "internal server error (logged by the server)"
        served: ServedModel | None = scope.get(SERVED)
        if served is not None:  # the answer names the version it came from, errors included
            if message is not None:
                extra = (*extra, served.header)
            routed = scope.get(ROUTED)
            if routed is not None:
                routed.record(served.version, status, time.perf_counter() - start)
        if message is not None:
            openai = route.name.startswith("openai/")
            body, headers = error_body(status, message) if openai else _error(message), [JSON]
        if isinstance(body, Stream):
            await _stream(receive, send, status, [*headers, *extra], body)
            self._done(route, status, start)
            return
        if route.scope == "admin" and authorized:  # every admin action, whatever its outcome
            self._audit_admin(scope, route, key, status, body)
        if len(body) >= compression.MIN_COMPRESS_BYTES:
            body, extra = self._compress(scope, body, extra)
        length = (b"content-length", str(len(body)).encode())  # not chunked: no framing per response
        await send({"type": "http.response.start", "status": status, "headers": [*headers, *extra, length]})
        await send({"type": "http.response.body", "body": body})
        self._done(route, status, start)

    def _unprefixed(self, scope: dict[str, Any]) -> str:
        """The path to route; sets the ASGI root_path of a request under --root-path.

        Per ASGI (and uvicorn, Starlette) `path` keeps the prefix and `root_path` is the part of it
        the app is mounted at, so logs and the audit show the path as the client sent it. Not
        uvicorn's own root_path: that prepends the prefix to every path, which is right only
        behind a proxy that strips it, and this one must also serve paths with it and without.
        """
        root, rest = routes.split_root(scope["path"], self.root_path)
        if root:
            scope["root_path"] = root
        return rest

    def _done(self, route: Route, status: int, start: float) -> None:
        self.metrics.observe(route.name, status, time.perf_counter() - start)
        self.served += 1
        if self.on_request:
            self.on_request()

    def _audit_admin(
        self, scope: dict[str, Any], route: Route, key: KeyInfo | None, status: int, body: bytes
    ) -> None:
        action = route.name.rsplit("/", 1)[-1]
        done = scope.get(AUDITED, action)
        outcome = f"ok: {done}" if status < 400 else f"failed: {action}: {orjson.loads(body)['error']}"
        self.audit.write(scope, key.name if key else None, outcome, status)

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

    def _model(self, route: Route) -> ServedModel:
        model = self.repo.models.get(route.model or "")
        if model is None or route.version is not None:  # the common case returns at once
            return self._lookup(route.model or "", route.version)
        return model

    def _lookup(self, name: str, version: str | None) -> ServedModel:
        model = self.repo.models.get(name)
        if model is None:
            raise Reply(
                404, f"unknown model {name!r:.80}; serving: {', '.join(sorted(self.repo.models)) or 'none'}"
            )
        if version is not None and version != str(model.version):
            versions = self.repo.versions.get(name, {})
            for other in versions.values():  # a version a rollout keeps loaded
                if version == str(other.version):
                    return other
            loaded = ", ".join(str(v) for v in sorted(versions)) or str(model.version)
            raise Reply(404, f"version {version!r:.20} of {name} is not loaded (loaded: {loaded})")
        return model

    async def _unmatched(self, route: Route, scope: dict[str, Any], receive: Receive) -> Answer:
        raise Reply(404, route.error)

    async def _live(self, route: Route, scope: dict[str, Any], receive: Receive) -> Answer:
        return 200, b'{"live":true}', [JSON]

    async def _ready(self, route: Route, scope: dict[str, Any], receive: Receive) -> Answer:
        ready = self.repo.ready and bool(self.repo.models)
        return 200 if ready else 503, orjson.dumps({"ready": ready}), [JSON]

    async def _server_metadata(self, route: Route, scope: dict[str, Any], receive: Receive) -> Answer:
        body = {
            "name": "skylift",
            "version": _VERSION,
            "extensions": ["binary_tensor_data", "model_repository"],
        }
        return 200, orjson.dumps(body), [JSON]

    async def _model_metadata(self, route: Route, scope: dict[str, Any], receive: Receive) -> Answer:
        model = self._model(route)
        versions = sorted(self.repo.versions.get(model.name, {model.version: model}))
        return (
            200,
            orjson.dumps(_metadata(model, versions if route.version is None else [model.version])),
            [JSON],
        )

    async def _model_ready(self, route: Route, scope: dict[str, Any], receive: Receive) -> Answer:
        model = self._model(route)
        return 200, orjson.dumps({"name": model.name, "ready": True}), [JSON]

    async def _metrics(self, route: Route, scope: dict[str, Any], receive: Receive) -> Answer:
        return 200, self.metrics.render().encode(), [(b"content-type", b"text/plain; version=0.0.4")]

    async def _openapi(self, route: Route, scope: dict[str, Any], receive: Receive) -> Answer:
        return 200, orjson.dumps(openapi(self.auth is not None, self.root_path)), [JSON]

    @contextlib.contextmanager
    def _holding(self, route: Route, scope: dict[str, Any]) -> Iterator[ServedModel]:
        """The model version a request runs on, held until it has its answer.

        A request that names no version of a model with a rollout runs on the version its split
        picks. A hot swap retires a version only once no request holds it, so a request that looked
        it up before the swap finishes on it, whatever it awaits meanwhile (its body, the Redis cache).
        """
        model = self._model(route)
        traffic = model.traffic
        if traffic is not None and route.version is None:
            model = traffic.pick(scope["headers"])
            scope[ROUTED] = traffic
        scope[SERVED] = model
        model.in_flight += 1
        try:
            yield model
        finally:
            model.in_flight -= 1

    @contextlib.contextmanager
    def _hold(self, model: ServedModel) -> Iterator[ServedModel]:
        """As _holding, for a model named in the body (the OpenAI routes)."""
        model.in_flight += 1
        try:
            yield model
        finally:
            model.in_flight -= 1

    async def _infer_v2(self, route: Route, scope: dict[str, Any], receive: Receive) -> Answer:
        with self._holding(route, scope) as model:
            header_length = None
            for name, value in scope["headers"]:
                if name == b"inference-header-content-length":
                    if not value.isdigit():
                        raise BadRequest(
                            f"Inference-Header-Content-Length must be a number, got {value[:20]!r}"
                        )
                    header_length = int(value)
            runtime = model.runtime
            inputs = runtime.inputs
            inputs.expect(1)
            try:
                media = _content_type(scope, header_length is not None, inputs.media_types)
                body = await self._read(scope, receive)
                if media is None:
                    req = inputs.decode_v2(body, header_length, runtime.outputs)
                else:  # a plain POST of one file: every output, as JSON
                    req = codec.V2Request(inputs.decode_file(body, media), _all(runtime.outputs), None)
            finally:
                inputs.expect(-1)
            out, cached = await self._predict(model, req.x)
        body, head_len = runtime.encode_v2(req, out)
        if head_len is None:
            return 200, body, [JSON, model.header, *cached]
        binary = (b"content-type", b"application/octet-stream")
        length = (b"inference-header-content-length", str(head_len).encode())
        return 200, body, [binary, length, model.header, *cached]

    async def _predict(self, model: ServedModel, x: Any) -> tuple[Any, list[tuple[bytes, bytes]]]:
        """(outputs (R, O), extra headers): from the response cache, else from the model's runtime."""
        limit = self.config.max_queue_rows
        runtime = model.runtime
        if len(x) > limit:  # would wait for room that can never be made: not a 503 to retry
            raise BadRequest(
                f"request of {len(x)} rows is over the server's limit of {limit} queued rows "
                "(--max-queue-rows); send it in smaller requests",
                413,
            )
        key = None
        width = runtime.width
        if self.cache is not None:
            # The model's output is cached, not the encoded body: that echoes the request id and
            # the output options, which are applied again to the cached outputs.
            key = cache_key(model.name, model.version, runtime.inputs.cache_input(x), b"outputs")
            hit = await self.cache.get(key)
            if hit is not None and len(hit) == len(x) * width * 4:
                out = np.frombuffer(hit, dtype="<f4").reshape(len(x), width)
                if model.shadow is not None:
                    model.shadow.offer(x, out)
                return out, [(b"x-cache", b"hit")]
        deadline = time.monotonic() + self.config.timeout_ms / 1000
        try:
            async with asyncio.timeout(self.config.timeout_ms / 1000):  # no extra task, unlike wait_for
                out = await runtime.infer(x, deadline)
        except TimeoutError:
            raise DeadlineExceeded from None
        if model.shadow is not None:  # a copy for the shadow version, after the answer; never waited for
            model.shadow.offer(x, out)
        if self.cache is None or key is None:
            return out, []
        await self.cache.put(key, out.astype("<f4", copy=False).tobytes())
        return out, [(b"x-cache", b"miss")]

    async def _status_v1(self, route: Route, scope: dict[str, Any], receive: Receive) -> Answer:
        model = self._model(route)
        state = {
            "version": str(model.version),
            "state": "AVAILABLE",
            "status": {"error_code": "OK", "error_message": ""},
        }
        # OpenAI's GET /v1/models/{m} shares the path: its fields ride along.
        return 200, orjson.dumps({"model_version_status": [state], **model_object(model)}), [JSON]

    async def _predict_v1(self, route: Route, scope: dict[str, Any], receive: Receive) -> Answer:
        with self._holding(route, scope) as model:
            runtime = model.runtime
            media = _content_type(scope, False, runtime.inputs.media_types)
            runtime.inputs.expect(1)
            try:
                body = await self._read(scope, receive)
                if media is None:
                    x, columnar = runtime.decode_v1(body)
                else:  # a plain POST of one file
                    x, columnar = runtime.inputs.decode_file(body, media), False
            finally:
                runtime.inputs.expect(-1)
            out, cached = await self._predict(model, x)
        return 200, runtime.encode_v1(out, columnar), [JSON, model.header, *cached]

    async def _index(self, route: Route, scope: dict[str, Any], receive: Receive) -> Answer:
        index = [
            {"name": m.name, "version": str(m.version), "state": "READY", "reference": m.requested}
            for served in self.repo.models.values()
            for m in [
                served,
                *(v for v in self.repo.versions.get(served.name, {}).values() if v is not served),
            ]
        ]
        return 200, orjson.dumps(index), [JSON]

    async def _load(self, route: Route, scope: dict[str, Any], receive: Receive) -> Answer:
        name = route.model or ""
        ref = _load_reference(await self._read(scope, receive), name, self.repo)
        model = await self.repo.admin_load(ref)
        answer = {"loaded": f"{model.name}:{model.version}", "reference": ref}
        return 200, orjson.dumps(answer), [JSON]

    async def _unload(self, route: Route, scope: dict[str, Any], receive: Receive) -> Answer:
        await self._read(scope, receive)
        await self.repo.admin_unload(route.model or "")
        return 200, orjson.dumps({"unloaded": route.model}), [JSON]


async def _stream(receive: Receive, send: Send, status: int, headers: list[Any], stream: Stream) -> None:
    """Send a streamed answer chunk by chunk; a client that goes away cancels it (its slot is freed)."""
    await send({"type": "http.response.start", "status": status, "headers": headers})
    finished = False

    def gone(task: asyncio.Future[None]) -> None:
        if not finished and not task.cancelled():
            stream.cancel()

    watcher = asyncio.ensure_future(until_disconnect(receive))
    watcher.add_done_callback(gone)
    try:
        async for chunk in stream.chunks:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        finished = True
        await send({"type": "http.response.body", "body": b"", "more_body": False})
    finally:
        finished = True
        watcher.cancel()


def _log(line: str, exc: BaseException | None = None) -> None:
    """One line (and a traceback for a bug) on stderr, with anything shaped like an API key masked."""
    if exc is not None:
        line += "\n" + "".join(traceback.format_exception(exc)).rstrip()
    print(f"skylift serve: {_KEY_LIKE.sub('sk_***', line)}", file=sys.stderr, flush=True)


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


def _content_type(scope: dict[str, Any], binary: bool, media: tuple[bytes, ...] = ()) -> bytes | None:
    """None for a JSON body (or V2 binary tensors), else the Content-Type of a plain POST of one
    file that the model's runtime decodes (one of `media`); 415 for anything else."""
    for name, value in scope["headers"]:
        if name == b"content-type":
            kind: bytes = value.split(b";")[0].strip().lower()
            # x-www-form-urlencoded: what `curl -d` sends for a JSON body; the body is still parsed as JSON.
            if kind in _JSON_TYPES or (binary and kind == b"application/octet-stream"):
                return None
            if kind in media and not binary:
                return kind
            message = f"Content-Type {kind.decode('latin-1')[:60]!r} is not supported here"
            if media:
                message += f" (this model takes JSON, or one file as {b', '.join(media).decode()})"
            raise BadRequest(message, 415)
    return None


@functools.cache
def _all(outputs: tuple[str, ...]) -> tuple[tuple[str, bool], ...]:
    """Every output of a runtime, as JSON."""
    return tuple((name, False) for name in outputs)


def _metadata(model: ServedModel, versions: list[int]) -> dict[str, Any]:
    runtime = model.runtime
    return {
        "name": model.name,
        "versions": [str(v) for v in versions],
        "platform": "pytorch",
        "inputs": runtime.inputs.metadata(),
        "outputs": runtime.output_metadata(),
        "parameters": {"kind": runtime.kind, **runtime.parameters(), "reference": model.requested},
    }

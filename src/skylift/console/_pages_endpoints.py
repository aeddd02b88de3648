"""Endpoints: the `skylift serve` processes of this home, their live traffic, and a playground.

Every call to a server goes through `_upstream` (its public HTTP API). The key sent with it is the
one typed into the page (header X-Endpoint-Key, kept only in the page's memory), else the key the
user signed in with, else none (a server started with --no-auth).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from skylift import endpoints
from skylift.console import _prometheus, _upstream
from skylift.console._access import check_csrf, who
from skylift.console._files import as_dict
from skylift.console._http import json_response, read_json
from skylift.console._models import Models
from skylift.console._render import render
from skylift.console._sessions import Session
from skylift.errors import ModelNotFound, SkyliftError, SpecError


def _home(request: Request) -> Path:
    home: Path = request.app.state.home
    return home


def _endpoint(request: Request) -> endpoints.Endpoint:
    """The server a link names by its record's id, or by pid (this host's first: pids of different
    hosts may coincide)."""
    wanted = request.path_params["pid"]
    live = endpoints.running(_home(request))
    named = [e for e in live if e.id == wanted]
    by_pid = sorted((e for e in live if str(e.pid) == wanted), key=lambda e: not endpoints.is_local(e))
    if found := named or by_pid:
        return found[0]
    raise ModelNotFound(f"no running skylift serve with process id {wanted[:70]!r} on this home")


def _key(request: Request, session: Session) -> str | None:
    typed = request.headers.get("x-endpoint-key", "").strip()
    if typed:
        return typed
    return str(session.key) if session.key is not None else None


def _served(request: Request, e: endpoints.Endpoint) -> list[dict[str, Any]]:
    """Each served model with its registry card (kind, signature) for the playground."""
    models: Models = request.app.state.models
    out = []
    for name, entry in sorted(e.models.items()):
        version = entry.get("version") if isinstance(entry.get("version"), int) else None
        try:
            card = models.card(name, version)
        except SkyliftError as exc:  # deleted since, or unreadable: listed, no playground
            card = {
                "ref": f"{name}:{version}",
                "problem": str(exc),
                "kind": None,
                "signature": {},
                "info": {},
            }
        data = as_dict(card["info"].get("data"))
        slim = {k: card[k] for k in ("ref", "kind", "signature", "problem")}
        slim["input_shape"] = data.get("input_shape")
        out.append({"name": name, "ref": str(entry.get("ref", name)), "version": version, "card": slim})
    return out


def _row(e: endpoints.Endpoint) -> dict[str, Any]:
    return {
        "id": e.id, "pid": e.pid, "host": e.host, "url": endpoints.url_from_here(e) or f"{e.url} on {e.host}",
        "models": {n: m.get("version") for n, m in e.models.items()},
        "replicas": e.replicas, "auth": e.auth, "tls": e.tls, "started": e.started,
    }  # fmt: skip


def endpoints_page(request: Request) -> Response:
    who(request)
    return render(request, "endpoints.html", endpoints=[_row(e) for e in endpoints.running(_home(request))])


def endpoints_api(request: Request) -> Response:
    who(request)
    return json_response({"endpoints": [_row(e) for e in endpoints.running(_home(request))]})


def endpoint_page(request: Request) -> Response:
    who(request)
    e = _endpoint(request)
    return render(request, "endpoint.html", endpoint=_row(e), served=_served(request, e))


def metrics_api(request: Request) -> Response:
    """This server's traffic since the previous scrape (any page's): requests/s, errors/s, latency."""
    session = who(request)
    e = _endpoint(request)
    try:
        status, body = _upstream.call(e, _home(request), "GET", "/metrics", key=_key(request, session))
    except _upstream.Unreachable as exc:
        return json_response({"state": "unreachable", "message": str(exc)})
    if status != 200:
        message = _upstream.error_message(body)
        return json_response({"state": "refused", "status": status, "message": message})
    now = _prometheus.scrape(body.decode(errors="replace"), time.monotonic())
    previous: dict[str, _prometheus.Scrape] = request.app.state.scrapes
    rates = _prometheus.rates(previous.get(e.id), now)
    previous[e.id] = now
    return json_response(
        {"state": "ok", "at": time.time(), "requests": now.requests, "rss": now.rss, **rates}
    )


async def _playground_call(
    request: Request,
) -> tuple[endpoints.Endpoint, Session, dict[str, Any], dict[str, Any]]:
    session = who(request)
    check_csrf(request, session, None)
    e = await run_in_threadpool(_endpoint, request)
    body = await read_json(request)
    model = body.get("model")
    if not isinstance(model, str) or model not in e.models:
        raise SpecError(f"this server serves {', '.join(sorted(e.models))}; name one as 'model'")
    return e, session, body, e.models[model]


async def infer_api(request: Request) -> Response:
    """A KServe V2 inference on the server, from rows of numbers or texts; the server's answer as is."""
    e, session, body, entry = await _playground_call(request)
    models: Models = request.app.state.models
    card = await run_in_threadpool(models.card, body["model"], entry.get("version"))
    upstream_body = _upstream.v2_body(card["signature"], body)
    started = time.perf_counter()
    try:
        status, raw = await run_in_threadpool(
            _upstream.call, e, _home(request), "POST", _upstream.infer_path(body["model"]), upstream_body,
            _key(request, session),
        )  # fmt: skip
    except _upstream.Unreachable as exc:
        return json_response({"status": 502, "error": str(exc)}, 502)
    ms = round(1000 * (time.perf_counter() - started), 2)
    try:
        answer = json.loads(raw)
    except ValueError:
        answer = {"error": raw.decode(errors="replace")[:300]}
    return json_response({"status": status, "ms": ms, "answer": answer}, 200 if status < 400 else status)


async def chat_api(request: Request) -> Response:
    """A streamed chat completion: the server's server-sent events passed through as they come."""
    e, session, body, _ = await _playground_call(request)
    upstream_body = _upstream.chat_body(body["model"], body)
    chunks = _upstream.stream(
        e, _home(request), "/v1/chat/completions", upstream_body, _key(request, session)
    )
    return StreamingResponse(chunks, media_type="text/event-stream", headers={"Cache-Control": "no-store"})


ROUTES = [
    Route("/endpoints", endpoints_page),
    Route("/api/endpoints", endpoints_api),
    Route("/endpoints/{pid}", endpoint_page),
    Route("/api/endpoints/{pid}/metrics", metrics_api),
    Route("/api/endpoints/{pid}/infer", infer_api, methods=["POST"]),
    Route("/api/endpoints/{pid}/chat", chat_api, methods=["POST"]),
]

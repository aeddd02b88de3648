"""Models: the registry list, one model's versions and card, and the admin actions promote and delete."""

from __future__ import annotations

from urllib.parse import quote, urlencode

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from skylift.console._access import Denied, check_csrf, need, who
from skylift.console._audit import Audit
from skylift.console._http import read_form
from skylift.console._models import Models
from skylift.console._render import render
from skylift.errors import ModelNotFound, SkyliftError, SpecError


def _models(request: Request) -> Models:
    found: Models = request.app.state.models
    return found


def _version(text: str | None) -> int | None:
    if text is None or text == "":
        return None
    if not text.isdigit() or int(text) < 1:
        raise SpecError(f"a version is a whole number >= 1, got {text[:20]!r}")
    return int(text)


def models_page(request: Request) -> Response:
    who(request)
    return render(request, "models.html", models=_models(request).rows())


def _model_view(
    request: Request, name: str, version: int | None, error: str | None = None, status: int = 200
) -> Response:
    models = _models(request)
    versions = models.versions(name)  # ModelNotFound for an unknown name: 404
    card = models.card(name, version)
    aliases = {a: v.version for v in versions for a in v.aliases}
    q = request.query_params
    note = None
    if q.get("promoted") and aliases.get(q["promoted"]) == card["version"]:
        note = f"{name}@{q['promoted']} now points at version {card['version']}"
    if q.get("deleted") and _digits(q["deleted"]) and int(q["deleted"]) not in {v.version for v in versions}:
        note = f"deleted {name}:{q['deleted']}"
    return render(
        request, "model.html", status, name=name, versions=versions, card=card, aliases=aliases,
        note=note, error=error,
    )  # fmt: skip


def _digits(text: str) -> bool:
    return text.isdigit() and len(text) < 10


def model_page(request: Request) -> Response:
    who(request)
    return _model_view(request, request.path_params["name"], _version(request.query_params.get("version")))


def _client(request: Request) -> str:
    return f"{request.client.host}:{request.client.port}" if request.client else "?"


async def _act(request: Request, action: str) -> Response:
    """Run one admin action from a form: admin scope, CSRF token, audit line; an error re-renders
    the page with the message (400 for bad input, 409 for a refusal, 404 for an unknown version)."""
    name = request.path_params["name"]
    audit: Audit = request.app.state.audit
    try:
        session = need(request, "admin")  # before the body is read
    except Denied as exc:
        who_name = getattr(getattr(request.state, "session", None), "name", None)
        audit.write(who_name, f"/models/{name}/{action}", f"denied: {exc}", exc.status, _client(request))
        raise
    form = await read_form(request)
    check_csrf(request, session, form.get("csrf"))
    version = _version(form.get("version"))
    route = f"/models/{name}/{action}"
    try:
        if version is None:
            raise SpecError(f"{action} needs a version")
        if action == "promote":
            alias = form.get("alias", "").strip()
            await run_in_threadpool(_models(request).promote, name, version, alias)
            where = {"version": str(version), "promoted": alias}
        else:
            force = form.get("force") == "on"
            await run_in_threadpool(_models(request).delete, name, version, force)
            where = {"deleted": str(version)}
    except SkyliftError as exc:
        # 409: delete refused while an alias points at the version; 400: bad input
        status = 404 if isinstance(exc, ModelNotFound) else 409 if action == "delete" else 400
        audit.write(session.name, route, f"failed: {action}: {exc}", status, _client(request))
        try:
            return await run_in_threadpool(_model_view, request, name, None, str(exc), status)
        except ModelNotFound:
            raise exc from None
    audit.write(session.name, route, f"ok: {action} {name}:{version}", 303, _client(request))
    if action == "delete" and not any(e.name == name for e in _models(request).registry.list()):
        return RedirectResponse(f"/models?{urlencode({'deleted': f'{name}:{version}'})}", 303)
    return RedirectResponse(f"/models/{quote(name, safe='')}?{urlencode(where)}", 303)


async def promote(request: Request) -> Response:
    return await _act(request, "promote")


async def delete(request: Request) -> Response:
    return await _act(request, "delete")


ROUTES = [
    Route("/models", models_page),
    Route("/models/{name}", model_page),
    Route("/models/{name}/promote", promote, methods=["POST"]),
    Route("/models/{name}/delete", delete, methods=["POST"]),
]

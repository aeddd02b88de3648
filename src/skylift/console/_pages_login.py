"""Signing in with an API key (a form) and out; the key is checked by the key store, never shown."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from skylift.console._access import check_origin
from skylift.console._audit import Audit
from skylift.console._http import read_form
from skylift.console._render import render
from skylift.console._sessions import COOKIE, Sessions, check_key
from skylift.errors import AuthError


def _next(target: str | None) -> str:
    """Where to go after signing in: a path of this console only (never //host or a URL)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/runs"
    return target


def login_page(request: Request) -> Response:
    sessions: Sessions = request.app.state.sessions
    if not sessions.login:
        return RedirectResponse("/runs", 303)
    return render(request, "login.html", next=_next(request.query_params.get("next")), error=None)


async def login(request: Request) -> Response:
    sessions: Sessions = request.app.state.sessions
    check_origin(request)
    form = await read_form(request)
    target = _next(form.get("next"))
    if not sessions.login:
        return RedirectResponse(target, 303)
    try:
        check_key(form.get("key", ""))
        session = sessions.sign_in(form.get("key", ""))
    except AuthError:
        audit: Audit = request.app.state.audit
        client = f"{request.client.host}:{request.client.port}" if request.client else "?"
        audit.write(None, "/login", "denied: invalid key", 401, client)
        return render(request, "login.html", 401, next=target, error="invalid, expired or revoked API key")
    sessions.sign_out(request.cookies.get(COOKIE))
    request.state.new_session = session
    return RedirectResponse(target, 303)


async def logout(request: Request) -> Response:
    sessions: Sessions = request.app.state.sessions
    check_origin(request)
    sessions.sign_out(request.cookies.get(COOKIE))
    request.state.end_session = True
    return RedirectResponse("/login" if sessions.login else "/runs", 303)


ROUTES = [
    Route("/login", login_page),
    Route("/login", login, methods=["POST"]),
    Route("/logout", logout, methods=["POST"]),
]

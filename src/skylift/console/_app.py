"""The console's ASGI app: routes of each area, static files, and errors mapped to pages.

Errors: a SkyliftError is the user's problem and gets its one line on a page (or `{"error"}` under
/api/) with 400 (bad input), 404 (unknown run, model, study, endpoint), 409 (integrity) or 401/403;
anything else is a bug, logged on stderr with its traceback and answered 500 without one.
"""

from __future__ import annotations

import sys
import traceback
from importlib import resources
from typing import Any
from urllib.parse import quote

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from skylift.console import _pages_endpoints, _pages_login, _pages_models, _pages_runs, _pages_studies
from skylift.console._access import Denied
from skylift.console._audit import Audit
from skylift.console._config import ConsoleConfig
from skylift.console._headers import Headers
from skylift.console._http import TooLarge, json_response
from skylift.console._models import make as make_models
from skylift.console._render import render
from skylift.console._sessions import Sessions
from skylift.console._studies import Studies
from skylift.errors import AuthError, IntegrityError, ModelNotFound, SkyliftError


def _status(exc: Exception) -> int:
    if isinstance(exc, Denied):
        return exc.status
    if isinstance(exc, TooLarge):
        return 413
    if isinstance(exc, ModelNotFound):
        return 404
    if isinstance(exc, IntegrityError):
        return 409
    if isinstance(exc, AuthError):
        return 403
    return 400


def _answer(request: Request, status: int, message: str) -> Response:
    if request.url.path.startswith("/api/"):
        response = json_response({"error": message}, status)
        if status == 401:
            response.headers["WWW-Authenticate"] = "Bearer"
        return response
    if status == 401:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse(f"/login?next={quote(target, safe='')}", 303)
    return render(request, "error.html", status, code=status, message=message)


async def _skylift_error(request: Request, exc: Exception) -> Response:
    return _answer(request, _status(exc), str(exc))


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)  # registered for HTTPException only
    message = "no such page" if exc.status_code == 404 else str(exc.detail)
    return _answer(request, exc.status_code, message)


async def _bug(request: Request, exc: Exception) -> Response:
    print(f"skylift console: error on {request.method} {request.url.path}:", file=sys.stderr)
    traceback.print_exception(exc, file=sys.stderr)
    return _answer(request, 500, "internal error (logged by the console)")


def _plotly(request: Request) -> Response:
    """plotly.js from the `plotly` Python package: the browser loads nothing from elsewhere."""
    path = resources.files("plotly") / "package_data" / "plotly.min.js"
    return FileResponse(str(path), media_type="text/javascript", headers={"Cache-Control": "max-age=86400"})


def _root(request: Request) -> Response:
    return RedirectResponse("/runs", 303)


def create_app(config: ConsoleConfig) -> Any:
    """The ASGI app over `config.home` (call `config.check()` first)."""
    routes: list[BaseRoute] = [
        Route("/", _root),
        *_pages_login.ROUTES,
        *_pages_runs.ROUTES,
        *_pages_studies.ROUTES,
        *_pages_models.ROUTES,
        *_pages_endpoints.ROUTES,
        Route("/static/plotly.min.js", _plotly),
        Mount("/static", StaticFiles(packages=[("skylift.console", "static")]), name="static"),
    ]
    app = Starlette(
        routes=routes,
        exception_handlers={SkyliftError: _skylift_error, HTTPException: _http_error, Exception: _bug},
    )
    app.state.home = config.home
    app.state.sessions = Sessions(config.keys, config.login)
    app.state.studies = Studies(config.home)
    app.state.models = make_models(config.home, config.key_file)
    app.state.audit = Audit(config.home / "audit.log")
    app.state.scrapes = {}
    return Headers(app, local_only=not config.login, secure=config.tls_cert is not None)

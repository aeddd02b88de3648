"""What a request may do: its session (or key), the scope an action needs, and its CSRF token."""

from __future__ import annotations

from starlette.requests import Request

from skylift.console._sessions import COOKIE, Session, Sessions, check_key, presented_key
from skylift.errors import AuthError


class Denied(AuthError):
    """401 (no or bad key: pages send the browser to the login page) or 403 (a scope is missing)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _sessions(request: Request) -> Sessions:
    found: Sessions = request.app.state.sessions
    return found


def who(request: Request) -> Session:
    """The caller: a header key, else the cookie's session, else (no login needed) a new anonymous
    session whose cookie the response sets. Denied(401) when a key is needed and missing or bad.
    Also kept as `request.state.session` for the page."""
    sessions = _sessions(request)
    presented = presented_key(dict(request.headers))
    if presented is not None:
        try:
            check_key(presented)
            found = sessions.bearer(presented)
        except AuthError:
            raise Denied(401, "invalid, expired or revoked API key") from None
    else:
        cookie = sessions.get(request.cookies.get(COOKIE))
        if cookie is None and sessions.login:
            raise Denied(401, "sign in with an API key")
        if cookie is None:
            cookie = sessions.anonymous()
            request.state.new_session = cookie
        found = cookie
    request.state.session = found
    return found


def need(request: Request, scope: str) -> Session:
    """The caller, if its key has `scope`; Denied(403) naming the scope otherwise."""
    s = who(request)
    if not s.may(scope):
        raise Denied(403, f"API key {s.name!r} lacks the {scope!r} scope")
    return s


def check_csrf(request: Request, session: Session, token: str | None) -> None:
    """Refuse a cookie-authenticated change without the page's token (a cross-site form or script).

    Header-key requests carry no cookie, so another site cannot forge them: they need no token.
    """
    if not session.token:
        return
    check_origin(request)
    if not session.csrf_ok(token or request.headers.get("x-csrf-token")):
        raise Denied(403, "this form is out of date (its security token does not match): reload the page")


def check_origin(request: Request) -> None:
    """Refuse a browser request sent by a page of another site (its Origin header says so)."""
    origin = request.headers.get("origin")
    if origin is not None and origin != f"{request.url.scheme}://{request.url.netloc}":
        raise Denied(403, "refused a request from another site")

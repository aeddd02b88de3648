"""Headers on every answer (content security policy, no sniffing, no framing, the session cookie)
and the Host check."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from skylift.console._sessions import COOKIE, SESSION_S

# Scripts only from the console itself (no inline script runs: page data travels in
# <script type="application/json">); Plotly sets inline styles, hence style-src 'unsafe-inline'.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
_HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),  # not no-referrer: forms would then send Origin: null
    (b"x-frame-options", b"DENY"),
]
_LOCAL = {"localhost", "127.0.0.1", "[::1]"}


def _host(value: str) -> str:
    if value.startswith("["):
        return value.split("]")[0] + "]"
    return value.rsplit(":", 1)[0] if ":" in value else value


class Headers:
    """ASGI middleware. `local_only`: answer only requests addressed to a loopback name, so a web
    page cannot reach an open (no login) console by pointing its own DNS name at 127.0.0.1."""

    def __init__(self, app: ASGIApp, local_only: bool, secure: bool) -> None:
        self.app = app
        self.local_only = local_only
        self.secure = secure

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.local_only:
            host = dict(scope["headers"]).get(b"host", b"").decode("latin-1")
            name = _host(host)
            if name not in _LOCAL and not name.startswith("127."):
                await _refuse(send)
                return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                cookie = self._cookie(scope.get("state") or {})
                message["headers"] = [*message.get("headers", []), *_HEADERS, *cookie]
            await send(message)

        await self.app(scope, receive, with_headers)

    def _cookie(self, state: dict[str, object]) -> list[tuple[bytes, bytes]]:
        """Set-Cookie for a session made (sign-in, first anonymous page) or ended by this request."""
        made, ended = state.get("new_session"), state.get("end_session")
        if made is None and not ended:
            return []
        token, age = (getattr(made, "token", ""), int(SESSION_S)) if made is not None else ("", 0)
        flags = "; Secure" if self.secure else ""
        value = f"{COOKIE}={token}; Path=/; Max-Age={age}; HttpOnly; SameSite=Strict{flags}"
        return [(b"set-cookie", value.encode())]


async def _refuse(send: Send) -> None:
    body = b"this console answers only loopback names (localhost, 127.0.0.1, [::1])\n"
    await send(
        {
            "type": "http.response.start",
            "status": 421,
            "headers": [(b"content-type", b"text/plain; charset=utf-8"), *_HEADERS],
        }
    )
    await send({"type": "http.response.body", "body": body})

"""API key checks for one replica: the presented key, its scope for the route, live key-store reloads."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from skylift.errors import AuthError, SpecError
from skylift.security.apikeys import KeyInfo, KeyStore
from skylift.serve.audit import AuditLog
from skylift.serve.routes import Route

RELOAD_S = 2.0  # created and revoked keys apply within ~2 s
_CHALLENGE = ((b"www-authenticate", b"Bearer"),)


class Denied(AuthError):
    """401 or 403; the message names what is missing, never the key."""

    def __init__(self, status: int, message: str, headers: tuple[tuple[bytes, bytes], ...] = ()) -> None:
        super().__init__(message)
        self.status = status
        self.headers = headers


def presented_key(headers: list[tuple[bytes, bytes]]) -> str | None:
    """The key of `Authorization: Bearer KEY` or `X-API-Key: KEY` ('' for another auth scheme)."""
    presented = None
    for name, value in headers:
        if name == b"authorization":
            scheme, _, token = value.partition(b" ")
            presented = token.strip().decode("latin-1") if scheme.lower() == b"bearer" else ""
        elif name == b"x-api-key":
            presented = value.strip().decode("latin-1")
    return presented


class Auth:
    def __init__(self, path: Path, audit: AuditLog) -> None:
        self.keys = KeyStore(path, load=False)
        self.audit = audit
        self._read = 0.0
        self._reload()

    def _reload(self) -> None:
        """Re-read the key file if it changed; a broken one keeps the last good keys (one log line)."""
        self._read = time.monotonic()
        try:
            self.keys.refresh()
        except SpecError as exc:
            # Logged once per broken version of the file: refresh() does not retry until it changes.
            kept = len(self.keys.infos())
            print(f"skylift serve: {exc}; keeping the {kept} key(s) read before", file=sys.stderr, flush=True)

    def check(self, scope: dict[str, Any], route: Route) -> KeyInfo | None:
        """The caller's key if it may use `route`; Denied (401/403, audited) otherwise."""
        if route.scope is None:
            return None
        if time.monotonic() - self._read > RELOAD_S:
            self._reload()
        presented = presented_key(scope["headers"])
        if not presented:
            self.audit.write(scope, None, "denied: no API key", 401)
            raise Denied(401, "missing API key: send Authorization: Bearer KEY or X-API-Key: KEY", _CHALLENGE)
        try:
            key = self.keys.verify(presented)
        except AuthError:
            self.audit.write(scope, None, "denied: invalid key", 401)
            raise Denied(401, "invalid, expired or revoked API key", _CHALLENGE) from None
        if route.scope not in key.scopes:
            self.audit.write(scope, key.name, f"denied: needs scope {route.scope}", 403)
            raise Denied(403, f"API key {key.name!r} lacks the {route.scope!r} scope")
        return key

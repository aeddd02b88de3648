"""Who is asking: signed-in browsers (a random cookie), API keys in headers, and CSRF tokens.

A sign-in verifies the API key with the key store (constant time, like `serve`) and keeps, in this
process' memory only, a random session token -> the key's id, name and scopes. Every request looks
the key up again, so a revoked or expired key loses its sessions at once. The presented key itself
is kept (as a `Secret`, never rendered) only to forward it to a `skylift serve` from the playground.
Without a login (loopback, no --require-key) each browser gets an anonymous session with every
scope, so forms still carry a CSRF token.
"""

from __future__ import annotations

import contextlib
import hmac
import secrets
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

from starlette.datastructures import Secret

from skylift.errors import AuthError, SpecError
from skylift.security.apikeys import SCOPES, KeyStore

COOKIE = "skylift_console"
SESSION_S = 12 * 3600.0  # a sign-in lasts 12 h at most
MAX_SESSIONS = 1000  # oldest dropped first: cookie-less requests cannot grow memory without bound


@dataclass(frozen=True)
class Session:
    token: str
    csrf: str
    key_id: str | None
    """None: an anonymous session (no login required)."""
    name: str | None
    scopes: tuple[str, ...]
    key: Secret | None
    expires: float

    def may(self, scope: str) -> bool:
        return scope in self.scopes

    def csrf_ok(self, presented: str | None) -> bool:
        return presented is not None and hmac.compare_digest(presented.encode(), self.csrf.encode())


class Sessions:
    """Sessions of one console process; pages are answered from worker threads, hence the lock."""

    def __init__(self, keys: Path, login: bool) -> None:
        self.login = login
        self.store = KeyStore(keys, load=False)
        self._by_token: OrderedDict[str, Session] = OrderedDict()
        self._lock = threading.Lock()

    def _refresh(self) -> None:
        # A key file broken by a hand edit keeps the keys read before, as serve does.
        with self._lock, contextlib.suppress(SpecError):
            self.store.refresh()  # cheap: a stat unless the file changed

    def _add(self, key_id: str | None, name: str | None, scopes: tuple[str, ...], key: str | None) -> Session:
        s = Session(
            secrets.token_urlsafe(32),
            secrets.token_urlsafe(32),
            key_id,
            name,
            scopes,
            Secret(key) if key else None,
            time.time() + SESSION_S,
        )
        with self._lock:
            self._by_token[s.token] = s
            while len(self._by_token) > MAX_SESSIONS:
                self._by_token.popitem(last=False)
        return s

    def anonymous(self) -> Session:
        return self._add(None, None, SCOPES, None)

    def sign_in(self, presented: str) -> Session:
        """A new session for a valid key; AuthError (one message for every failure) otherwise."""
        self._refresh()
        info = self.store.verify(presented.strip())
        return self._add(info.key_id, info.name, info.scopes, presented.strip())

    def sign_out(self, token: str | None) -> None:
        if token:
            with self._lock:
                self._by_token.pop(token, None)

    def get(self, token: str | None) -> Session | None:
        """The live session of a cookie, or None (unknown, expired, or its key was revoked)."""
        s = self._by_token.get(token) if token else None
        if s is None:
            return None
        if time.time() >= s.expires:
            self.sign_out(s.token)
            return None
        if s.key_id is None:
            return None if self.login else s  # an anonymous cookie from before a restart with a login
        self._refresh()
        live = {k.key_id: k for k in self.store.usable()}.get(s.key_id)
        if live is None:
            self.sign_out(s.token)
            return None
        return s

    def bearer(self, presented: str) -> Session:
        """A one-request session for `Authorization: Bearer KEY` / `X-API-Key` (scripts): AuthError."""
        self._refresh()
        info = self.store.verify(presented.strip())
        return Session("", "", info.key_id, info.name, info.scopes, Secret(presented.strip()), time.time())


def presented_key(headers: dict[str, str]) -> str | None:
    """The key of `Authorization: Bearer KEY` or `X-API-Key: KEY`, if either is there."""
    auth = headers.get("authorization")
    if auth is not None:
        scheme, _, token = auth.partition(" ")
        return token.strip() if scheme.lower() == "bearer" else ""
    return headers.get("x-api-key")


def check_key(presented: str) -> None:
    """AuthError unless `presented` could be a key: bounded before it reaches the store."""
    if not presented or len(presented) > 256:
        raise AuthError("invalid API key")

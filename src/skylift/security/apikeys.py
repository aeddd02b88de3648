"""API keys: random keys shown once, stored as salted SHA-256 hashes with scopes, checked in constant time.

A key reads `sk_<id>_<secret>`: the 8-hex-digit id finds the stored entry without touching the
secret; the 256-bit secret is compared by hash with `hmac.compare_digest`. A slow password hash
would buy nothing for 256 random bits and would cost every request. The store is one JSON file
(mode 0600), `SKYLIFT_HOME/keys.json` unless `SKYLIFT_API_KEYS_FILE` names another.
"""

from __future__ import annotations

import fcntl
import hashlib
import hmac
import json
import os
import re
import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from skylift import _atomic
from skylift.errors import AuthError, SpecError

SCOPES = ("predict", "metrics", "admin")
KEYS_FILE_ENV = "SKYLIFT_API_KEYS_FILE"
MAX_KEY_CHARS = 128  # anything longer is not one of ours; refuse before hashing
_KEY = re.compile(r"^sk_([0-9a-f]{8})_([A-Za-z0-9_-]{43})$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_DURATION = re.compile(r"^(\d+)([smhd])$")


@dataclass(frozen=True)
class KeyInfo:
    """A stored key, without its secret."""

    name: str
    key_id: str
    scopes: tuple[str, ...]
    created: float
    expires: float | None
    rate_limit: float | None
    """Requests per second for this key (None: the server's default)."""
    token_limit: float | None = None
    """Generated plus prompt tokens per minute for this key (None: the server's default)."""

    def expired(self, now: float | None = None) -> bool:
        return self.expires is not None and (now or time.time()) >= self.expires


def keys_file(home: Path) -> Path:
    """Where keys live: $SKYLIFT_API_KEYS_FILE, else HOME/keys.json (read when called)."""
    explicit = os.environ.get(KEYS_FILE_ENV)
    return Path(explicit).expanduser() if explicit else home / "keys.json"


def parse_duration(text: str) -> float:
    """'90s', '15m', '12h', '30d' -> seconds."""
    match = _DURATION.match(text.strip())
    if not match or int(match.group(1)) == 0:
        raise SpecError(f"--expires must look like 30d, 12h, 15m or 90s, got {text!r}")
    return int(match.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2)]


def parse_scopes(text: str) -> tuple[str, ...]:
    scopes = tuple(dict.fromkeys(s.strip() for s in text.split(",") if s.strip()))
    bad = [s for s in scopes if s not in SCOPES]
    if not scopes or bad:
        raise SpecError(f"--scope takes a comma list of {', '.join(SCOPES)}, got {text!r}")
    return scopes


def _digest(salt: bytes, secret: str) -> str:
    return hashlib.sha256(salt + secret.encode()).hexdigest()


class KeyStore:
    """The key file. Reads are cheap and re-done when the file changes (see `refresh`).

    `create` and `revoke` re-read the file under an exclusive lock (`keys.json.lock`) before
    writing it, so concurrent `skylift keys create` commands never lose each other's keys.
    """

    def __init__(self, path: Path, load: bool = True) -> None:
        self.path = path
        self._entries: dict[str, dict[str, Any]] = {}
        self._stamp: tuple[int, int, int] | None = None
        if load:
            self.refresh()

    def refresh(self) -> bool:
        """Reload if the file changed since the last read; True when it did.

        A file that is not a key file raises SpecError and keeps the keys read before; it is
        not read again until it changes.
        """
        try:
            st = self.path.stat()
        except FileNotFoundError:
            changed = self._stamp is not None
            self._entries, self._stamp = {}, None
            return changed
        # The inode changes on every atomic rewrite; mtime_ns and size catch edits in place.
        stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
        if stamp == self._stamp:
            return False
        self._stamp = stamp
        try:
            data = json.loads(self.path.read_text())
            entries = {e["id"]: e for e in data["keys"]}
            for e in entries.values():  # a bad entry fails here, not in verify() on a request
                _info(e)
                bytes.fromhex(e["salt"])
                e["sha256"].encode()
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            raise SpecError(f"{self.path}: not a skylift key file") from None
        self._entries = entries
        return True

    def infos(self) -> list[KeyInfo]:
        return [_info(e) for e in self._entries.values()]

    def usable(self) -> list[KeyInfo]:
        return [k for k in self.infos() if not k.expired()]

    @contextmanager
    def _locked(self) -> Iterator[None]:
        """Hold the store's lock, with the entries freshly read from the file."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path.with_name(self.path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            self._stamp = None
            self.refresh()
            yield
        finally:
            os.close(fd)  # releases the lock

    def _save(self) -> None:
        entries = sorted(self._entries.values(), key=lambda e: e["created"])
        _atomic.write_json(self.path, {"keys": entries})  # mkstemp: the file is created 0600
        self._stamp = None
        self.refresh()

    def create(
        self,
        name: str | None,
        scopes: tuple[str, ...],
        expires_in: float | None = None,
        rate_limit: float | None = None,
        token_limit: float | None = None,
    ) -> tuple[str, KeyInfo]:
        """A new key; returns (the key, shown once) and its stored info. No name: `key-<8 hex>`."""
        name = name if name is not None else f"key-{secrets.token_hex(4)}"
        if not _NAME.match(name):
            raise SpecError(f"key name {name!r} is not allowed: letters, digits, '.', '_', '-' (max 64)")
        if rate_limit is not None and rate_limit <= 0:
            raise SpecError(f"--rate-limit must be > 0 requests/s, got {rate_limit}")
        if token_limit is not None and token_limit <= 0:
            raise SpecError(f"--token-limit must be > 0 tokens/min, got {token_limit}")
        with self._locked():
            return self._create(name, scopes, expires_in, rate_limit, token_limit)

    def _create(
        self,
        name: str,
        scopes: tuple[str, ...],
        expires_in: float | None,
        rate_limit: float | None,
        token_limit: float | None = None,
    ) -> tuple[str, KeyInfo]:
        if any(e["name"] == name for e in self._entries.values()):
            raise SpecError(f"a key named {name!r} already exists: revoke it first or pick another name")
        key_id = secrets.token_hex(4)
        while key_id in self._entries:
            key_id = secrets.token_hex(4)
        secret = secrets.token_urlsafe(32)
        salt = secrets.token_bytes(16)
        now = time.time()
        self._entries[key_id] = {
            "id": key_id,
            "name": name,
            "salt": salt.hex(),
            "sha256": _digest(salt, secret),
            "scopes": list(scopes),
            "created": now,
            "expires": now + expires_in if expires_in else None,
            "rate_limit": rate_limit,
            **({"token_limit": token_limit} if token_limit is not None else {}),
        }
        self._save()
        return f"sk_{key_id}_{secret}", _info(self._entries[key_id])

    def revoke(self, name: str) -> KeyInfo:
        with self._locked():
            for key_id, entry in self._entries.items():
                if entry["name"] == name:
                    del self._entries[key_id]
                    self._save()
                    return _info(entry)
        raise SpecError(f"no key named {name!r}")

    def verify(self, presented: str) -> KeyInfo:
        """The key's info, or AuthError (never says which part was wrong)."""
        match = _KEY.match(presented) if len(presented) <= MAX_KEY_CHARS else None
        entry = self._entries.get(match.group(1)) if match else None
        if match is None or entry is None:
            # Hash anyway, so an unknown id costs the same time as a wrong secret.
            hmac.compare_digest(_digest(b"\0" * 16, presented[:MAX_KEY_CHARS]), "0" * 64)
            raise AuthError("invalid API key")
        if not hmac.compare_digest(_digest(bytes.fromhex(entry["salt"]), match.group(2)), entry["sha256"]):
            raise AuthError("invalid API key")
        info = _info(entry)
        if info.expired():
            raise AuthError("invalid API key")
        return info


def _info(e: dict[str, Any]) -> KeyInfo:
    return KeyInfo(
        e["name"],
        e["id"],
        tuple(e["scopes"]),
        e["created"],
        e.get("expires"),
        e.get("rate_limit"),
        e.get("token_limit"),
    )

"""Encryption at rest: AES-256-GCM sealed files under a master key, and the master key itself.

A sealed file is ``MAGIC (6 bytes) | format (1 byte) | nonce (12 bytes) | ciphertext | tag (16)``.
The header and the caller's associated data (e.g. model name, version and file name) are both
authenticated, so a file moved to another context, a changed byte or a wrong key all fail the
same way: `IntegrityError`, never garbage plaintext. Keys are derived per purpose from the master
key with HKDF-SHA256, so the raw master key never touches a cipher directly.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import hmac
import os
import secrets
import stat
import tempfile
from collections.abc import Mapping
from pathlib import Path

from skylift.errors import AuthError, IntegrityError, SpecError

__all__ = [
    "MASTER_KEY_ENV",
    "MasterKey",
    "create_master_key_file",
    "decrypt",
    "encrypt",
    "master_key_from_env",
]

MASTER_KEY_ENV = "SKYLIFT_MASTER_KEY"
"""Environment variable holding the base64 of a 32-byte master key."""

KEY_BYTES = 32  # AES-256
NONCE_BYTES = 12  # 96-bit random nonce: GCM's native size; safe for 2**32 files per key
MAGIC = b"SKYENC"
FORMAT = 1
HEADER_BYTES = len(MAGIC) + 1 + NONCE_BYTES
TAG_BYTES = 16
_HIDDEN = "**********"


class MasterKey:
    """A 32-byte master key. It prints as ``'**********'``; only this module reads its bytes."""

    __slots__ = ("_raw",)

    def __init__(self, raw: bytes) -> None:
        if len(raw) != KEY_BYTES:
            raise SpecError(f"a master key must be {KEY_BYTES} bytes, got {len(raw)}")
        self._raw = bytes(raw)

    @classmethod
    def generate(cls) -> MasterKey:
        return cls(secrets.token_bytes(KEY_BYTES))

    def __repr__(self) -> str:
        return f"MasterKey('{_HIDDEN}')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, MasterKey) and hmac.compare_digest(self._raw, other._raw)

    def __hash__(self) -> int:
        return hash(self.key_id)

    def derive(self, purpose: str) -> bytes:
        """A 32-byte subkey for one purpose (HKDF-SHA256); distinct purposes give unrelated keys."""
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.kdf.hkdf import HKDF

        hkdf = HKDF(
            algorithm=hashes.SHA256(), length=KEY_BYTES, salt=None, info=f"skylift/{purpose}".encode()
        )
        return hkdf.derive(self._raw)

    @property
    def key_id(self) -> str:
        """16 hex characters naming this key (safe to store and print; reveals nothing of the key)."""
        return self.derive("v1/key-id")[:8].hex()

    def mac(self, data: bytes, purpose: str) -> str:
        """Hex HMAC-SHA256 of `data` under the subkey for `purpose`."""
        return hmac.new(self.derive(purpose), data, hashlib.sha256).hexdigest()

    def check_mac(self, data: bytes, purpose: str, expected: str) -> bool:
        return hmac.compare_digest(self.mac(data, purpose), expected)

    def _encoded(self) -> bytes:
        return base64.b64encode(self._raw) + b"\n"


def encrypt(key: MasterKey, plaintext: bytes, associated_data: bytes) -> bytes:
    """Seal `plaintext` with a fresh random nonce; `associated_data` must be given again to open it."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    header = MAGIC + bytes([FORMAT]) + secrets.token_bytes(NONCE_BYTES)
    sealed = AESGCM(key.derive("v1/files")).encrypt(
        header[-NONCE_BYTES:], plaintext, header + associated_data
    )
    return header + sealed


def decrypt(key: MasterKey, blob: bytes, associated_data: bytes) -> bytes:
    """Open a sealed file; IntegrityError if it is not one, was changed, or has another key or context."""
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    if len(blob) < HEADER_BYTES + TAG_BYTES or not blob.startswith(MAGIC):
        raise IntegrityError("not a skylift encrypted file (bad header or truncated)")
    if blob[len(MAGIC)] != FORMAT:
        raise IntegrityError(f"encrypted with format {blob[len(MAGIC)]}, this skylift reads format {FORMAT}")
    header = blob[:HEADER_BYTES]
    try:
        return AESGCM(key.derive("v1/files")).decrypt(
            header[-NONCE_BYTES:], blob[HEADER_BYTES:], header + associated_data
        )
    except InvalidTag:
        raise IntegrityError(
            "authentication failed: wrong key, changed bytes, or a file copied from elsewhere"
        ) from None


def _parse_key(text: str, source: str) -> MasterKey:
    """The key from its base64 text; one line naming `source` (never the value) when it is bad."""
    hint = "make one with `skylift keys master-create PATH`"
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise SpecError(f"{source} is not valid base64 of a {KEY_BYTES}-byte key; {hint}") from None
    if len(raw) != KEY_BYTES:
        raise SpecError(f"{source} decodes to {len(raw)} bytes, expected {KEY_BYTES}; {hint}")
    return MasterKey(raw)


def _read_key_file(path: Path) -> MasterKey:
    try:
        st = path.stat()
        if not stat.S_ISREG(st.st_mode):
            raise SpecError(f"key file {path} is not a regular file")
        # Like ssh: a key others can read is a leaked key; refuse it rather than use it quietly.
        if st.st_mode & 0o077:
            raise AuthError(
                f"key file {path} is accessible by other users (mode {stat.S_IMODE(st.st_mode):04o}); "
                f"run `chmod 600 {path}`"
            )
        text = path.read_text(encoding="ascii")
    except FileNotFoundError:
        raise SpecError(f"key file {path} not found") from None
    except UnicodeDecodeError:
        raise SpecError(f"key file {path} is not base64 text") from None
    except OSError as exc:
        raise SpecError(f"key file {path}: cannot read it ({exc.strerror})") from None
    return _parse_key(text, f"key file {path}")


def master_key_from_env(
    key_file: Path | str | None = None, environ: Mapping[str, str] | None = None
) -> MasterKey | None:
    """The master key from `key_file` if given, else from $SKYLIFT_MASTER_KEY, else None.

    Read when called (never at import). A bad key is one SpecError line that names where it came
    from and never echoes the value.
    """
    if key_file is not None:
        return _read_key_file(Path(key_file).expanduser())
    env = os.environ if environ is None else environ
    text = env.get(MASTER_KEY_ENV, "")
    return _parse_key(text, MASTER_KEY_ENV) if text.strip() else None


def create_master_key_file(path: Path | str) -> MasterKey:
    """Write a new random master key (base64) to `path` with mode 0600; refuse to overwrite a file.

    Atomic like `skylift._atomic`, but published with a hard link instead of a rename: link fails
    if `path` exists, so two racing calls cannot clobber a key that encrypted models depend on.
    """
    path = Path(path).expanduser()
    if path.exists() or path.is_symlink():
        raise SpecError(f"{path} already exists; refusing to overwrite a key file")
    path.parent.mkdir(parents=True, exist_ok=True)
    key = MasterKey.generate()
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o600)  # mkstemp already uses 0600; explicit so no umask or platform can widen it
        with os.fdopen(fd, "wb") as f:
            f.write(key._encoded())
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            raise SpecError(f"{path} already exists; refusing to overwrite a key file") from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return key

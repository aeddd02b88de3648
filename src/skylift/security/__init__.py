"""Security primitives: encryption at rest (AES-256-GCM) under a master key that never prints."""

from __future__ import annotations

from skylift.security.crypto import (
    MASTER_KEY_ENV,
    MasterKey,
    create_master_key_file,
    decrypt,
    encrypt,
    master_key_from_env,
)

__all__ = [
    "MASTER_KEY_ENV",
    "MasterKey",
    "create_master_key_file",
    "decrypt",
    "encrypt",
    "master_key_from_env",
]

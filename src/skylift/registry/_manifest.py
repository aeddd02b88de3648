"""MANIFEST.json: SHA-256 and size of every file in a version folder, and the check against it."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from skylift.errors import IntegrityError

MANIFEST = "MANIFEST.json"
MAC_PURPOSE = "v1/manifest"
_CHUNK = 1 << 20  # 1 MiB reads when hashing a file we do not keep in memory


def build(blobs: Mapping[str, bytes]) -> dict[str, Any]:
    """The manifest of a folder holding exactly `blobs` (file name -> bytes)."""
    return {
        "algorithm": "sha256",
        "files": {
            name: {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
            for name, data in sorted(blobs.items())
        },
    }


def mac_payload(name: str, version: int, files: Mapping[str, Any]) -> bytes:
    """What an encrypted version's manifest MAC covers: its identity and every file's hash."""
    return json.dumps(
        {"name": name, "version": version, "files": files}, sort_keys=True, separators=(",", ":")
    ).encode()


def read(folder: Path) -> dict[str, Any]:
    """The manifest of `folder`; IntegrityError if it is missing, unreadable or malformed."""
    path = folder / MANIFEST
    try:
        manifest = json.loads(path.read_bytes())
    except FileNotFoundError:
        raise IntegrityError(f"{MANIFEST} is missing in {folder}") from None
    except (OSError, ValueError):
        raise IntegrityError(f"{MANIFEST} in {folder} is not readable JSON") from None
    files = manifest.get("files") if isinstance(manifest, dict) else None
    if not isinstance(files, dict) or not all(_entry_ok(k, v) for k, v in files.items()):
        raise IntegrityError(f"{MANIFEST} in {folder} is malformed")
    return dict(manifest)


def _entry_ok(name: Any, entry: Any) -> bool:
    # A hand-edited manifest must not make us read outside the version folder.
    safe = isinstance(name, str) and name not in ("", ".", "..", MANIFEST) and "/" not in name
    safe = safe and os.sep not in name and "\0" not in name
    return (
        safe
        and isinstance(entry, dict)
        and isinstance(entry.get("sha256"), str)
        and isinstance(entry.get("size"), int)
    )


def _digest(path: Path) -> tuple[str, int]:
    h, size = hashlib.sha256(), 0
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
            size += len(chunk)
    return h.hexdigest(), size


def problems(
    folder: Path, manifest: Mapping[str, Any], blobs: Mapping[str, bytes] | None = None
) -> list[str]:
    """Every way `folder` differs from `manifest`: missing, changed or extra files, one line each.

    `blobs` holds bytes already read (the loader hashes exactly the bytes it then uses); files
    not in it are hashed from disk in chunks.
    """
    files: Mapping[str, Any] = manifest["files"]
    found: list[str] = []
    for name, entry in sorted(files.items()):
        path = folder / name
        if name in (blobs or {}):
            data = (blobs or {})[name]
            digest, size = hashlib.sha256(data).hexdigest(), len(data)
        elif not path.is_file():
            found.append(f"{name}: missing")
            continue
        else:
            digest, size = _digest(path)
        if size != entry["size"]:
            found.append(f"{name}: {size} bytes, the manifest says {entry['size']} (truncated or changed)")
        elif digest != entry["sha256"]:
            found.append(
                f"{name}: SHA-256 {digest[:12]}... differs from the manifest's {entry['sha256'][:12]}..."
            )
    for path in sorted(folder.iterdir()):
        if path.name != MANIFEST and path.name not in files:
            kind = "folder" if path.is_dir() else "file"
            found.append(f"{path.name}: extra {kind}, not in the manifest")
    return found

"""The audit log: one JSON line per admin action (whatever its outcome) and per auth failure."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

import orjson


class AuditLog:
    """Appends to a file shared by every replica; never records a key, only its name."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._failing = False

    def write(self, scope: dict[str, Any], key: str | None, outcome: str, status: int) -> None:
        """Append one line; a log that cannot be written is said on stderr (once per outage) and the
        request is answered all the same: an unwritable disk must not turn 401s into 500s."""
        try:
            self._append(scope, key, outcome, status)
        except OSError as exc:
            if not self._failing:
                print(
                    f"skylift serve: cannot write the audit log {self.path}: {exc.strerror}", file=sys.stderr
                )
            self._failing = True
        else:
            self._failing = False

    def _append(self, scope: dict[str, Any], key: str | None, outcome: str, status: int) -> None:
        # The peer, or with --forwarded-allow-ips the client a trusted proxy names (uvicorn's
        # middleware rewrites scope["client"]); X-Forwarded-For carries no port: shown without one.
        host, port = scope.get("client") or ("", 0)
        line = orjson.dumps(
            {
                "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "key": key,
                "method": scope["method"],
                "route": scope["path"][:200],
                "status": status,
                "outcome": outcome[:300],
                "client": f"{host}:{port}" if port else host,
            }
        )
        # O_APPEND: each line lands whole even with several replicas writing.
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, line + b"\n")
        finally:
            os.close(fd)

"""The console's admin actions and sign-in failures, appended to the home's audit log (as serve does)."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path


class Audit:
    """One JSON line per admin action (whatever its outcome) and per refused sign-in; never a key,
    only its name. Lines carry `"source": "console"` beside the serve's own lines."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def write(self, key: str | None, action: str, outcome: str, status: int, client: str) -> None:
        line = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "source": "console",
            "key": key,
            "route": action[:200],
            "status": status,
            "outcome": outcome[:300],
            "client": client,
        }
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # O_APPEND: a line lands whole even beside a serving process writing the same file.
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, (json.dumps(line) + "\n").encode())
            finally:
                os.close(fd)
        except OSError as exc:  # an unwritable log must not turn an answer into a 500
            print(f"skylift console: cannot write the audit log {self.path}: {exc.strerror}", file=sys.stderr)

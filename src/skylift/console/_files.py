"""Reading the home's JSON, JSON-lines and YAML files for display: cached by (mtime, size), never raising.

A page polls every second or two; re-parsing an unchanged metrics.jsonl each time would cost more
than the answer. A file that is missing or unreadable reads as empty: a page shows what is there.
Text shown to a user passes `redact` first.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

TAIL_BYTES = 64 * 1024  # the end of a log a page shows
_CACHE_ENTRIES = 4096
_cache: dict[tuple[str, str], tuple[tuple[int, int], Any]] = {}
_URL_PASSWORD = re.compile(r"://([^:/@\s]+):[^@/\s]*@")
_API_KEY = re.compile(r"sk_[0-9a-f]{8}_[A-Za-z0-9_-]{20,}")
_MASTER_KEY = re.compile(r"(MASTER_KEY\S*\s*[=:]\s*)\S+")


def _cached(path: Path, kind: str, parse: Any) -> Any:
    try:
        st = path.stat()
    except OSError:
        return None
    stamp = (st.st_mtime_ns, st.st_size)
    hit = _cache.get((str(path), kind))
    if hit is not None and hit[0] == stamp:
        return hit[1]
    try:
        value = parse(path.read_text(errors="replace"))
    except (OSError, ValueError):
        return None
    if len(_cache) >= _CACHE_ENTRIES:
        _cache.clear()
    _cache[(str(path), kind)] = (stamp, value)
    return value


def _yaml(text: str) -> Any:
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return None


def _jsonl(text: str) -> list[Any]:
    rows = []
    for line in text.splitlines():
        try:
            rows.append(json.loads(line))
        except ValueError:
            continue  # a line being appended (samples.jsonl) or damaged: skip it
    return rows


def read_json(path: Path) -> dict[str, Any]:
    found = _cached(path, "json", json.loads)
    return found if isinstance(found, dict) else {}


def read_yaml(path: Path) -> dict[str, Any]:
    found = _cached(path, "yaml", _yaml)
    return found if isinstance(found, dict) else {}


def read_jsonl(path: Path) -> list[Any]:
    found = _cached(path, "jsonl", _jsonl)
    return found if isinstance(found, list) else []


def redact(text: str) -> str:
    """Mask what could be a secret: passwords in URLs, API keys, a master key assignment."""
    text = _URL_PASSWORD.sub(r"://\1:***@", text)
    text = _API_KEY.sub("sk_********_***", text)
    return _MASTER_KEY.sub(r"\1***", text)


def tail(path: Path, limit: int = TAIL_BYTES) -> str:
    """The last `limit` bytes of a text file (from a line start), redacted."""
    try:
        with path.open("rb") as f:
            size = f.seek(0, 2)
            f.seek(max(0, size - limit))
            data = f.read()
    except OSError as exc:
        return f"(cannot read: {exc.strerror})"
    text = data.decode("utf-8", errors="replace")
    if size > limit:
        text = "...\n" + text.split("\n", 1)[-1]
    return redact(text)


def as_dict(value: Any) -> dict[str, Any]:
    """`value` when it is a JSON object, else an empty one (a field missing or of another type)."""
    return value if isinstance(value, dict) else {}

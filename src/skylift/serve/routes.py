"""Routing: a request path to its route, the API key scope it needs and its path parameters.

One parse feeds the scope check, the metrics label and the dispatch, so the three cannot
disagree: `//v2/repository/index` is the repository index, and needs the admin scope, for all
three (an audit found a bypass when the scope check and the router read the path differently).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

UNMATCHED = "unmatched"
"""The route label of a path no route answers (404)."""
TOP = frozenset({"v1", "v2", "metrics", "openapi.json"})
"""The first path segments of the routes (a --root-path may not start with one)."""


@dataclass(frozen=True)
class Route:
    name: str
    """Metrics label and handler, e.g. v2/models/infer; UNMATCHED when no route matches."""
    scope: str | None
    """The API key scope the route needs: predict, metrics or admin (None: no key, liveness)."""
    method: str | None = None
    """The one HTTP method allowed (None: any)."""
    model: str | None = None
    version: str | None = None
    error: str = ""
    """Why nothing matched (UNMATCHED only)."""


@lru_cache(maxsize=4096)  # ~0.1 us for a path seen before instead of ~2 us: this runs on every request
def match(path: str) -> Route:
    """The route of a request path (as decoded by the server); never raises."""
    parts = path.strip("/").split("/")
    route = _v2(parts[1:]) if parts[0] == "v2" else _v1(parts[2:]) if parts[:2] == ["v1", "models"] else None
    if route is None and parts[0] == "v1":
        route = _openai(parts[1:])
    if route is None and len(parts) == 1:
        if parts[0] == "metrics":
            route = Route("metrics", "metrics", "GET")
        elif parts[0] == "openapi.json":
            route = Route("openapi", "predict", "GET")
    if route is None:
        # Anything under /v2/repository is operator territory, matched or not.
        scope = "admin" if parts[:2] == ["v2", "repository"] else "predict"
        return Route(UNMATCHED, scope, error=f"no route {path[:100]!r}")
    return route


def split_root(path: str, root: str) -> tuple[str, str]:
    """(root path as sent, the rest to route) of a request path under the prefix `root` (a
    --root-path, e.g. /ml); ("", path) for a path without it, which is routed as it is.

    Leading slashes are read as match() reads them, so `//ml/v2/...` is under /ml as well.
    """
    rest = "/" + path.lstrip("/")
    if rest.startswith(root) and (len(rest) == len(root) or rest[len(root)] == "/"):
        rest = rest[len(root) :]
        return path[: len(path) - len(rest)], rest or "/"
    return "", path


def _v2(parts: list[str]) -> Route | None:
    if not parts:
        return Route("v2", "predict", "GET")
    if parts == ["health", "live"]:
        return Route("v2/health/live", None)
    if parts == ["health", "ready"]:
        return Route("v2/health/ready", "predict")
    if parts == ["repository", "index"]:
        return Route("v2/repository/index", "admin", "POST")
    if len(parts) == 4 and parts[:2] == ["repository", "models"] and parts[3] in ("load", "unload"):
        return Route(f"v2/repository/{parts[3]}", "admin", "POST", model=parts[2])
    if len(parts) == 4 and parts[:2] == ["repository", "models"] and parts[3] in ("split", "shadow"):
        # GET reads the rollout, POST sets, DELETE removes: the handler checks the method.
        return Route(f"v2/repository/{parts[3]}", "admin", None, model=parts[2])
    if len(parts) < 2 or parts[0] != "models" or not parts[1]:
        return None
    model, rest, version = parts[1], parts[2:], None
    if rest[:1] == ["versions"]:
        if len(rest) < 2 or not rest[1]:
            return None
        version, rest = rest[1], rest[2:]
    if not rest:
        return Route("v2/models/metadata", "predict", "GET", model, version)
    if rest == ["ready"]:
        return Route("v2/models/ready", "predict", "GET", model, version)
    if rest == ["infer"]:
        return Route("v2/models/infer", "predict", "POST", model, version)
    return None


def _v1(parts: list[str]) -> Route | None:
    """TF-Serving: models/NAME[/versions/V][:predict]."""
    if not parts:
        return None
    last, _, verb = parts[-1].partition(":")
    parts = [*parts[:-1], last]
    if len(parts) == 1:
        model, version = parts[0], None
    elif len(parts) == 3 and parts[1] == "versions":
        model, version = parts[0], parts[2]
    else:
        return None
    if not model or version == "":
        return None
    if not verb:
        return Route("v1/models/status", "predict", "GET", model, version)
    if verb == "predict":
        return Route("v1/models/predict", "predict", "POST", model, version)
    return Route(UNMATCHED, "predict", error=f"unsupported verb :{verb[:20]} (only :predict)")


# OpenAI-compatible routes: the model is named in the body. GET /v1/models/{m} is TF-Serving's
# status route, whose answer also carries OpenAI's model fields.
_OPENAI = {
    ("models",): ("openai/models", "GET"),
    ("embeddings",): ("openai/embeddings", "POST"),
    ("completions",): ("openai/completions", "POST"),
    ("chat", "completions"): ("openai/chat", "POST"),
}


def _openai(parts: list[str]) -> Route | None:
    found = _OPENAI.get(tuple(parts))
    return Route(found[0], "predict", found[1]) if found else None

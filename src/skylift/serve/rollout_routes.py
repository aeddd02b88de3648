"""The admin routes of rollouts: GET, POST and DELETE /v2/repository/models/{m}/split and .../shadow.

GET answers the model's rollout as the shared state holds it; POST sets the split (or the shadow),
DELETE removes it, on every replica (see Repository.admin_rollout). The route table gives them the
admin scope and the App audits each call; the audit line says what the change left in place.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import orjson

from skylift.serve.codec import _loads
from skylift.serve.rollout import Rollout
from skylift.serve.shadow import ShadowSpec
from skylift.serve.splits import Split

if TYPE_CHECKING:
    from skylift.serve.app import Answer, App, Receive
    from skylift.serve.routes import Route

AUDITED = "skylift.audit"
"""Scope key: what an admin action did, for its audit line (the App's default: the action's name)."""
JSON = (b"content-type", b"application/json")
_METHODS = ("GET", "POST", "DELETE")


class RolloutRoutes:
    def __init__(self, app: App) -> None:
        self.app = app

    def handlers(self) -> dict[str, Callable[[Route, dict[str, Any], Receive], Awaitable[Answer]]]:
        return {"v2/repository/split": self.split, "v2/repository/shadow": self.shadow}

    async def split(self, route: Route, scope: dict[str, Any], receive: Receive) -> Answer:
        """POST {"weights": {"1": 90, "2": 10}, "sticky_header", "guard"} sets the split; DELETE
        removes it (every request to the served version)."""
        method, body = await self._request(scope, receive)
        split = Split.from_json(body) if method == "POST" else None
        return await self._answer(route, scope, method, lambda r: r.with_split(split))

    async def shadow(self, route: Route, scope: dict[str, Any], receive: Receive) -> Answer:
        """POST {"version": 3, "queue": 256} sets the shadow; DELETE removes it."""
        method, body = await self._request(scope, receive)
        shadow = ShadowSpec.from_json(body) if method == "POST" else None
        return await self._answer(route, scope, method, lambda r: r.with_shadow(shadow))

    async def _request(self, scope: dict[str, Any], receive: Receive) -> tuple[str, Any]:
        """(method, the JSON body of a POST or None); 405 for another method."""
        method = scope["method"]
        if method not in _METHODS:
            from skylift.serve.app import Reply  # the App's early answer; it imports this module

            allow = ((b"allow", ", ".join(_METHODS).encode()),)
            raise Reply(405, f"method {method} not allowed here (use GET, POST or DELETE)", allow)
        body = await self.app._read(scope, receive)
        return method, _loads(body) if method == "POST" else None

    async def _answer(
        self, route: Route, scope: dict[str, Any], method: str, change: Callable[[Rollout], Rollout]
    ) -> Answer:
        app, name = self.app, route.model or ""
        if method == "GET":
            app._lookup(name, None)  # 404 for a model not served
            rollout = app.repo.read_state().rollouts.get(name, Rollout(name))
        else:
            rollout = await app.repo.admin_rollout(name, change)
            scope[AUDITED] = f"{route.name.rsplit('/', 1)[-1]} {name}: {rollout.describe()}"
        answer = {"model": name, "version": app.repo.models[name].version, **rollout.to_json()}
        return 200, orjson.dumps(answer), [JSON]

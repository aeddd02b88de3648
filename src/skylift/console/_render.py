"""HTML pages from the package's Jinja2 templates; every value is escaped (autoescape on)."""

from __future__ import annotations

import datetime as dt
import math
import time
from functools import cache
from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse

from skylift.console._sessions import Session


@cache
def _environment() -> Any:
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("skylift.console", "templates"),
        autoescape=True,  # every template is HTML: a run name or class label is text, never markup
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(num=num, ago=ago, seconds=seconds, utc=utc, pagedata=pagedata)
    return env


def pagedata(obj: Any) -> Any:
    """JSON for a <script type="application/json"> block: '<', '>', '&' and quotes escaped, so no
    value can close the block; NaN and infinities as null."""
    from jinja2.utils import htmlsafe_json_dumps

    from skylift.console._http import finite

    return htmlsafe_json_dumps(finite(obj), allow_nan=False)


def num(value: Any, digits: int = 4) -> str:
    """A metric as text: 4 significant decimals, '-' for nothing."""
    if value is None or isinstance(value, bool):
        return "-"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float) and abs(value) >= 1000:
        return f"{value:,.1f}"
    if isinstance(value, float):
        return (
            "-"
            if not math.isfinite(value)
            else f"{value:.{digits}g}"
            if abs(value) < 1e-3
            else f"{value:.{digits}f}"
        )
    return str(value)


def seconds(value: float | None) -> str:
    if value is None:
        return "-"
    if value < 60:
        return f"{value:.1f} s"
    minutes, secs = divmod(int(value), 60)
    return f"{minutes} min {secs:02d} s" if minutes < 60 else f"{minutes // 60} h {minutes % 60:02d} min"


def ago(stamp: float | None) -> str:
    if not stamp:
        return "-"
    return seconds(max(0.0, time.time() - stamp)) + " ago"


def utc(value: Any) -> str:
    try:
        when = (
            dt.datetime.fromisoformat(str(value))
            if not isinstance(value, int | float)
            else (dt.datetime.fromtimestamp(value, dt.UTC))
        )
        return when.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    except (ValueError, OverflowError, OSError):
        return "?"


def render(request: Request, template: str, status: int = 200, **context: Any) -> HTMLResponse:
    session: Session | None = getattr(request.state, "session", None)
    page = (
        _environment()
        .get_template(template)
        .render(
            request=request,
            session=session,
            login=request.app.state.sessions.login,
            path=request.url.path,
            **context,
        )
    )
    return HTMLResponse(page, status_code=status, headers={"Cache-Control": "no-store"})

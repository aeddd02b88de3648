"""`skylift console`: a local web app over SKYLIFT_HOME (runs, studies, models, endpoints).

A thin layer over the library: run folders, `skylift.registry`, Optuna's study journals, the key
store, and `skylift.endpoints` for the running servers, whose public HTTP API the playground calls
(the serving package itself is never imported). Loopback by default; any other address, or
`require_key`, needs an API key to sign in, and promote / delete need the `admin` scope.
"""

from __future__ import annotations

from skylift.console._config import ConsoleConfig
from skylift.console._server import serve_console

__all__ = ["ConsoleConfig", "create_app", "serve_console"]


def create_app(config: ConsoleConfig) -> object:
    """The console's ASGI app, for running it under another ASGI server."""
    from skylift.console._app import create_app as make

    config.check()
    return make(config)

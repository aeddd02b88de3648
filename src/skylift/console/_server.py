"""Running the console: bind, say where, serve until Ctrl-C or SIGTERM (uvicorn, one process)."""

from __future__ import annotations

import socket
from collections.abc import Callable

from skylift.console._config import ConsoleConfig
from skylift.errors import SkyliftError
from skylift.network import is_loopback


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise SkyliftError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    sock.listen(128)
    return sock


def serve_console(config: ConsoleConfig, say: Callable[[str], None] = print) -> int:
    """Serve the console until interrupted; raises SpecError before binding on unsafe settings."""
    config.check()
    import uvicorn

    from skylift.console._app import create_app

    app = create_app(config)
    sock = _listen(config.host, config.port)
    port = sock.getsockname()[1]
    scheme = "https" if config.tls_cert else "http"
    shown = f"[{config.host}]" if ":" in config.host else config.host
    if config.login:
        access = f"sign-in with an API key from {config.keys} (admin scope for promote and delete)"
    else:
        access = "no sign-in: anyone who can reach this loopback port may act (--require-key asks for a key)"
    say(f"skylift console on {scheme}://{shown}:{port} over {config.home}; {access}")
    if not is_loopback(config.host) and scheme == "http":
        say("warning: API keys travel in clear text over plain HTTP: give --tls-cert/--tls-key")
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            log_level="warning",
            access_log=False,
            server_header=False,
            ssl_certfile=str(config.tls_cert) if config.tls_cert else None,
            ssl_keyfile=str(config.tls_key) if config.tls_key else None,
            timeout_graceful_shutdown=5,
        )
    )
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
    return 0

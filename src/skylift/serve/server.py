"""`skylift serve`: a supervisor holding the listening socket and N replica processes serving on it.

The supervisor binds the port once and keeps it open, so while a replica starts, recycles or is
replaced, connections wait in the backlog instead of being refused. It restarts a replica that
dies and replaces one that recycles itself: past --max-requests or --max-rss-mb a replica stops
accepting, finishes its in-flight requests and exits with RECYCLE (not counted as a crash). On
SIGTERM/SIGINT it drains every replica before exiting.
"""

from __future__ import annotations

import asyncio
import math
import multiprocessing
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

from skylift.errors import SkyliftError
from skylift.serve.config import ServeConfig
from skylift.serve.ratelimit import SharedBuckets, shared_buckets

RECYCLE = 64  # a replica's exit code asking to be replaced (past --max-requests or --max-rss-mb)
DRAIN_S = 30  # graceful shutdown budget for in-flight requests
RSS_CHECK_S = 1.0  # how often a replica compares its resident memory with --max-rss-mb


def _replica(config: ServeConfig, sock: socket.socket, index: int, buckets: SharedBuckets) -> None:
    """Entry point of one replica process."""
    import torch
    import uvicorn
    import uvloop

    from skylift.data._tokenizer import limit_threads
    from skylift.serve.app import App
    from skylift.serve.cache import make_cache
    from skylift.serve.metrics import Metrics, rss_bytes
    from skylift.serve.ratelimit import RateLimiter
    from skylift.serve.repository import Repository

    torch.set_num_threads(config.threads)
    limit_threads(config.threads)  # the tokenizers' thread pool, for text models
    metrics = Metrics(index, config.state_dir)
    repo = Repository(config, metrics)
    app = App(config, repo, metrics)
    app.limiter = RateLimiter(buckets)
    http: Any = "httptools"
    if config.tls_cert and config.tls_key:  # TLS by skylift.serve.https, which answers plain HTTP too
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

        from skylift.serve.https import https_only

        http = https_only(config.tls_cert, config.tls_key, HttpToolsProtocol)
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            loop="uvloop",
            http=http,
            lifespan="off",
            access_log=False,
            log_level="warning",
            timeout_graceful_shutdown=DRAIN_S,
            server_header=False,
            date_header=False,
            backlog=2048,
        )
    )
    recycled = False
    rss_limit = config.max_rss_mb * 2**20
    next_rss_check = math.inf  # set once serving: a replica serves at least RSS_CHECK_S before recycling

    def recycle(why: str) -> None:
        nonlocal recycled
        recycled = True
        print(f"skylift serve: replica {index} {why}; recycling it", file=sys.stderr, flush=True)
        # Stop accepting now (uvicorn notices should_exit only on its next 0.1 s tick); the
        # supervisor keeps the port open, so new connections wait for the fresh replica.
        for listener in server.servers:
            listener.close()
        server.should_exit = True  # finish in-flight requests, then exit for a fresh replica

    def count() -> None:
        nonlocal next_rss_check
        if recycled:
            return
        if config.max_requests and app.served >= config.max_requests:
            recycle(f"served --max-requests {config.max_requests}")
        elif rss_limit and time.monotonic() >= next_rss_check:
            # Checked after a response, like --max-requests, so no request is cut off; at most
            # once per RSS_CHECK_S, as reading /proc costs more than a request's bookkeeping.
            next_rss_check = time.monotonic() + RSS_CHECK_S
            rss = rss_bytes()
            if rss > rss_limit:
                recycle(f"uses {rss / 2**20:.0f} MiB, past --max-rss-mb {config.max_rss_mb}")

    app.on_request = count

    async def main() -> None:
        nonlocal next_rss_check
        await repo.sync()  # verified load + warm-up before this replica accepts a connection
        next_rss_check = time.monotonic() + RSS_CHECK_S
        app.cache = make_cache(config.cache, config.cache_mb)
        if app.cache is not None:
            await app.cache.check()  # says so in one line when Redis is down from the start
            repo.on_swap = app.cache.invalidate
        watcher = asyncio.get_running_loop().create_task(repo.watch(app.cache))
        try:
            await server.serve(sockets=[sock])
        finally:
            watcher.cancel()
            if app.cache is not None:
                await app.cache.close()

    # uvicorn's loop="uvloop" applies only when uvicorn runs the loop itself; here we do.
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main())
    sys.exit(RECYCLE if recycled else 0)


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP, not 0: asyncio turns TCP_NODELAY on only for sockets that say they are TCP;
    # without it every keep-alive response waited ~40 ms for the client's delayed ACK (Nagle).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # inherited by accepted sockets
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise SkyliftError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def _initial_state(config: ServeConfig) -> dict[str, dict[str, object]]:
    """Resolve and verify every requested model before any replica starts; one line on failure."""
    from skylift.errors import IntegrityError
    from skylift.registry import Registry
    from skylift.serve.runtimes import check_servable

    registry = Registry(config.home, config.master_key)
    models: dict[str, dict[str, object]] = {}
    for ref in config.models:
        name, version = registry.resolve(ref)
        checked = registry.check(f"{name}:{version}")  # every file hashed once, here
        if checked.problems:
            raise IntegrityError(f"{name}:{version}: {checked.problems[0]}")
        if name in models:
            raise SkyliftError(f"model {name} is given twice; serve one version per model name")
        check_servable(checked.info, f"{name}:{version}", config.runtime)
        models[name] = {"ref": ref, "version": version}
    return models


class Supervisor:
    def __init__(self, config: ServeConfig, say: Callable[[str], None] = print) -> None:
        self.config = config
        self.say = say
        self.procs: list[BaseProcess | None] = [None] * config.replicas
        self.stopping = False
        self.crashes: list[float] = []
        self.buckets = shared_buckets(config.state_dir)

    def _start(self, sock: socket.socket, index: int) -> None:
        ctx = multiprocessing.get_context("spawn")
        proc = ctx.Process(
            target=_replica, args=(self.config, sock, index, self.buckets), name=f"skylift-replica-{index}"
        )
        proc.start()
        self.procs[index] = proc

    def run(self) -> int:
        from skylift.serve.repository import STATE_FILE

        config = self.config
        models = _initial_state(config)
        from skylift import _atomic

        _atomic.write_json(config.state_dir / STATE_FILE, {"generation": 0, "models": models})
        sock = _listen(config.host, config.port)
        port = sock.getsockname()[1]
        served = ", ".join(f"{n}:{m['version']} (as {m['ref']})" for n, m in models.items())
        scheme = "https" if config.tls_cert else "http"
        auth = "no auth (loopback only)" if config.no_auth else f"API keys from {config.keys}"
        self.say(
            f"serving {served} on {scheme}://{config.host}:{port} with {config.replicas} replica(s), {auth}"
        )
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)
        from skylift import endpoints  # `skylift console` lists this server while it runs

        listed = endpoints.record(
            config.home,
            config.host,
            port,
            models=models,
            replicas=config.replicas,
            auth=not config.no_auth,
            tls=config.tls_cert is not None,
        )
        try:
            for i in range(config.replicas):
                self._start(sock, i)
            while not self.stopping:
                time.sleep(0.2)
                for i, proc in enumerate(self.procs):
                    if proc is None or self.stopping:
                        continue
                    if not proc.is_alive():
                        code = proc.exitcode
                        if code == RECYCLE:
                            self.say(f"replica {i} recycled; starting a new one")
                        else:
                            self.say(f"replica {i} exited ({_how(code)}); starting a new one")
                            self._crashed()
                        self._start(sock, i)
        finally:
            self._drain()
            sock.close()
            endpoints.remove(listed)
        return 0

    def _crashed(self) -> None:
        now = time.monotonic()
        self.crashes = [t for t in self.crashes if now - t < 30] + [now]
        if len(self.crashes) > 3 * self.config.replicas:
            raise SkyliftError("replicas keep dying (more than 3 per replica in 30 s); giving up")

    def _on_signal(self, signum: int, frame: object) -> None:
        self.stopping = True

    def _drain(self) -> None:
        """SIGTERM every replica (uvicorn finishes in-flight requests), then wait, then kill stragglers."""
        live = [p for p in self.procs if p is not None and p.is_alive()]
        for p in live:
            if p.pid:
                os.kill(p.pid, signal.SIGTERM)
        deadline = time.monotonic() + DRAIN_S + 5
        for p in live:
            p.join(max(0.1, deadline - time.monotonic()))
            if p.is_alive():
                p.kill()
                p.join(5)


def _how(code: int | None) -> str:
    if code is None:
        return "unknown"
    if code < 0:
        return f"killed by {signal.Signals(-code).name}"
    return f"exit code {code}"


def serve(
    config: ServeConfig, say: Callable[[str], None] = print, self_signed_hosts: tuple[str, ...] = ()
) -> int:
    """Run the server until SIGTERM/SIGINT; blocks. Raises SkyliftError before start on bad settings.

    `self_signed_hosts`: make a fresh self-signed TLS certificate for these names (kept in
    SKYLIFT_HOME/tls/ so clients can verify it) and serve HTTPS with it.
    """
    if self_signed_hosts:
        from skylift.security.tls import self_signed

        folder = config.home / "tls"
        folder.mkdir(parents=True, exist_ok=True)
        cert, key, fingerprint = self_signed(folder, self_signed_hosts)
        say(f"self-signed TLS certificate {cert} for {', '.join(self_signed_hosts)}; SHA-256 {fingerprint}")
        config = replace(config, tls_cert=cert, tls_key=key)
    config.check()
    state = Path(tempfile.mkdtemp(prefix="skylift-serve-"))
    try:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        # Resolved here, once: replicas must not each read the environment.
        config = replace(
            config,
            state_dir=state,
            threads=max(1, cores // config.replicas),
            keys_path=config.keys,
            audit_log=config.audit,
        )
        return Supervisor(config, say).run()
    finally:
        shutil.rmtree(state, ignore_errors=True)

"""`skylift serve`: a supervisor holding the listening socket and N replica processes serving on it.

The supervisor binds the port once and keeps it open, so while a replica starts, recycles or is
replaced, connections wait in the backlog instead of being refused. It restarts a replica that
dies and replaces one that recycles itself: past --max-requests or --max-rss-mb a replica stops
accepting, finishes its in-flight requests and exits with RECYCLE (not counted as a crash). On
SIGTERM/SIGINT it drains every replica before exiting.

With --replicas MIN:MAX it also scales the pool (skylift.serve.autoscale decides, and
skylift.serve.pool carries the load figures and the signals): every TICK_S it reads the load
counters in the replicas' metrics snapshots, starts replicas (a new one accepts only once loaded
and warmed up; SHED then asks the others to hand it a share of their keep-alive connections), and
on a scale-down sends LEAVE to the newest one, which stops accepting and closes each keep-alive
connection after its next response, so clients reconnect to the others and no request fails.
"""

from __future__ import annotations

import asyncio
import functools
import math
import multiprocessing
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

from skylift._cpus import usable_cores
from skylift.errors import SkyliftError
from skylift.serve import pool
from skylift.serve.autoscale import (
    TICK_S,
    Autoscaler,
    Limits,
    Load,
    Observation,
    Sample,
    most_replicas,
    pool_load,
    replica_load,
)
from skylift.serve.config import ServeConfig
from skylift.serve.pool import DRAIN_S, LEAVE, SHED
from skylift.serve.ratelimit import SharedBuckets, shared_buckets

RECYCLE = 64  # a replica's exit code asking to be replaced (past --max-requests or --max-rss-mb)
RSS_CHECK_S = 1.0  # how often a replica compares its resident memory with --max-rss-mb


def _replica(config: ServeConfig, sock: socket.socket, index: int, buckets: SharedBuckets) -> None:
    """Entry point of one replica process."""
    for sig in (LEAVE, SHED):  # their default kills; the supervisor sends them only once serving
        signal.signal(sig, signal.SIG_IGN)
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
            # Forwarded headers are believed only from --forwarded-allow-ips (uvicorn's middleware,
            # not installed without it). Both given explicitly: uvicorn's defaults trust loopback
            # and read FORWARDED_ALLOW_IPS, which must not turn trust on behind the user's back.
            proxy_headers=bool(config.forwarded_allow_ips),
            forwarded_allow_ips=list(config.forwarded_allow_ips),
            # --root-path is applied by App (see App._unprefixed), not by uvicorn's root_path.
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
        loop = asyncio.get_running_loop()
        watcher = loop.create_task(repo.watch(app.cache))
        prober = loop.create_task(pool.probe(metrics, repo))
        leaving: list[asyncio.Task[None]] = []  # a reference, so the loop keeps the task

        def leave() -> None:
            if not leaving:
                leaving.append(loop.create_task(pool.leave(server)))

        loop.add_signal_handler(LEAVE, leave)
        loop.add_signal_handler(SHED, pool.shed, server, config.state_dir)
        try:
            await server.serve(sockets=[sock])
        finally:
            watcher.cancel()
            prober.cancel()
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


@dataclass
class _Replica:
    proc: BaseProcess
    since: float
    """When it entered its state (monotonic seconds)."""
    state: str = "starting"
    """starting (loading, warming up), serving, or draining (leaving the pool)."""
    samples: deque[Sample] = field(default_factory=deque)
    """Its load counters over the last window, one per metrics snapshot."""


class Supervisor:
    def __init__(self, config: ServeConfig, say: Callable[[str], None] = print) -> None:
        self.config = config
        self.say = say
        self.limits = _limits(config)
        self.replicas: list[_Replica | None] = [None] * self.limits.high
        """One slot per replica index (the `replica` label of its metrics); None: not running."""
        self.stopping = False
        self.crashes: list[float] = []
        self.buckets = shared_buckets(config.state_dir)
        self.scaler = Autoscaler(self.limits, time.monotonic())
        self.last_decision_time = 0.0
        """Unix time of the scaler's last decision, for /metrics."""

    def _start(self, sock: socket.socket, index: int) -> None:
        ctx = multiprocessing.get_context("spawn")
        proc = ctx.Process(
            target=_replica, args=(self.config, sock, index, self.buckets), name=f"skylift-replica-{index}"
        )
        proc.start()
        self.replicas[index] = _Replica(proc, time.monotonic())

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
        threads = f"{config.threads} torch thread(s)"
        if config.adapt_threads:
            threads = f"1-{config.threads} torch threads, whichever measures faster (--threads fixes it)"
        self.say(
            f"serving {served} on {scheme}://{config.host}:{port} with {config.replicas} replica(s) "
            f"of {threads}, {auth}"
        )
        if config.forwarded_allow_ips or config.root_path:
            trusted = ",".join(config.forwarded_allow_ips) or "none"
            self.say(
                f"behind a proxy: X-Forwarded-For believed from {trusted}; "
                f"root path {config.root_path or '/'}"
            )
        lim = self.limits
        if config.autoscales:
            self.say(
                f"autoscaling {lim.low}-{lim.high} replicas: up when the queue wait passes "
                f"{lim.up_wait_s * 1000:g} ms or {lim.up_rows:g} queued rows per replica over "
                f"{lim.window_s:g} s, down after {lim.down_idle_s:g} s under half of both"
            )
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)
        from skylift import endpoints  # `skylift console` lists this server while it runs

        listing = functools.partial(
            endpoints.record,
            config.home,
            config.host,
            port,
            models=models,
            replicas=config.replicas,
            auth=not config.no_auth,
            tls=config.tls_cert is not None,
            started=time.time(),
        )
        listed = listing()
        try:
            for i in range(config.replicas):
                self._start(sock, i)
            next_tick = time.monotonic()
            next_beat = next_tick + endpoints.HEARTBEAT_S
            while not self.stopping:
                time.sleep(0.2)
                self._reap(sock)
                if time.monotonic() >= next_tick and not self.stopping:
                    next_tick = time.monotonic() + TICK_S
                    self._tick(sock)
                if time.monotonic() >= next_beat:  # consoles on other hosts go by the record's mtime
                    next_beat = time.monotonic() + endpoints.HEARTBEAT_S
                    if not endpoints.heartbeat(listed):
                        listed = listing()
        finally:
            self._drain()
            sock.close()
            endpoints.remove(listed)
        return 0

    def _reap(self, sock: socket.socket) -> None:
        """Restart a replica that died or recycled itself; free the slot of one that drained."""
        for i, rep in enumerate(self.replicas):
            if rep is None or self.stopping or rep.proc.is_alive():
                continue
            if rep.state == "draining":
                self.replicas[i] = None
                (self.config.state_dir / f"metrics-{i}.json").unlink(missing_ok=True)
                self.say(f"replica {i} drained in {time.monotonic() - rep.since:.1f} s and left the pool")
                continue
            code = rep.proc.exitcode
            if code == RECYCLE:
                self.say(f"replica {i} recycled; starting a new one")
            else:
                self.say(f"replica {i} exited ({_how(code)}); starting a new one")
                self._crashed()
            self._start(sock, i)

    def _tick(self, sock: socket.socket) -> None:
        """Read the replicas' load, let the scaler decide, start or drain replicas, publish metrics."""
        now = time.monotonic()
        loads: list[Load] = []
        for i, rep in enumerate(self.replicas):
            if rep is None or rep.state == "draining":
                continue
            sample = pool.read_sample(self.config.state_dir / f"metrics-{i}.json", rep.proc.pid)
            if sample is not None and (not rep.samples or sample.t > rep.samples[-1].t):
                rep.samples.append(sample)
                while len(rep.samples) > 2 and rep.samples[1].t <= sample.t - self.limits.window_s:
                    rep.samples.popleft()
                if rep.state == "starting":  # its first snapshot: loaded, warmed up, accepting
                    self._joined(i, rep, now)
            # A busy replica may miss a snapshot (it writes them from its event loop): its last
            # window still stands for it, rather than the pool's mean forgetting it.
            if rep.state == "serving" and (load := replica_load(rep.samples[0], rep.samples[-1])):
                loads.append(load)
        serving = self._count("serving")
        observed = Observation(now, serving, self._count("starting"), pool_load(loads))
        decision = self.scaler.observe(observed)
        if decision is not None:
            self.last_decision_time = time.time()
            line = f"autoscale: {decision.before} -> {decision.after} replicas: {decision.reason}"
            if decision.direction == "down":
                line += f"; draining replica {self._leave_one(now)}"
            self.say(line)
        active = serving + self._count("starting")
        for i, rep in enumerate(self.replicas):  # scale up, into the lowest free indices
            if active >= self.scaler.target:
                break
            if rep is None:
                self._start(sock, i)
                active += 1
        self._publish()

    def _joined(self, index: int, rep: _Replica, now: float) -> None:
        """A started replica serves: others hand it a share of their keep-alive connections."""
        if self.config.autoscales:
            self.say(f"replica {index} serving, {now - rep.since:.1f} s after its start")
        rep.state, rep.since = "serving", now
        others = [r for r in self.replicas if r is not None and r is not rep and r.state == "serving"]
        if others:
            self._publish()  # the count that SHED reads
            for other in others:
                if other.proc.pid:
                    os.kill(other.proc.pid, SHED)

    def _leave_one(self, now: float) -> int:
        """Drain the newest serving replica (the coldest response cache); its index."""
        index, rep = max(
            ((i, r) for i, r in enumerate(self.replicas) if r is not None and r.state == "serving"),
            key=lambda pair: pair[1].since,
        )
        rep.state, rep.since = "draining", now
        if rep.proc.pid:
            os.kill(rep.proc.pid, LEAVE)
        return index

    def _count(self, state: str) -> int:
        return sum(1 for r in self.replicas if r is not None and r.state == state)

    def _publish(self) -> None:
        counts = {state: self._count(state) for state in ("serving", "starting", "draining")}
        pool.write_status(self.config.state_dir, self.scaler, counts, self.last_decision_time)

    def _crashed(self) -> None:
        now = time.monotonic()
        self.crashes = [t for t in self.crashes if now - t < 30] + [now]
        if len(self.crashes) > 3 * self.limits.high:
            raise SkyliftError("replicas keep dying (more than 3 per replica in 30 s); giving up")

    def _on_signal(self, signum: int, frame: object) -> None:
        self.stopping = True

    def _drain(self) -> None:
        """SIGTERM every replica (uvicorn finishes in-flight requests), then wait, then kill stragglers."""
        live = [r.proc for r in self.replicas if r is not None and r.proc.is_alive()]
        for p in live:
            if p.pid:
                os.kill(p.pid, signal.SIGTERM)
        deadline = time.monotonic() + DRAIN_S + 5
        for p in live:
            p.join(max(0.1, deadline - time.monotonic()))
            if p.is_alive():
                p.kill()
                p.join(5)


def _limits(config: ServeConfig) -> Limits:
    return Limits(
        low=config.replicas,
        high=max(config.replicas, config.max_replicas),
        up_wait_s=config.scale_up_wait_ms / 1000,
        up_rows=config.scale_up_rows or 2 * config.max_batch_rows,
        down_idle_s=config.scale_down_idle_s,
    )


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
        cores = usable_cores()
        most = most_replicas(config.replicas, config.max_replicas, cores, config.oversubscribe)
        if config.autoscales and most < config.max_replicas:
            say(
                f"--replicas {config.replicas}:{config.max_replicas} scales to {most} at most: "
                f"this machine has {cores} cores (--oversubscribe lifts the cap)"
            )
            config = replace(config, max_replicas=most)
        # Resolved here, once: replicas must not each read the environment. Torch threads are
        # split for the most replicas that may run, so a scaled-up pool does not oversubscribe;
        # without --threads each model thread then runs at the count that measures fastest.
        threads = config.threads or max(1, cores // max(config.replicas, config.max_replicas))
        config = replace(
            config,
            state_dir=state,
            threads=threads,
            adapt_threads=not config.threads and threads > 1 and config.runtime == "torch",
            keys_path=config.keys,
            audit_log=config.audit,
        )
        return Supervisor(config, say).run()
    finally:
        shutil.rmtree(state, ignore_errors=True)

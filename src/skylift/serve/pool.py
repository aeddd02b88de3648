"""How the supervisor and its replicas talk about load and membership, without a word per request.

Replica side: `probe` sums the event loop's lag and the rows queued in the batchers into counters
that ride the replica's metrics snapshots (`read_sample` reads them back in the supervisor). Two
signals change a replica's membership: LEAVE (scale-down) makes it stop accepting and close every
keep-alive connection after its next response, then exit; SHED (another replica joined) makes it
close 1/N of its connections so. Clients see "Connection: close" and reconnect; the shared socket
hands the new connection to a replica that accepts. An idle connection is never closed under a
client (it may be sending its next request that very moment): uvicorn's 5 s keep-alive timeout
closes those, as always. Supervisor side: `status` writes the pool's series for /metrics.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from skylift import _atomic
from skylift.serve.autoscale import Autoscaler, Sample
from skylift.serve.metrics import SUPERVISOR_FILE

if TYPE_CHECKING:
    from skylift.serve.metrics import Metrics
    from skylift.serve.repository import Repository

PROBE_S = 0.05  # the load probe's period: 20 wake-ups a second, ~2 ms of CPU a second (0.2% of a core)
LEAVE = signal.SIGUSR1  # to a replica: leave the pool without failing a request (scale-down)
SHED = signal.SIGUSR2  # to a replica: hand a share of your keep-alive connections to a new one
DRAIN_S = 30  # graceful shutdown budget for in-flight requests (and a leaving replica's connections)


async def probe(metrics: Metrics, repo: Repository) -> None:
    """Every PROBE_S add the event loop's lag and the rows queued in the batchers to counters."""
    metrics.extra["load_probes_total"] = 0
    metrics.extra["load_lag_seconds_total"] = 0.0
    metrics.extra["load_queued_rows_total"] = 0
    while True:
        await asyncio.sleep(PROBE_S)
        # One trip through the loop's ready queue: what a request read off its socket now waits
        # for the loop (a timer's lateness would be blurred by uvloop's 1 ms timer resolution).
        start = time.monotonic()
        await asyncio.sleep(0)
        metrics.extra["load_lag_seconds_total"] += time.monotonic() - start
        queued = sum(m.runtime.inputs.queued_rows for m in repo.models.values())
        metrics.extra["load_queued_rows_total"] += queued
        metrics.extra["load_probes_total"] += 1


def read_sample(path: Path, pid: int | None) -> Sample | None:
    """The load counters in a replica's metrics snapshot, if `pid` wrote it (not its predecessor)."""
    try:
        snap = json.loads(path.read_text())
        if snap.get("pid") != pid:
            return None
        extra = snap["extra"]
        return Sample(
            t=float(snap["time"]),
            probes=int(extra["load_probes_total"]),
            lag_s=float(extra["load_lag_seconds_total"]),
            queued_rows=float(extra["load_queued_rows_total"]),
            rows=int(snap["batch_rows"]),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None  # being replaced, or written before its probe started


def _closing(app: Any) -> Any:
    """`app` answering with "Connection: close": uvicorn then closes the connection after the response."""
    if getattr(app, "closes_connections", False):
        return app

    async def closing(scope: dict[str, Any], receive: Any, send: Any) -> None:
        async def send_closing(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", ()), (b"connection", b"close")]}
            await send(message)

        await app(scope, receive, send_closing)

    closing.closes_connections = True  # type: ignore[attr-defined]
    return closing


def _closes(conn: Any) -> bool:
    return bool(getattr(getattr(conn, "app", None), "closes_connections", False))


def _close_after_response(conn: Any) -> None:
    """Close a keep-alive connection after the response it is answering, or else after its next one."""
    if not hasattr(conn, "app"):
        return
    conn.app = _closing(conn.app)  # uvicorn's protocols read it for each new request
    cycle = getattr(conn, "cycle", None)
    if cycle is not None and not cycle.response_started:
        cycle.keep_alive = False  # uvicorn adds "connection: close" to this response itself


async def leave(server: Any) -> None:
    """LEAVE, in a replica: stop accepting (the others keep the shared socket), close each connection
    after its next response, and exit once none is left (DRAIN_S at most)."""
    for listener in server.servers:
        listener.close()
    server.config.loaded_app = _closing(server.config.loaded_app)  # for a TLS handshake under way
    deadline = time.monotonic() + DRAIN_S
    while server.server_state.connections and time.monotonic() < deadline:
        for conn in list(server.server_state.connections):
            if not _closes(conn):
                _close_after_response(conn)
        await asyncio.sleep(0.05)
    server.should_exit = True


def shed(server: Any, state_dir: Path) -> None:
    """SHED, in a replica: close 1/N of its keep-alive connections after their responses, N being
    the replicas serving now (the supervisor's file says), so their clients spread over all of them."""
    try:
        serving = int(json.loads((state_dir / SUPERVISOR_FILE).read_text())["serving"])
    except (OSError, ValueError, KeyError, TypeError):
        return
    kept = [c for c in server.server_state.connections if not _closes(c)]
    for conn in kept[: round(len(kept) / max(1, serving))]:
        _close_after_response(conn)


def write_status(state_dir: Path, scaler: Autoscaler, counts: dict[str, int], decided_at: float) -> None:
    """The pool's series for /metrics (any replica renders them), and the serving count SHED reads.

    `counts`: replicas by state (serving, starting, draining); `decided_at`: Unix time of the
    scaler's last decision."""
    lim = scaler.limits
    series: list[tuple[str, str, str, dict[str, str], float]] = [
        ("replicas", "gauge", "Replica processes by state.", {"state": k}, n) for k, n in counts.items()
    ]
    series += [
        ("replicas_target", "gauge", "Replicas the supervisor scales to.", {}, scaler.target),
        ("replicas_min", "gauge", "Fewest replicas (--replicas MIN:MAX).", {}, lim.low),
        ("replicas_max", "gauge", "Most replicas (--replicas MIN:MAX, at most the cores).", {}, lim.high),
    ]
    series += [
        ("autoscale_decisions_total", "counter", "Autoscaling decisions.", {"direction": d}, n)
        for d, n in scaler.counts.items()
    ]
    if (load := scaler.load) is not None:
        wait = "Mean queue wait per request over the last window (event loop lag + batcher wait)."
        series.append(("autoscale_queue_wait_seconds", "gauge", wait, {}, load.wait_s))
        rows = "Mean rows queued per replica over the last window."
        series.append(("autoscale_queued_rows", "gauge", rows, {}, load.queued_rows))
    if (last := scaler.last) is not None:
        labels = {"direction": last.direction, "from": str(last.before), "to": str(last.after)}
        text = "When the last autoscaling decision was taken (Unix time), and what it was."
        series.append(
            (
                "autoscale_last_decision_timestamp_seconds",
                "gauge",
                text,
                {**labels, "rule": last.rule},
                decided_at,
            )
        )
    _atomic.write_json(state_dir / SUPERVISOR_FILE, {"serving": counts["serving"], "series": series})

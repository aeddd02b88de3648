"""`run_bench`: probe the server, split the connections over client processes, run, merge.

Every process opens its connections first and reports ready; the parent then hands all of them
the same window (monotonic times: start, measure from, measure until), so the warm-up and the
measured seconds line up across processes. One process runs inline, without spawning.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from skylift.errors import SkyliftError
from skylift.loadgen._body import RequestTemplate, build_template, file_template, sample_rows
from skylift.loadgen._config import OPENAI_PROTOCOLS, BenchConfig, auto_processes
from skylift.loadgen._probe import discover, probe
from skylift.loadgen._report import BenchReport, merge
from skylift.loadgen._worker import (
    Plan,
    Window,
    new_event_loop,
    process_main,
    run_plan,
    ssl_context,
)

if TYPE_CHECKING:
    from multiprocessing.connection import Connection
    from multiprocessing.process import BaseProcess

_START_AFTER_S = 0.05  # from "all ready" to the first request: time for the "go" messages to land
_READY_TIMEOUT_S = 60.0  # a spawned process imports and connects within this


def run_bench(config: BenchConfig, *, log: Callable[[str], None] | None = None) -> BenchReport:
    """Run one load test against a live server and return its report.

    Raises SkyliftError (server unreachable, a client process failed), AuthError, ModelNotFound
    or SpecError before any load is sent; errors during the load are counted in the report."""
    say = log or (lambda _message: None)
    if config.protocol in OPENAI_PROTOCOLS:  # streamed generation: its own client and report
        from skylift.loadgen._openai import run_openai

        return run_openai(config, say)
    target = config.target
    ctx = ssl_context(config.insecure, config.cacert) if target.tls else None
    if config.body_file is not None:
        template, what = _file(config)
    else:
        spec = discover(config, ctx)
        x = sample_rows(config.rows, spec.row_shape, config.seed)
        template = build_template(
            config.protocol,
            target,
            config.model,
            x,
            input_name=spec.input_name,
            output_name=spec.output_name,
            api_key=config.api_key,
        )
        what = f"{list(x.shape)} (input shape from {spec.source})"
    probe(config, template, ctx)
    processes = min(config.processes or auto_processes(config.concurrency), config.concurrency)
    if config.requests is not None:
        processes = min(processes, config.requests)
    head = template.head()
    plans = [
        Plan(
            host=target.host,
            port=target.port,
            tls=target.tls,
            server_hostname=target.host,
            insecure=config.insecure,
            cacert=config.cacert,
            head=head,
            body=template.body,
            slot=template.slot,
            binary=template.binary,
            unique=config.unique and template.stamped,
            repeat_every=round(1 / config.repeat) if config.repeat > 0 else 0,
            connections=_share(config.concurrency, processes, i),
            quota=None if config.requests is None else _share(config.requests, processes, i),
            timeout_s=config.timeout_s,
            index=i,
            processes=processes,
        )
        for i in range(processes)
    ]
    say(
        f"{config.protocol} {what}, {len(head) + len(template.body):,} bytes a request, "
        f"to {config.url}: {config.concurrency} connections, "
        f"{processes} client process{'es' if processes > 1 else ''}, "
        f"{config.warmup_s:g} s warm-up + {config.duration_s:g} s"
    )
    windows: list[Window] = []

    def window() -> Window:
        start = time.monotonic() + _START_AFTER_S
        w = Window(start, start + config.warmup_s, start + config.warmup_s + config.duration_s)
        windows.append(w)
        return w

    results = _run_inline(plans[0], window) if processes == 1 else _run_spawned(plans, window, config)
    return merge(
        results,
        url=config.url,
        model=config.model,
        protocol=config.protocol,
        rows=config.rows,
        concurrency=config.concurrency,
        measure_from=windows[0].measure_from,
        request_bytes=len(head) + len(template.body),
    )


def _file(config: BenchConfig) -> tuple[RequestTemplate, str]:
    """The request of a --body-file, and how the log names it."""
    path = config.body_file or ""
    try:
        with open(path, "rb") as f:
            body = f.read()
    except OSError as exc:
        raise SkyliftError(f"cannot read {path}: {exc.strerror or exc}") from None
    template = file_template(
        config.protocol, config.target, config.model, body, config.body_type, config.api_key
    )
    # Identical bodies: a response cache in the server would answer all but the first.
    return template, f"{path} as {config.body_type} (the same body each time: serve with --cache none)"


def _share(total: int, parts: int, i: int) -> int:
    """Part i of `total` split as evenly as whole numbers allow."""
    return total // parts + (1 if i < total % parts else 0)


def _run_inline(
    plan: Any, window: Callable[[], Window], run: Callable[..., Awaitable[Any]] = run_plan
) -> list[Any]:
    """The plan run in this process (`run`: run_plan, or another mode's runner of its shape)."""
    loop, name = new_event_loop()

    async def gate() -> Window:
        return window()

    try:
        return [loop.run_until_complete(run(plan, gate, name))]
    except OSError as exc:
        raise SkyliftError(f"cannot connect to {plan.host}:{plan.port}: {exc.strerror or exc}") from None
    finally:
        loop.close()


def _run_spawned(
    plans: list[Any],
    window: Callable[[], Window],
    config: BenchConfig,
    run: Callable[..., Awaitable[Any]] = run_plan,
) -> list[Any]:
    # spawn, not fork: a fresh interpreter per client, whatever threads the caller has running.
    mp = multiprocessing.get_context("spawn")
    procs: list[BaseProcess] = []
    pipes: list[Connection] = []
    try:
        for plan in plans:
            parent, child = mp.Pipe()
            proc = mp.Process(target=process_main, args=(child, plan, run), daemon=True, name="skylift-bench")
            proc.start()
            child.close()
            procs.append(proc)
            pipes.append(parent)
        for pipe in pipes:
            _expect(pipe, "ready", _READY_TIMEOUT_S)
        w = window()
        for pipe in pipes:
            pipe.send(("go", w))
        wait = max(0.0, w.measure_until - time.monotonic()) + config.timeout_s + 30.0
        results: list[Any] = [_expect(pipe, "result", wait) for pipe in pipes]
        return results
    finally:
        for pipe in pipes:
            with contextlib.suppress(OSError):  # already gone
                pipe.send(("stop", None))
        for started in procs:
            started.join(timeout=5)
            if started.is_alive():
                started.terminate()
                started.join(timeout=5)
        for pipe in pipes:
            pipe.close()


def _expect(pipe: Connection, kind: str, timeout_s: float) -> Any:
    if not pipe.poll(timeout_s):
        raise SkyliftError(f"a client process sent no {kind!r} within {timeout_s:g} s")
    try:
        message: tuple[str, Any] = pipe.recv()
    except EOFError:
        raise SkyliftError("a client process exited unexpectedly") from None
    if message[0] == "error":
        raise SkyliftError(str(message[1]))
    return message[1]

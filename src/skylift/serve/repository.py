"""The models a worker serves: verified loads from the registry, warm-up, hot swap, and replica sync.

Replicas share one `repository.json` in the server's state folder; an admin load or unload on any
replica writes it (with the exact version it resolved) and every replica applies it within a poll
interval. A swapped-out model finishes the requests already queued on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from skylift import _atomic
from skylift.errors import ModelNotFound
from skylift.serve.runtimes import RUNTIMES, Context, Runtime, check_servable, kind_of
from skylift.serve.runtimes._base import Histogram

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from skylift.serve.cache import ResponseCache
    from skylift.serve.config import ServeConfig
    from skylift.serve.metrics import Metrics

STATE_FILE = "repository.json"


@dataclass
class ServedModel:
    name: str
    version: int
    requested: str
    """The reference the operator asked for, e.g. mnist-mlp@production."""
    runtime: Runtime
    """The model's kind: decodes its requests, runs its batches, encodes its answers."""
    info: dict[str, Any]
    in_flight: int = 0
    """Requests that looked this version up and have no answer yet; a swap retires it after them."""


class Repository:
    """name -> ServedModel for one worker process."""

    def __init__(self, config: ServeConfig, metrics: Metrics) -> None:
        self.config = config
        self.metrics = metrics
        self.models: dict[str, ServedModel] = {}
        self.generation = -1
        self.ready = False
        self._retiring: set[asyncio.Task[None]] = set()
        self.on_swap: Callable[[str], Awaitable[None]] | None = None
        """Called with a model's name when its version changes or it is unloaded (cache invalidation)."""

    @property
    def state_path(self) -> Path:
        return self.config.state_dir / STATE_FILE

    def _load(self, name: str, version: int, requested: str) -> ServedModel:
        from skylift.registry import Registry

        loaded = Registry(self.config.home, self.config.master_key).load(f"{name}:{version}")
        check_servable(loaded.info, loaded.ref, self.config.runtime)  # an admin load may name any version
        ctx = Context(name, version, loaded, self.config, self.metrics)
        runtime = RUNTIMES[kind_of(loaded.info)](ctx)
        return ServedModel(name, version, requested, runtime, loaded.info)

    def resolve(self, requested: str) -> tuple[str, int]:
        from skylift.registry import Registry

        return Registry(self.config.home, self.config.master_key).resolve(requested)

    async def apply(self, wanted: dict[str, dict[str, Any]]) -> None:
        """Serve exactly `wanted` (name -> {ref, version}): load new or changed, drop the rest."""
        loop = asyncio.get_running_loop()
        for name, want in wanted.items():
            current = self.models.get(name)
            if current and current.version == want["version"]:
                continue
            # Loading (hashing, decrypting, warm-up) runs off the event loop: requests keep flowing.
            model = await loop.run_in_executor(None, self._load, name, want["version"], want["ref"])
            model.runtime.start()
            self.models[name] = model
            if current:
                self._retire(current)
                await self._swapped(name)
        for name in [n for n in self.models if n not in wanted]:
            self._retire(self.models.pop(name))
            await self._swapped(name)

    async def _swapped(self, name: str) -> None:
        if self.on_swap is not None:
            await self.on_swap(name)

    def _retire(self, model: ServedModel) -> None:
        task = asyncio.get_running_loop().create_task(_retire(model))
        self._retiring.add(task)  # keep a reference until done (the loop holds only weak ones)
        task.add_done_callback(self._retiring.discard)

    def read_state(self) -> tuple[int, dict[str, dict[str, Any]]]:
        state = json.loads(self.state_path.read_text())
        return int(state["generation"]), state["models"]

    def write_state(self, models: dict[str, dict[str, Any]]) -> int:
        generation = self.read_state()[0] + 1 if self.state_path.exists() else 0
        _atomic.write_json(self.state_path, {"generation": generation, "models": models})
        return generation

    async def sync(self) -> None:
        """Apply the shared state if another replica (or start-up) changed it."""
        generation, models = self.read_state()
        if generation != self.generation:
            await self.apply(models)
            self.generation = generation
        self.ready = True

    @contextlib.contextmanager
    def _changing_state(self) -> Iterator[dict[str, dict[str, Any]]]:
        """The shared models, read under a lock for changing; written back when the block ends.

        Replicas change the state on admin requests: without the lock, two loads at the same moment
        on two replicas would each write their own read, and one load would be lost.
        """
        with open(self.state_path.with_name(self.state_path.name + ".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # held for a read and a write of a small file
            _, models = self.read_state()
            yield models
            self.generation = self.write_state(models)

    async def admin_load(self, requested: str) -> ServedModel:
        """Load (or reload, re-resolving an alias) `requested` on every replica."""
        name, version = self.resolve(requested)
        want = {"ref": requested, "version": version}
        # Loaded here first: a version that fails to load is never handed to the other replicas.
        await self.apply({**self.read_state()[1], name: want})
        with self._changing_state() as models:
            models[name] = want
        await self.apply(models)  # what other replicas changed meanwhile
        return self.models[name]

    async def admin_unload(self, name: str) -> None:
        with self._changing_state() as models:
            if name not in models:
                raise ModelNotFound(f"model {name!r} is not loaded")
            del models[name]
        await self.apply(models)

    async def watch(self, cache: ResponseCache | None = None, interval_s: float = 0.5) -> None:
        """Follow the shared state; publish metrics (queue depth, cache counters) as it goes."""
        while True:
            await asyncio.sleep(interval_s)
            try:
                await self.sync()
            except Exception as exc:  # a bad reload must not take the serving models down
                print(f"skylift serve: reload failed: {exc}", flush=True)
            self.metrics.extra["queue_rows"] = sum(m.runtime.inputs.queued_rows for m in self.models.values())
            self._runtime_metrics()
            if cache is not None:
                self.metrics.extra.update({f"cache_{k}": v for k, v in cache.stats().items()})
            self.metrics.publish()

    def _runtime_metrics(self) -> None:
        """The runtimes' own figures (a generator's sequences, tokens, latencies), summed over models."""
        gauges: dict[str, float] = {}
        histograms: dict[str, Histogram] = {}
        for model in self.models.values():
            for name, value in model.runtime.gauges().items():
                gauges[name] = gauges.get(name, 0) + value
            for name, (bounds, counts, total) in model.runtime.histograms().items():
                _, seen, seen_total = histograms.get(name, (bounds, (0,) * len(counts), 0.0))
                histograms[name] = (
                    bounds,
                    tuple(a + b for a, b in zip(seen, counts, strict=True)),
                    seen_total + total,
                )
        self.metrics.extra.update(gauges)
        self.metrics.histograms = histograms


async def _retire(model: ServedModel) -> None:
    """Stop a swapped-out model once the requests already on it are answered.

    Requests that looked it up before the swap hold it (`in_flight`) until they have their answer,
    whatever they await meanwhile (the body, the Redis cache, the batcher); new ones see the new
    model. Wait for them (30 s at most: a client may send its body that slowly), then stop the
    runtime, whose batchers answer what is still queued.
    """
    deadline = time.monotonic() + 30
    while model.in_flight and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    await model.runtime.stop()

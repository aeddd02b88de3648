"""The models a worker serves: verified loads from the registry, warm-up, hot swap, rollouts, and
replica sync.

Replicas share one `repository.json` in the server's state folder: the served version of each
model (with the reference it was resolved from) and each model's rollout (traffic split, guard,
shadow). An admin change on any replica writes it, and every replica applies it within a poll
interval; a replica that starts (or is replaced) reads it, so a split survives restarts. Until the
first change the rollouts are the command line's. A swapped-out version finishes the requests
already queued on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from skylift import _atomic
from skylift.errors import ModelNotFound
from skylift.serve.audit import AuditLog
from skylift.serve.rollout import Rollback, Rollout, check
from skylift.serve.runtimes import RUNTIMES, Context, Runtime, check_servable, kind_of
from skylift.serve.runtimes._base import Histogram
from skylift.serve.shadow import Shadow, ShadowStats
from skylift.serve.traffic import Traffic, VersionStats, publish

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
    traffic: Traffic[ServedModel] | None = None
    """On the served version of a model with a rollout: picks the version of requests naming none."""
    shadow: Shadow | None = None
    """On each version the model's routed requests reach, when it has a shadow: copies its answers."""
    header: tuple[bytes, bytes] = field(init=False, repr=False)
    """X-Model-Version, on every answer of this version."""

    def __post_init__(self) -> None:
        self.header = (b"x-model-version", str(self.version).encode())


@dataclass
class State:
    """repository.json: what every replica serves."""

    generation: int
    models: dict[str, dict[str, Any]]
    """name -> {"ref": the reference asked for, "version": what it resolved to}."""
    rollouts: dict[str, Rollout]

    def to_json(self) -> dict[str, Any]:
        return {
            "generation": self.generation,
            "models": self.models,
            "rollouts": {name: r.to_json() for name, r in self.rollouts.items()},
        }


class Repository:
    """name -> ServedModel (the served version) and every other version its rollout needs, for one
    worker process."""

    def __init__(self, config: ServeConfig, metrics: Metrics) -> None:
        self.config = config
        self.metrics = metrics
        self.models: dict[str, ServedModel] = {}
        """The served version of each model: answers requests naming no version, unless routed."""
        self.versions: dict[str, dict[int, ServedModel]] = {}
        """Every loaded version of each model (the served one included), for /versions/{v} routes."""
        self.rollouts: dict[str, Rollout] = {}
        """The rollouts applied here."""
        self.generation = -1
        self.ready = False
        self._retiring: set[asyncio.Task[None]] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._shadows: dict[str, Shadow] = {}
        self._traffic: dict[str, Traffic[ServedModel]] = {}
        self._stats: dict[str, dict[int, VersionStats]] = {}
        self._shadow_stats: dict[tuple[str, int], ShadowStats] = {}
        self._rolled_back: dict[tuple[str, int], int] = {}
        self.audit = AuditLog(config.audit)
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

    async def apply(
        self, wanted: dict[str, dict[str, Any]], rollouts: dict[str, Rollout] | None = None
    ) -> None:
        """Serve exactly `wanted` (name -> {ref, version}) with `rollouts`: load new or changed
        versions, drop the rest."""
        rollouts = self.rollouts if rollouts is None else rollouts
        loop = asyncio.get_running_loop()
        for name, want in wanted.items():
            current = self.models.get(name)
            have = self.versions.get(name, {})
            rollout = rollouts.get(name)
            loaded: dict[int, ServedModel] = {}
            try:
                for version in sorted({want["version"], *(rollout.versions if rollout else ())}):
                    model = have.get(version)
                    if model is None:
                        ref = want["ref"] if version == want["version"] else f"{name}:{version}"
                        # Loading (hashing, decrypting, warm-up) runs off the event loop: requests flow.
                        model = await loop.run_in_executor(None, self._load, name, version, ref)
                        model.runtime.start()
                    loaded[version] = model
            except BaseException:
                for version, model in loaded.items():  # nothing half-applied: stop what this call started
                    if version not in have:
                        self._retire(model)
                raise
            served = loaded[want["version"]]
            if served is not current:
                served.requested = want["ref"]
            self.versions[name] = loaded
            self.models[name] = served
            self._route(name, rollout)
            for version, old in have.items():
                if version not in loaded:
                    self._retire(old)
            if current is not None and current is not served:
                await self._swapped(name)
        for name in [n for n in self.models if n not in wanted]:
            self.models.pop(name)
            self._route(name, None)
            for old in self.versions.pop(name, {}).values():
                self._retire(old)
            await self._swapped(name)

    def _route(self, name: str, rollout: Rollout | None) -> None:
        """Hand `name`'s versions their rollout: the traffic picker on the served version, the shadow
        on every version routed requests reach."""
        served, versions = self.models.get(name), self.versions.get(name, {})
        traffic = self._traffic.get(name)
        if served is not None and rollout == self.rollouts.get(name) and served.traffic is traffic:
            return  # unchanged (another model's change, or only the rollback history)
        if traffic is not None:
            traffic.retire()
            del self._traffic[name]
        old = self._shadows.pop(name, None)
        for model in versions.values():
            model.traffic = model.shadow = None
        self.rollouts.pop(name, None)
        if served is None or rollout is None or rollout.empty:
            if old is not None:
                old.stop()
            return
        shadow = None
        if rollout.shadow is not None:
            target = versions[rollout.shadow.version].runtime
            if old is not None and old.spec == rollout.shadow and old.target is target:
                shadow, old = old, None  # the same shadow: keep its queue
            else:
                stats = self._shadow_stats.setdefault((name, rollout.shadow.version), ShadowStats())
                c = self.config
                shadow = Shadow(target, rollout.shadow, stats, c.max_batch_rows, c.timeout_ms / 1000)
                shadow.start()
            self._shadows[name] = shadow
        if old is not None:
            old.stop()
        served.traffic = Traffic(rollout, served, versions, self._stats.setdefault(name, {}), self._broken)
        self._traffic[name] = served.traffic
        answering = [v for v, w in rollout.split.weights if w] if rollout.split else [served.version]
        for version in answering:  # the versions routed requests reach
            versions[version].shadow = shadow
        self.rollouts[name] = rollout

    async def _swapped(self, name: str) -> None:
        if self.on_swap is not None:
            await self.on_swap(name)

    def _retire(self, model: ServedModel) -> None:
        task = asyncio.get_running_loop().create_task(_retire(model))
        self._retiring.add(task)  # keep a reference until done (the loop holds only weak ones)
        task.add_done_callback(self._retiring.discard)

    def read_state(self) -> State:
        raw = json.loads(self.state_path.read_text())
        found = raw.get("rollouts")
        if found is None:  # nobody changed a rollout yet: the command line's
            listed = {r.model: r for r in self.config.rollouts}
        else:
            listed = {name: Rollout.from_state(name, r) for name, r in found.items()}
        return State(int(raw["generation"]), raw["models"], listed)

    def write_state(self, state: State) -> int:
        generation = self.read_state().generation + 1 if self.state_path.exists() else 0
        state.generation = generation
        _atomic.write_json(self.state_path, state.to_json())
        return generation

    async def sync(self) -> None:
        """Apply the shared state if another replica (or start-up) changed it."""
        state = self.read_state()
        if state.generation != self.generation:
            await self.apply(state.models, state.rollouts)
            self.generation = state.generation
        self.ready = True

    @contextlib.contextmanager
    def _changing_state(self) -> Iterator[State]:
        """The shared state, read under a lock for changing; written back when the block ends
        (unless it raised).

        Replicas change the state on admin requests: without the lock, two loads at the same moment
        on two replicas would each write their own read, and one load would be lost.
        """
        with open(self.state_path.with_name(self.state_path.name + ".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # held for a read and a write of a small file
            state = self.read_state()
            yield state
            self.generation = self.write_state(state)

    async def admin_load(self, requested: str) -> ServedModel:
        """Load (or reload, re-resolving an alias) `requested` on every replica."""
        name, version = self.resolve(requested)
        want = {"ref": requested, "version": version}
        state = self.read_state()
        if name in state.rollouts:  # its split and shadow must fit the new version too
            await self._check(state.rollouts[name], version)
        # Loaded here first: a version that fails to load is never handed to the other replicas.
        await self.apply({**state.models, name: want}, state.rollouts)
        with self._changing_state() as state:
            state.models[name] = want
        await self.apply(state.models, state.rollouts)  # what other replicas changed meanwhile
        return self.models[name]

    async def admin_unload(self, name: str) -> None:
        with self._changing_state() as state:
            if name not in state.models:
                raise ModelNotFound(f"model {name!r} is not loaded")
            del state.models[name]
            state.rollouts.pop(name, None)
        await self.apply(state.models, state.rollouts)

    async def admin_rollout(self, name: str, change: Callable[[Rollout], Rollout]) -> Rollout:
        """Change `name`'s rollout on every replica (`change` maps the current one to the new one)."""
        state = self.read_state()
        if name not in state.models:
            raise ModelNotFound(
                f"model {name!r} is not loaded; serving: {', '.join(sorted(state.models)) or 'none'}"
            )
        wanted = change(state.rollouts.get(name, Rollout(name)))
        await self._check(wanted, state.models[name]["version"])
        # Its versions are loaded here first: one that fails is never handed to the other replicas.
        await self.apply(state.models, {**state.rollouts, name: wanted})
        with self._changing_state() as state:
            rollout = change(state.rollouts.get(name, Rollout(name)))  # onto what others changed meanwhile
            if rollout.empty:
                state.rollouts.pop(name, None)
            else:
                state.rollouts[name] = rollout
        await self.apply(state.models, state.rollouts)
        return rollout

    async def _check(self, rollout: Rollout, served: int) -> None:
        from skylift.registry import Registry

        registry = Registry(self.config.home, self.config.master_key)
        # Off the event loop: reading a version's info hashes its files.
        await asyncio.get_running_loop().run_in_executor(
            None, check, registry, rollout, served, self.config.runtime
        )

    def _broken(self, name: str, version: int, weight: int, why: str) -> None:
        """A guard fired on this replica (which already stopped routing to the canary): make it so
        everywhere, once."""
        task = asyncio.get_running_loop().create_task(self._roll_back(name, version, weight, why))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _roll_back(self, name: str, version: int, weight: int, why: str) -> None:
        done = None
        with self._changing_state() as state:
            rollout = state.rollouts.get(name)
            if rollout is not None and rollout.split is not None and rollout.split.weight(version):
                stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
                done = Rollback(version, rollout.split.weight(version), why, stamp)
                split = rollout.split.without(version)
                state.rollouts[name] = replace(rollout, split=split, rollbacks=(*rollout.rollbacks, done))
        if done is None:  # another replica rolled it back first, or an operator changed the split
            await self.apply(state.models, state.rollouts)
            return
        stable = f"{name}:{rollout.split.stable if rollout and rollout.split else '?'}"
        line = f"guard rolled back {name}:{version} (weight {done.weight} -> 0): {why}; its traffic goes to "
        line += stable
        print(f"skylift serve: {line}", file=sys.stderr, flush=True)
        scope = {"method": "GUARD", "path": f"/v2/repository/models/{name}/split", "client": None}
        self.audit.write(scope, None, f"rollback: {line}", 200)
        self._rolled_back[(name, version)] = self._rolled_back.get((name, version), 0) + 1
        await self.apply(state.models, state.rollouts)

    async def watch(self, cache: ResponseCache | None = None, interval_s: float = 0.5) -> None:
        """Follow the shared state; publish metrics (queue depth, cache counters) as it goes."""
        while True:
            await asyncio.sleep(interval_s)
            try:
                await self.sync()
            except Exception as exc:  # a bad reload must not take the serving models down
                print(f"skylift serve: reload failed: {exc}", flush=True)
            self.metrics.extra["queue_rows"] = sum(m.runtime.inputs.queued_rows for m in self._every())
            self._runtime_metrics()
            self._rollout_metrics()
            if cache is not None:
                self.metrics.extra.update({f"cache_{k}": v for k, v in cache.stats().items()})
            self.metrics.publish()

    def _runtime_metrics(self) -> None:
        """The runtimes' own figures (a generator's sequences, tokens, latencies), summed over models."""
        gauges: dict[str, float] = {}
        histograms: dict[str, Histogram] = {}
        for model in self._every():
            figures = model.runtime.gauges()
            if (chooser := model.runtime.inputs.chooser) is not None:
                figures |= {"model_threads": chooser.threads, "model_thread_switches_total": chooser.switches}
            for name, value in figures.items():
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

    def _every(self) -> Iterator[ServedModel]:
        """Every loaded version of every model."""
        for versions in self.versions.values():
            yield from versions.values()

    def _rollout_metrics(self) -> None:
        """Judge the canaries' p99 (a sort, so here rather than per request) and publish the
        per-version, split and shadow figures."""
        weights: dict[tuple[str, int], int] = {}
        for name, served in self.models.items():
            if served.traffic is not None:
                served.traffic.tick()
                weights.update({(name, v): w for v, w in served.traffic.weights().items()})
        stats = {(name, v): s for name, by in self._stats.items() for v, s in by.items()}
        if stats or self._shadow_stats or weights:
            publish(self.metrics, stats, self._shadow_stats, weights, self._rolled_back)


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

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

import numpy as np

from skylift import _atomic
from skylift.errors import ModelNotFound
from skylift.serve.batcher import Batcher
from skylift.serve.codec import Signature

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
    signature: Signature
    batcher: Batcher
    info: dict[str, Any]
    in_flight: int = 0
    """Requests that looked this version up and have no answer yet; a swap retires it after them."""


def _torch_runner(module: Any) -> Any:
    import torch

    def run(x_RS: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            logits_RC = module(torch.from_numpy(x_RS))
            return torch.softmax(logits_RC.float(), dim=-1).numpy()

    return run


def _onnx_runner(path: Path, threads: int) -> Any:
    """onnxruntime over the exported model; softmax of the logits in numpy."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def run(x_RS: np.ndarray) -> np.ndarray:
        logits_RC: np.ndarray = np.asarray(session.run(None, {"input": x_RS})[0], dtype=np.float32)
        z_RC: np.ndarray = np.exp(logits_RC - logits_RC.max(axis=1, keepdims=True))
        probs_RC: np.ndarray = z_RC / z_RC.sum(axis=1, keepdims=True)
        return probs_RC

    return run


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

        registry = Registry(self.config.home, self.config.master_key)
        loaded = registry.load(f"{name}:{version}")
        sig = Signature(tuple(loaded.input_shape), tuple(str(c) for c in loaded.classes))
        if self.config.runtime == "onnx":
            # Exported from the verified load into the server's private state folder.
            path = registry.export(
                f"{name}:{version}", "onnx", self.config.state_dir / f"{name}-{version}.onnx"
            )
            run = _onnx_runner(path, self.config.threads)
        else:
            run = _torch_runner(loaded.module)
        c = self.config
        for rows in (1, c.max_batch_rows):  # warm-up: first calls allocate and pick kernels
            run(np.zeros((rows, *sig.input_shape), dtype=np.float32))
        batcher = Batcher(
            run,
            name=f"{name}:{version}",
            max_rows=c.max_batch_rows,
            max_delay_s=c.max_delay_ms / 1000,
            max_queue_rows=c.max_queue_rows,
            on_batch=self.metrics.observe_batch,
        )
        return ServedModel(name, version, requested, sig, batcher, loaded.info)

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
            model.batcher.start()
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
            self.metrics.extra["queue_rows"] = sum(m.batcher.queued_rows for m in self.models.values())
            if cache is not None:
                self.metrics.extra.update({f"cache_{k}": v for k, v in cache.stats().items()})
            self.metrics.publish()


async def _retire(model: ServedModel) -> None:
    """Stop a swapped-out model once the requests already on it are answered.

    Requests that looked it up before the swap hold it (`in_flight`) until they have their answer,
    whatever they await meanwhile (the body, the Redis cache, the batcher); new ones see the new
    model. Wait for them (30 s at most: a client may send its body that slowly), then stop the
    batcher, which answers what is still queued.
    """
    deadline = time.monotonic() + 30
    while model.in_flight and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    await model.batcher.stop()

"""The runtime contract: what one kind of served model does with a request between the HTTP layer's
body and its answer.

Shape legend: R rows of a request   S... per-row input shape   O outputs per row   T tokens
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from skylift.serve import codec
from skylift.serve.batcher import Batcher
from skylift.serve.codec import BadRequest, V2Request

if TYPE_CHECKING:
    from skylift._intraop import ThreadChooser
    from skylift.registry import LoadedModel
    from skylift.serve.config import ServeConfig
    from skylift.serve.metrics import Metrics

Named = dict[str, "np.ndarray | list[str]"]
Histogram = tuple[tuple[float, ...], tuple[int, ...], float]
"""Upper bounds, per-bucket counts (one more for +Inf, not cumulative), sum of the observations."""


class Unsupported(BadRequest):
    """The route asks for something this kind of model does not do (e.g. embeddings of a classifier)."""


@dataclass(frozen=True)
class Context:
    """What a runtime is built from: the verified model and the server's settings."""

    name: str
    version: int
    loaded: LoadedModel
    config: ServeConfig
    metrics: Metrics


class Inputs(ABC):
    """How a runtime's inputs arrive and queue: numeric rows (one batcher), texts (tokenized,
    batched by length bucket) or media files (decoded off the event loop, then numeric rows). Same
    threading contract as Runtime."""

    chooser: ThreadChooser | None = None
    """Picks the model thread's torch threads by measured speed (`--threads` not given)."""

    media_types: tuple[bytes, ...] = ()
    """Content-Types of a plain POST of one file that `decode_file` takes (lower case)."""

    @abstractmethod
    def metadata(self) -> list[dict[str, Any]]:
        """The V2 input tensors."""

    def decode_file(self, body: bytes, media_type: bytes) -> Any:
        """Inputs from a plain POST of one file whose Content-Type is one of `media_types`."""
        raise BadRequest(f"Content-Type {media_type.decode('latin-1')[:60]!r} is not supported here", 415)

    @abstractmethod
    def decode_v2(self, body: bytes, header_length: int | None, outputs: tuple[str, ...]) -> V2Request: ...

    @abstractmethod
    def decode_v1(self, body: bytes) -> tuple[Any, bool]: ...

    @abstractmethod
    def cache_input(self, x: Any) -> np.ndarray | bytes:
        """What the response cache hashes for these inputs (with the model and version)."""

    @abstractmethod
    def submit(self, x: Any, deadline: float) -> Awaitable[np.ndarray]:
        """float32 (R, O) for the decoded inputs, through the batcher(s); deadline: time.monotonic().

        An awaitable rather than a coroutine function: on the numeric path it is the batcher's own
        coroutine, one frame less per request."""

    @property
    @abstractmethod
    def queued_rows(self) -> int: ...

    @abstractmethod
    def expect(self, requests: int) -> None:
        """Requests being read or decoded that will reach `submit` (+1), or no longer will (-1): the
        batcher holds a batch open a little for them."""

    @abstractmethod
    def start(self) -> None: ...

    @abstractmethod
    async def stop(self) -> None: ...


class Batched(Inputs):
    """Inputs queued on one Batcher over `run` (float32 (R, O) for a batch), with the server's limits."""

    def __init__(self, ctx: Context, run: Callable[[Any], np.ndarray]) -> None:
        c = ctx.config
        if c.adapt_threads:
            from skylift._intraop import ThreadChooser

            chooser = self.chooser = ThreadChooser(c.threads)
            model_run = run

            def run(x: Any) -> np.ndarray:
                return chooser.run(len(x), lambda: model_run(x))

        self.batcher = Batcher(
            run,
            name=f"{ctx.name}:{ctx.version}",
            max_rows=c.max_batch_rows,
            max_delay_s=c.max_delay_ms / 1000,
            max_queue_rows=c.max_queue_rows,
            on_batch=ctx.metrics.observe_batch,
        )

    @property
    def queued_rows(self) -> int:
        return self.batcher.queued_rows

    def expect(self, requests: int) -> None:
        self.batcher.arriving += requests

    def start(self) -> None:
        self.batcher.start()

    async def stop(self) -> None:
        await self.batcher.stop()


class Runtime(ABC):
    """One served version of one kind of model (found by its signature's `kind` in RUNTIMES).

    Contract: `decode_*` run on the event loop, keep no state and raise BadRequest (a 4xx) for bad
    input (work too heavy for the loop, such as decoding an image, is left to `infer`, which does
    it on a thread pool and raises BadRequest likewise); `infer` queues decoded inputs on the
    runtime's batcher(s) and returns float32 outputs (R, O), one row per input, which the HTTP
    layer may cache and hand to `encode_*` later; `start` runs on the event loop before the first
    request, `stop` answers what is queued and then releases the model thread. The HTTP layer,
    auth, codecs and metrics know nothing else of the kind. A route a kind does not serve (OpenAI
    embeddings of a classifier) raises Unsupported, a 400 naming the kind.
    """

    kind: ClassVar[str]
    outputs: ClassVar[tuple[str, ...]]
    """The V2 output names, in their default order."""

    def __init__(self, ctx: Context, inputs: Inputs, width: int) -> None:
        self.ctx = ctx
        self.inputs = inputs
        self.width = width
        """O: outputs per row of `infer`."""
        self.infer: Callable[[Any, float], Awaitable[np.ndarray]] = inputs.submit
        """float32 (R, O) for decoded inputs (Inputs.submit, bound once: one call less per request)."""

    @property
    def a_kind(self) -> str:
        """The kind with its article, for messages: "an embedder", "a classifier"."""
        return f"{'an' if self.kind[0] in 'aeiou' else 'a'} {self.kind}"

    def decode_v2(self, body: bytes, header_length: int | None) -> V2Request:
        return self.inputs.decode_v2(body, header_length, self.outputs)

    def decode_v1(self, body: bytes) -> tuple[Any, bool]:
        return self.inputs.decode_v1(body)

    def start(self) -> None:
        self.inputs.start()

    async def stop(self) -> None:
        await self.inputs.stop()

    @abstractmethod
    def named(self, out: np.ndarray) -> Named:
        """The outputs of `infer` by V2 output name."""

    def encode_v2(self, req: V2Request, out: np.ndarray) -> tuple[bytes, int | None]:
        return codec.encode_v2(self.ctx.name, str(self.ctx.version), req, self.named(out))

    def encode_v1(self, out: np.ndarray, columnar: bool) -> bytes:
        return codec.encode_v1(self.named(out), columnar)

    @abstractmethod
    def output_metadata(self) -> list[dict[str, Any]]:
        """The V2 output tensors."""

    def parameters(self) -> dict[str, Any]:
        """Extra V2 metadata parameters (classes, targets, ...)."""
        return {}

    def gauges(self) -> dict[str, float]:
        """Figures for /metrics beyond the HTTP layer's (summed over the served models), e.g. a
        generator's running sequences; names are Prometheus names without `skylift_`."""
        return {}

    def histograms(self) -> dict[str, Histogram]:
        """Histograms for /metrics (merged over the served models): name -> (bounds, counts, sum)."""
        return {}

    # -- OpenAI routes: a kind that serves one overrides it ------------------------------------

    async def embed(self, texts: list[str], deadline: float) -> tuple[np.ndarray, int]:
        """(float32 embeddings (R, D), prompt tokens) for /v1/embeddings."""
        raise Unsupported(f"model {self.ctx.name} is {self.a_kind}: /v1/embeddings serves embedders")

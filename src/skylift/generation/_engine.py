"""The generation engine: requests in from an asyncio loop, tokens decoded on one background thread.

`submit` validates and queues a request and returns its Handle at once; the engine thread runs
steps (Scheduler.plan -> one forward over every running sequence's new tokens -> sample) and hands
each step's events to the submitting loops with one call_soon_threadsafe per loop and step. torch
releases the GIL inside its kernels, so the loop keeps serving while a step runs.

Thread safety: submit and Handle methods run on the loop thread, stats() on any thread; nothing
else is called from outside. The KV cache is preallocated (KVCache: max_running x context
positions per block): memory is fixed and known when the engine starts, and decode attention reads
the running slots in place. Paging (vLLM's blocks) would fit more short sequences in the same
memory at the cost of a gather per layer and step, which on this CPU costs more than it saves.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections.abc import Sequence as Seq
from typing import TYPE_CHECKING, Any

import torch

from skylift.errors import SpecError
from skylift.generation._errors import (
    ContextExceeded,
    EngineClosed,
    GenerationFailed,
    InvalidRequest,
    QueueFull,
)
from skylift.generation._handle import Event, Handle, Usage, deliver
from skylift.generation._params import SamplingParams
from skylift.generation._runner import CachedLM, build_step
from skylift.generation._sampling import sample
from skylift.generation._scheduler import FinishReason, Plan, Scheduler, Sequence
from skylift.generation._stats import EngineStats, Recorder
from skylift.generation._text import TextStream
from skylift.models._transformer import DecoderStack

if TYPE_CHECKING:
    from torch import nn

    from skylift._intraop import ThreadChooser
    from skylift.data._tokenizer import TextTokenizer
    from skylift.registry import LoadedModel


class Engine:
    """Continuous batching over a KV cache for one skylift language model.

    `context` is the most positions a sequence may use (prompt + new tokens); by default the
    learned positions of the model, and required for RoPE models (use the block size it was trained
    on). At most `max_running` sequences decode together, each holding a KV-cache slot; up to
    `max_waiting` more queue for one, and past that submit raises QueueFull. A step feeds at most
    `max_step_tokens` tokens (one per decoding sequence, the rest prompt chunks). With `threads`,
    steps run at the torch thread count it measures fastest (tokens a step as its work); without,
    at torch's current count.
    """

    def __init__(
        self,
        model: nn.Module,
        tokenizer: TextTokenizer,
        *,
        context: int | None = None,
        max_running: int = 32,
        max_waiting: int = 256,
        max_step_tokens: int = 256,
        threads: ThreadChooser | None = None,
    ) -> None:
        if context is None:
            learned = [
                m.positions.shape[0]
                for m in model.modules()
                if isinstance(m, DecoderStack) and m.positions is not None
            ]
            if not learned:
                raise SpecError(
                    "context is required for a model without learned positions: give its block size"
                )
            context = min(learned)
        if context < 2:
            raise SpecError(f"context must be >= 2 tokens, got {context}")
        if max_running < 1 or max_waiting < 0:
            raise SpecError(
                f"max_running must be >= 1 and max_waiting >= 0, got {max_running} and {max_waiting}"
            )
        if max_step_tokens < max_running:
            raise SpecError(
                f"max_step_tokens must be >= max_running ({max_running}) so every running sequence "
                f"decodes each step, got {max_step_tokens}"
            )
        self.context = context
        self.tokenizer = tokenizer
        self._lm = CachedLM(model, max_running, context)
        self._eos = tokenizer.eos_id
        self._sched = Scheduler(max_running, max_waiting, max_step_tokens, self._lm.move)
        self._threads = threads
        self._stats = Recorder()
        self._outbox: list[tuple[Handle, Event | BaseException]] = []
        self._mean_request_s = 1.0  # moving average of request durations, for Retry-After
        self._closed = False
        self._drain = False
        self._thread = threading.Thread(target=self._run, name="skylift-generate", daemon=True)
        self._thread.start()

    @classmethod
    def from_loaded(cls, loaded: LoadedModel, **options: Any) -> Engine:
        """An engine for a registry version of a language model; context defaults to its block size."""
        from skylift.data._tokenizer import TextTokenizer

        if loaded.task != "language_modeling" or loaded.tokenizer is None:
            raise SpecError(
                f"{loaded.ref} is a {loaded.task} model, not a language model: it cannot generate"
            )
        options.setdefault("context", loaded.data.get("block_size"))
        return cls(loaded.module, TextTokenizer.from_json(loaded.tokenizer), **options)

    def submit(
        self, prompt_ids: Seq[int], params: SamplingParams | None = None, deadline_s: float | None = None
    ) -> Handle:
        """Queue a request; call on the event loop that will read the returned Handle.

        `deadline_s`: seconds from now after which it finishes with "deadline" (None: never).
        Raises InvalidRequest / ContextExceeded for a request that can never run, QueueFull when
        too many wait, EngineClosed after close().
        """
        params = params if params is not None else SamplingParams()
        prompt = list(prompt_ids)
        n, vocab = len(prompt), self._lm.vocab_size
        if n == 0:
            raise InvalidRequest("the prompt is empty: give at least one token")
        if not all(isinstance(t, int) and not isinstance(t, bool) and 0 <= t < vocab for t in prompt):
            raise InvalidRequest(
                f"prompt token ids must be integers in [0, {vocab}) (the model's vocabulary)"
            )
        if n >= self.context:
            raise ContextExceeded(
                f"the prompt has {n} tokens; the context holds {self.context}, including at least 1 new token"
            )
        max_tokens = params.max_tokens if params.max_tokens is not None else self.context - n
        if n + max_tokens > self.context:
            raise ContextExceeded(
                f"prompt ({n} tokens) + max_tokens ({max_tokens}) = {n + max_tokens} exceeds the context of "
                f"{self.context} tokens; use max_tokens <= {self.context - n}"
            )
        loop = asyncio.get_running_loop()
        generator = None
        if params.temperature > 0:
            generator = torch.Generator()
            if params.seed is None:
                generator.seed()
            else:
                generator.manual_seed(params.seed)
        now = time.monotonic()
        handle = Handle(self._poke, loop, n)
        deadline = math.inf if deadline_s is None else now + deadline_s
        text = TextStream(self.tokenizer, prompt, params.stop)
        seq = Sequence(prompt, params, max_tokens, handle, now, deadline, generator, text)
        sched = self._sched
        with sched.wake:
            if self._closed:
                raise EngineClosed("the engine is closed; the model was unloaded or replaced, retry")
            if len(sched.waiting) >= sched.max_waiting:
                with self._stats.lock:
                    self._stats.rejected += 1
                raise QueueFull(
                    f"{len(sched.waiting)} requests wait for a slot (limit {sched.max_waiting}); retry later",
                    self._retry_after(len(sched.waiting)),
                )
            sched.waiting.append(seq)
            sched.wake.notify()
        return handle

    def stats(self) -> EngineStats:
        """A snapshot of the engine's gauges, counters and histograms; safe from any thread."""
        with self._stats.lock:
            ttft, itl = self._stats.histograms()
            return EngineStats(
                running=len(self._sched.running),
                waiting=len(self._sched.waiting),
                max_running=self._sched.max_running,
                max_waiting=self._sched.max_waiting,
                finished=dict(self._stats.finished),
                rejected=self._stats.rejected,
                prompt_tokens=self._stats.prompt_tokens,
                generated_tokens=self._stats.generated_tokens,
                steps=self._stats.steps,
                ttft=ttft,
                inter_token=itl,
                kv_cache_bytes=self._lm.cache_bytes,
            )

    def close(self, drain: bool = False, timeout: float | None = None) -> None:
        """Stop accepting requests; with `drain`, finish the queued and running ones first, else
        cancel them. Blocks until the engine thread ends (or `timeout`): from a coroutine, run it in
        an executor."""
        with self._sched.wake:
            self._closed, self._drain = True, drain
            self._sched.wake.notify()
        self._thread.join(timeout)

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # The engine thread.

    def _poke(self) -> None:
        with self._sched.wake:
            self._sched.wake.notify()

    def _run(self) -> None:
        sched = self._sched
        with torch.inference_mode():
            while True:
                with sched.wake:
                    while not (sched.waiting or sched.running or self._closed):
                        sched.wake.wait()
                    if self._closed and not (self._drain and (sched.waiting or sched.running)):
                        break
                try:
                    self._step()
                except Exception as exc:  # a bug in a model or here: fail the running sequences, keep serving
                    self._fail_running(exc)
                self._flush()
            with sched.wake:
                leftover = [*sched.running, *sched.waiting]
                sched.waiting.clear()
            with self._stats.lock:
                for seq in leftover:
                    self._finish(seq, "cancelled", time.monotonic())
            self._flush()

    def _step(self) -> None:
        now = time.monotonic()
        gone = self._sched.reap(now)
        with self._stats.lock:
            for seq, reason in gone:
                self._finish(seq, reason, now)
        self._sched.admit()
        plan = self._sched.plan()
        if plan is None:
            return
        if self._threads is None:
            tokens, sampled = self._forward(plan)
        else:
            work = len(plan.decode) + sum(count for _, _, count in plan.chunks)
            tokens, sampled = self._threads.run(work, lambda: self._forward(plan))
        now = time.monotonic()
        for seq in plan.decode:
            seq.cached += 1
        for seq, _, count in plan.chunks:
            seq.cached += count
        with self._stats.lock:
            self._stats.steps += 1
            self._stats.prompt_tokens += sum(count for _, _, count in plan.chunks)
            for seq, token in zip(sampled, tokens, strict=True):
                self._accept(seq, token, now)

    def _fail_running(self, exc: Exception) -> None:
        failure = GenerationFailed(f"generation failed: {type(exc).__name__}: {exc}")
        with self._stats.lock:
            for seq in list(reversed(self._sched.running)):
                self._sched.release(seq)
                self._stats.finished["error"] += 1
                self._outbox.append((seq.handle, failure))

    def _forward(self, plan: Plan) -> tuple[list[int], list[Sequence]]:
        """Run the model on the plan's tokens; the sampled tokens and the sequences they belong to."""
        ids = [s.next_token for s in plan.decode]
        rows = list(range(len(ids)))
        sampled = list(plan.decode)
        for seq, start, count in plan.chunks:
            ids += seq.prompt[start : start + count]
            if start + count == len(seq.prompt):  # the prompt's last token: its logits give token 1
                rows.append(len(ids) - 1)
                sampled.append(seq)
        step = build_step(
            [(s.slot, s.cached) for s in plan.decode],
            [(s.slot, start, count) for s, start, count in plan.chunks],
            len(self._sched.running),
            self._lm.dtype,
        )
        # only sampled rows go through the layers after the last block (the head is the largest matmul)
        rows_M = None if len(rows) == len(ids) else torch.tensor(rows, dtype=torch.long)
        logits_MV = self._lm.forward(torch.tensor(ids), step, rows_M)
        if not sampled:
            return [], []
        params = [s.params for s in sampled]
        tokens = sample(
            logits_MV,
            [p.temperature for p in params],
            [p.top_p for p in params],
            [s.generator for s in sampled],
        )
        return tokens, sampled

    def _accept(self, seq: Sequence, token: int, now: float) -> None:
        """A new token for `seq`: count it, extend its text, finish it or send an event."""
        seq.generated += 1
        self._stats.generated_tokens += 1
        if seq.generated == 1:
            self._stats.first_token(now - seq.submitted)
        else:
            self._stats.next_token(now - seq.last_token_at)
        seq.last_token_at = now
        stopped = token == self._eos and not seq.params.ignore_eos
        if not stopped:
            seq.next_token = token
            seq.unsent.append(token)
            stopped = seq.text.add(token)
        if stopped or seq.generated >= seq.max_tokens:
            self._finish(seq, "stop" if stopped else "length", now)
            return
        self._outbox.append((seq.handle, Event(tuple(seq.unsent), seq.text.delta(final=False))))
        seq.unsent.clear()

    def _finish(self, seq: Sequence, reason: FinishReason, now: float) -> None:
        self._sched.release(seq)
        seq.text.flush()
        usage = Usage(len(seq.prompt), seq.generated)
        self._outbox.append((seq.handle, Event(tuple(seq.unsent), seq.text.delta(final=True), reason, usage)))
        self._stats.finished[reason] += 1
        self._mean_request_s += 0.1 * (now - seq.submitted - self._mean_request_s)

    def _flush(self) -> None:
        """Send this step's events, one call_soon_threadsafe per loop."""
        if not self._outbox:
            return
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[Handle, Event | BaseException]]] = {}
        for handle, item in self._outbox:
            by_loop.setdefault(handle._loop, []).append((handle, item))
        self._outbox = []
        for loop, items in by_loop.items():
            try:
                loop.call_soon_threadsafe(deliver, items)
            except RuntimeError:  # that loop is closed: nobody reads these handles any more
                for handle, _ in items:
                    handle.cancelled = True

    def _retry_after(self, waiting: int) -> int:
        """Seconds until about one queue's worth of requests has finished, 1 to 60."""
        seconds = self._mean_request_s * (waiting + 1) / self._sched.max_running
        return max(1, min(60, math.ceil(seconds)))

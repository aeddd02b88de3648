"""Generators (skylift's causal language models): text in, tokens streamed out, through the
continuous-batching engine of skylift.generation, over OpenAI's /v1/completions and
/v1/chat/completions.

KServe V2 and TF-Serving have no generation call: a generator answers them 400, naming the routes
that serve it. Chat messages become one prompt through the model's chat template (`data.
chat_template` in model.json: plain, chatml or Jinja2; see skylift._chat_template), or the plain
one for models trained without one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any

import numpy as np

from skylift._chat_template import ChatTemplate
from skylift.serve.codec import V2Request
from skylift.serve.runtimes._base import Context, Histogram, Inputs, Named, Runtime, Unsupported

if TYPE_CHECKING:
    from skylift.generation import EngineStats, Handle, SamplingParams

ROLES = ("system", "developer", "user", "assistant")


class _Engine(Inputs):
    """The engine in the place of a batcher: V2 / TF-Serving bodies are refused, queue depth is its
    waiting sequences, stop drains it."""

    def __init__(self, ctx: Context) -> None:
        from skylift.generation import Engine

        self.name = ctx.name
        c = ctx.config
        # A step's token budget: every running sequence decodes, the rest goes to prompt chunks.
        steps = max(256, 2 * c.max_running)
        if c.adapt_threads:
            from skylift._intraop import ThreadChooser

            self.chooser = ThreadChooser(c.threads)
        self.engine = Engine.from_loaded(
            ctx.loaded,
            max_running=c.max_running,
            max_waiting=c.max_waiting,
            max_step_tokens=steps,
            threads=self.chooser,
        )

    def _refuse(self) -> Unsupported:
        return Unsupported(
            f"model {self.name} is a generator: use POST /v1/completions or /v1/chat/completions"
        )

    def metadata(self) -> list[dict[str, Any]]:
        return [{"name": "text", "datatype": "BYTES", "shape": [-1]}]

    def decode_v2(self, body: bytes, header_length: int | None, outputs: tuple[str, ...]) -> V2Request:
        raise self._refuse()

    def decode_v1(self, body: bytes) -> tuple[Any, bool]:
        raise self._refuse()

    def cache_input(self, x: Any) -> bytes:
        raise self._refuse()

    def submit(self, x: Any, deadline: float) -> Awaitable[np.ndarray]:
        raise self._refuse()

    @property
    def queued_rows(self) -> int:
        return self.engine.stats().waiting

    def expect(self, requests: int) -> None:
        pass

    def start(self) -> None:
        pass

    async def stop(self) -> None:
        # Swapped out or unloaded: finish the running and queued requests, then end the thread.
        await asyncio.get_running_loop().run_in_executor(None, lambda: self.engine.close(drain=True))


class Generator(Runtime):
    kind = "generator"
    outputs = ("text",)

    def __init__(self, ctx: Context) -> None:
        self.engine_inputs = _Engine(ctx)
        self.engine = self.engine_inputs.engine
        self.tokenizer = self.engine.tokenizer
        self.context = self.engine.context
        eos = self.tokenizer.eos_id
        self.template = ChatTemplate.recorded(  # SpecError (the model does not load) if it does not compile
            ctx.loaded.data.get("chat_template"),
            eos_token="" if eos is None else self.tokenizer.decode([eos], skip_special_tokens=False),
        )
        super().__init__(ctx, self.engine_inputs, 0)

    def named(self, out: np.ndarray) -> Named:
        raise self.engine_inputs._refuse()

    def output_metadata(self) -> list[dict[str, Any]]:
        return [{"name": "text", "datatype": "BYTES", "shape": [-1]}]

    def parameters(self) -> dict[str, Any]:
        return {"context": self.context, "routes": ["/v1/completions", "/v1/chat/completions"]}

    def stats(self) -> EngineStats:
        return self.engine.stats()

    def gauges(self) -> dict[str, float]:
        s = self.engine.stats()
        return {
            "generation_running": s.running,
            "generation_waiting": s.waiting,
            "generation_prompt_tokens_total": s.prompt_tokens,
            "generation_generated_tokens_total": s.generated_tokens,
            "generation_cancelled_total": s.finished.get("cancelled", 0),
            "generation_deadline_total": s.finished.get("deadline", 0),
            "generation_rejected_total": s.rejected,
            "generation_kv_cache_bytes": s.kv_cache_bytes,
        }

    def histograms(self) -> dict[str, Histogram]:
        s = self.engine.stats()
        return {
            "generation_time_to_first_token_seconds": (s.ttft.buckets, s.ttft.counts, s.ttft.sum),
            "generation_inter_token_seconds": (
                s.inter_token.buckets,
                s.inter_token.counts,
                s.inter_token.sum,
            ),
        }

    def prompt_ids(self, text: str) -> list[int]:
        ids, _ = self.tokenizer.encode_pieces([text])
        return [int(i) for i in ids.tolist()]

    def chat_prompt(self, messages: list[tuple[str, str]]) -> str:
        """The prompt of (role, content) messages through the chat template; it ends where the
        assistant's answer starts. ChatTemplateError (a SpecError: 400) when the template fails or
        refuses the messages (`raise_exception`)."""
        return self.template.render(messages)

    def generate(self, prompt: list[int], params: SamplingParams, deadline_s: float) -> Handle:
        """Queue one prompt (token ids) on the engine; InvalidRequest / QueueFull / EngineClosed."""
        return self.engine.submit(prompt, params, deadline_s)

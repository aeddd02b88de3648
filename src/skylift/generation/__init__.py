"""Text generation for skylift's language models: a KV cache and continuous batching behind one Engine.

`engine = Engine(model, tokenizer, context=256)` (or `Engine.from_loaded(load_model("lm"))`);
`handle = engine.submit(prompt_ids, SamplingParams(max_tokens=64, temperature=0.8, seed=1))` on an
event loop; `async for event in handle` reads Events (token_ids, text, then finish_reason and
usage); `handle.cancel()` when the client goes away frees its slot at once; `engine.stats()` gives
running and waiting sequences, token counters and TTFT / inter-token histograms.
"""

from __future__ import annotations

from skylift.generation._engine import Engine
from skylift.generation._errors import (
    ContextExceeded,
    EngineClosed,
    GenerationFailed,
    InvalidRequest,
    QueueFull,
)
from skylift.generation._handle import Completion, Event, Handle, Usage
from skylift.generation._params import SamplingParams
from skylift.generation._scheduler import FinishReason
from skylift.generation._stats import EngineStats, Histogram

__all__ = [
    "Completion",
    "ContextExceeded",
    "Engine",
    "EngineClosed",
    "EngineStats",
    "Event",
    "FinishReason",
    "GenerationFailed",
    "Handle",
    "Histogram",
    "InvalidRequest",
    "QueueFull",
    "SamplingParams",
    "Usage",
]

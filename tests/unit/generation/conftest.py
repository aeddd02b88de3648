"""Tiny real language models (random weights) and a trained byte-level BPE tokenizer for the engine tests."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, TypeVar

import pytest
import torch
from torch import nn

from skylift.data._tokenizer import TextTokenizer
from skylift.generation import Completion, Engine, SamplingParams
from skylift.models import build_model
from skylift.spec import ModelSpec

T = TypeVar("T")

TEXT = (
    "There were four of us - George, and William Samuel Harris, and myself, and Montmorency. "
    "We were sitting in my room, smoking, and talking about how bad we were - bad from a medical "
    "point of view I mean, of course. Caf\u00e9, na\u00efve, \u00fcber, \u2713 and \u00e9t\u00e9. "
)


@pytest.fixture(scope="session")
def tokenizer() -> TextTokenizer:
    return TextTokenizer.train_bpe([TEXT] * 20, 300)


def tiny_lm(
    vocab: int,
    positions: str = "rope",
    norm: str = "rms",
    mlp: str = "swiglu",
    context: int = 64,
    seed: int = 0,
) -> nn.Module:
    """A 2-block decoder LM with a final norm and a tied head, random weights, in eval mode."""
    torch.manual_seed(seed)
    block = {"heads": 4, "repeat": 2, "positions": positions, "norm": norm, "mlp": mlp}
    layers = [
        {"token_embedding": {"dim": 32}},
        {"decoder_block": block},
        {"norm": {"kind": norm}},
        {"lm_head": {"tie_embedding": True}},
    ]
    return build_model(ModelSpec(layers=layers), (context,), vocab, vocab_size=vocab).eval()


def greedy_reference(model: nn.Module, prompt: list[int], new: int) -> list[int]:
    """Greedy tokens recomputing the whole sequence at every step: no cache."""
    ids = torch.tensor([prompt])
    with torch.no_grad():
        for _ in range(new):
            ids = torch.cat([ids, model(ids)[:, -1].argmax(-1, keepdim=True)], dim=1)
    out: list[int] = ids[0, len(prompt) :].tolist()
    return out


@pytest.fixture
def engines() -> Iterator[Callable[..., Engine]]:
    """Engine(...) that is closed after the test, so no engine thread outlives it."""
    made: list[Engine] = []

    def make(*args: Any, **kwargs: Any) -> Engine:
        made.append(Engine(*args, **kwargs))
        return made[-1]

    yield make
    for engine in made:
        engine.close()


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def generate(engine: Engine, prompt: list[int], params: SamplingParams) -> Completion:
    """One request, submitted and read on a fresh event loop."""

    async def go() -> Completion:
        return await engine.submit(prompt, params).collect()

    return asyncio.run(go())

"""Decoding with the KV cache gives exactly the tokens of recomputing the whole sequence each step."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
import torch

from skylift.data._tokenizer import TextTokenizer
from skylift.errors import SpecError
from skylift.generation import Engine, SamplingParams
from skylift.generation._runner import CachedLM
from skylift.models import build_model
from skylift.spec import ModelSpec

from .conftest import generate, greedy_reference, run, tiny_lm

GREEDY = SamplingParams(max_tokens=24, temperature=0.0, ignore_eos=True)
PROMPTS = [[5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17], [20, 21], [30, 31, 32, 33, 34], [40]]


@pytest.mark.parametrize(
    ("positions", "norm", "mlp"),
    [
        ("rope", "rms", "swiglu"),
        ("rope", "layer", "gelu"),
        ("learned", "layer", "gelu"),
        ("learned", "rms", "swiglu"),
        ("none", "layer", "swiglu"),
    ],
)
def test_cached_greedy_equals_full_recompute(
    tokenizer: TextTokenizer, engines: Callable[..., Engine], positions: str, norm: str, mlp: str
) -> None:
    model = tiny_lm(tokenizer.vocab_size, positions, norm, mlp)
    # 3 slots for 4 requests: one waits and joins later; a step budget of 5 tokens chunks the long
    # prompt and mixes prompt chunks with decoding rows; finishing at different lengths moves slots.
    engine = engines(model, tokenizer, context=64, max_running=3, max_step_tokens=5)
    lengths = [24, 7, 15, 11]

    async def go() -> list[list[int]]:
        handles = [
            engine.submit(p, SamplingParams(max_tokens=n, temperature=0.0, ignore_eos=True))
            for p, n in zip(PROMPTS, lengths, strict=True)
        ]
        done = await asyncio.gather(*(h.collect() for h in handles))
        return [list(c.token_ids) for c in done]

    got = run(go())
    for prompt, n, tokens in zip(PROMPTS, lengths, got, strict=True):
        assert tokens == greedy_reference(model, prompt, n)


def test_one_long_prompt_read_in_many_chunks(
    tokenizer: TextTokenizer, engines: Callable[..., Engine]
) -> None:
    model = tiny_lm(tokenizer.vocab_size, "learned", "layer", "gelu")
    prompt = [(7 * i) % 250 + 2 for i in range(50)]
    engine = engines(model, tokenizer, context=64, max_running=1, max_step_tokens=3)
    out = generate(engine, prompt, SamplingParams(max_tokens=14, temperature=0.0, ignore_eos=True))
    assert list(out.token_ids) == greedy_reference(model, prompt, 14)
    assert engine.stats().steps >= 17 + 13  # ceil(50 / 3) prompt steps, then one per token


def test_cache_is_preallocated_at_its_full_size(tokenizer: TextTokenizer) -> None:
    lm = CachedLM(tiny_lm(tokenizer.vocab_size), slots=5, context=40)
    # 2 blocks x (keys + values) x 5 slots x 40 positions x 32 dims x 4 bytes
    assert lm.cache_bytes == 2 * 2 * 5 * 40 * 32 * 4


def test_models_that_cannot_generate_are_refused(tokenizer: TextTokenizer) -> None:
    V = tokenizer.vocab_size
    bidirectional = [
        {"token_embedding": {"dim": 16}},
        {"decoder_block": {"heads": 2, "causal": False}},
        {"lm_head": {}},
    ]
    model = build_model(ModelSpec(layers=bidirectional), (16,), V, vocab_size=V)
    with pytest.raises(SpecError, match="not causal"):
        CachedLM(model, 2, 16)
    classifier = [
        {"token_embedding": {"dim": 16}},
        {"decoder_block": {"heads": 2}},
        {"pool": {}},
        {"dense": {"units": 3}},
    ]
    with pytest.raises(SpecError, match="token_embedding and ends with lm_head"):
        CachedLM(build_model(ModelSpec(layers=classifier), (16,), 3, vocab_size=V), 2, 16)
    mlp = build_model(ModelSpec(input_shape=[4], layers=[{"dense": {"units": 3}}]), (4,), 3)
    with pytest.raises(SpecError, match="cannot generate"):
        CachedLM(mlp, 2, 16)


def test_context_beyond_learned_positions_is_refused(tokenizer: TextTokenizer) -> None:
    model = tiny_lm(tokenizer.vocab_size, "learned", context=32)
    with pytest.raises(SpecError, match="exceeds the 32 learned positions"):
        Engine(model, tokenizer, context=64)
    with pytest.raises(SpecError, match="context is required"):
        Engine(tiny_lm(tokenizer.vocab_size, "rope"), tokenizer)


def test_training_forward_is_untouched_by_generation(
    tokenizer: TextTokenizer, engines: Callable[..., Engine]
) -> None:
    model = tiny_lm(tokenizer.vocab_size)
    ids = torch.tensor([PROMPTS[0]])
    with torch.no_grad():
        before = model(ids)
    engine = engines(model, tokenizer, context=64)
    generate(engine, PROMPTS[1], GREEDY)
    with torch.no_grad():
        assert torch.equal(model(ids), before)

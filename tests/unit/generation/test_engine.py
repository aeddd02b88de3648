"""The engine's contract: seeded sampling, continuous batching, cancel, deadlines, queue budget, stops."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from skylift.data._tokenizer import TextTokenizer
from skylift.generation import (
    ContextExceeded,
    Engine,
    EngineClosed,
    Event,
    InvalidRequest,
    QueueFull,
    SamplingParams,
)
from skylift.models import build_model
from skylift.spec import ModelSpec

from .conftest import generate, greedy_reference, run, tiny_lm

Engines = Callable[..., Engine]
PROMPT = [10, 11, 12, 13, 14]


def greedy(n: int) -> SamplingParams:
    return SamplingParams(max_tokens=n, temperature=0.0, ignore_eos=True)


@pytest.mark.parametrize("top_p", [1.0, 0.8])
def test_a_seeded_request_gives_the_same_tokens_alone_and_batched(
    tokenizer: TextTokenizer, engines: Engines, top_p: float
) -> None:
    engine = engines(tiny_lm(tokenizer.vocab_size), tokenizer, context=64, max_running=8, max_step_tokens=16)
    params = SamplingParams(max_tokens=30, temperature=1.0, top_p=top_p, seed=1234, ignore_eos=True)
    alone = generate(engine, PROMPT, params)

    async def batched() -> list[tuple[int, ...]]:
        others = [
            engine.submit(
                [20 + i, 30 + i, 40 + i], SamplingParams(max_tokens=10 + 3 * i, temperature=0.9, seed=i)
            )
            for i in range(5)
        ]
        mine = engine.submit(PROMPT, params)
        done = await asyncio.gather(mine.collect(), *(h.collect() for h in others))
        return [c.token_ids for c in done]

    together = run(batched())
    assert together[0] == alone.token_ids
    reseeded = generate(engine, PROMPT, SamplingParams(max_tokens=30, temperature=1.0, top_p=top_p, seed=99))
    assert reseeded.token_ids != alone.token_ids  # the seed does decide the draws


def test_sampling_draws_from_the_tempered_distribution(tokenizer: TextTokenizer, engines: Engines) -> None:
    model = tiny_lm(tokenizer.vocab_size)
    engine = engines(model, tokenizer, context=64, max_running=64, max_waiting=512)
    with torch.no_grad():
        logits_V = model(torch.tensor([PROMPT]))[0, -1]

    def first_tokens(temperature: float, top_p: float = 1.0, n: int = 400) -> list[int]:
        async def go() -> list[int]:
            params = [
                SamplingParams(max_tokens=1, temperature=temperature, top_p=top_p, seed=s) for s in range(n)
            ]
            done = await asyncio.gather(*(engine.submit(PROMPT, p).collect() for p in params))
            return [c.token_ids[0] if c.token_ids else -1 for c in done]

        return run(go())

    temperature, n = 0.02, 400
    probs_V = torch.softmax(logits_V / temperature, dim=-1)
    drawn = first_tokens(temperature, n=n)
    for token in probs_V.topk(3).indices.tolist():
        p = float(probs_V[token])
        assert abs(drawn.count(token) - n * p) <= 5 * (n * p * (1 - p)) ** 0.5 + 1
    assert len(set(first_tokens(2.0, n=100))) > 30  # near-flat over ~300 tokens
    top = int(logits_V.argmax())
    assert set(first_tokens(2.0, top_p=1e-6, n=20)) == {top}  # the nucleus is the top token alone


def test_requests_join_and_leave_the_running_batch(tokenizer: TextTokenizer, engines: Engines) -> None:
    model = tiny_lm(tokenizer.vocab_size)
    engine = engines(model, tokenizer, context=64, max_running=4)

    async def go() -> tuple[list[int], list[int], int, int]:
        long = engine.submit(PROMPT, greedy(50))
        long_tokens: list[int] = []
        async for event in long:
            long_tokens += event.token_ids
            if len(long_tokens) >= 5:
                break
        short = await engine.submit([40, 41], greedy(4)).collect()
        at_short_end = len(long_tokens) + sum(len(e.token_ids) for e in long._events)
        async for event in long:
            long_tokens += event.token_ids
        return long_tokens, list(short.token_ids), at_short_end, engine.stats().steps

    long_tokens, short_tokens, at_short_end, steps = run(go())
    assert at_short_end < 50  # the short one finished while the long one was still decoding
    assert long_tokens == greedy_reference(model, PROMPT, 50)
    assert short_tokens == greedy_reference(model, [40, 41], 4)
    assert steps < 50 + 4  # they shared steps


def test_cancel_frees_the_slot_at_once(tokenizer: TextTokenizer, engines: Engines) -> None:
    engine = engines(tiny_lm(tokenizer.vocab_size), tokenizer, context=512, max_running=1)

    async def go() -> tuple[list[Event], int, str, int]:
        first = engine.submit(PROMPT, greedy(500))
        second = engine.submit([40, 41], greedy(3))
        events = [await first.__anext__()]
        stats = engine.stats()
        assert (stats.running, stats.waiting) == (1, 1)  # the second waits for the only slot
        first.cancel()
        done = await second.collect()  # runs once the slot is free
        events += [e async for e in first]
        return events, done.usage.completion_tokens, done.finish_reason, engine.stats().running

    events, completion, reason, running = run(go())
    assert (completion, reason, running) == (3, "length", 0)
    assert events[-1].finish_reason == "cancelled"
    assert events[-1].usage is not None and events[-1].usage.completion_tokens < 500
    assert engine.stats().finished["cancelled"] == 1


def test_deadlines_end_waiting_and_running_requests(tokenizer: TextTokenizer, engines: Engines) -> None:
    engine = engines(tiny_lm(tokenizer.vocab_size), tokenizer, context=4096, max_running=1)

    async def go() -> tuple[str, int, str, int, str, int]:
        running = engine.submit(PROMPT, greedy(4000), deadline_s=0.5)
        waiting = engine.submit(PROMPT, greedy(5), deadline_s=0.1)
        expired = engine.submit(PROMPT, greedy(5), deadline_s=0.0)
        r, w, e = await asyncio.gather(running.collect(), waiting.collect(), expired.collect())
        return (
            r.finish_reason,
            r.usage.completion_tokens,
            w.finish_reason,
            w.usage.completion_tokens,
            e.finish_reason,
            e.usage.completion_tokens,
        )

    start = time.monotonic()
    r_reason, r_tokens, w_reason, w_tokens, e_reason, e_tokens = run(go())
    assert time.monotonic() - start < 30
    assert (w_reason, w_tokens, e_reason, e_tokens) == ("deadline", 0, "deadline", 0)
    assert r_reason == "deadline" and 0 < r_tokens < 4000


def test_past_the_queue_budget_submit_raises_queue_full(tokenizer: TextTokenizer, engines: Engines) -> None:
    engine = engines(tiny_lm(tokenizer.vocab_size), tokenizer, context=512, max_running=1, max_waiting=2)

    async def go() -> tuple[int, QueueFull, list[str]]:
        handles = []
        with pytest.raises(QueueFull) as raised:
            for _ in range(10):
                handles.append(engine.submit(PROMPT, greedy(400)))
        for h in handles:
            h.cancel()
        done = await asyncio.gather(*(h.collect() for h in handles))
        return len(handles), raised.value, [c.finish_reason for c in done]

    accepted, error, reasons = run(go())
    assert 2 <= accepted <= 3  # the waiting 2, plus the running one if it was already admitted
    assert error.retry_after_s >= 1 and "limit 2" in str(error)
    assert reasons == ["cancelled"] * accepted
    assert engine.stats().rejected == 1


def test_thousands_of_requests_keep_memory_bounded(tokenizer: TextTokenizer, engines: Engines) -> None:
    engine = engines(tiny_lm(tokenizer.vocab_size), tokenizer, context=64, max_running=8, max_waiting=32)

    async def wave() -> tuple[int, int, int]:
        handles, rejected, most_waiting = [], 0, 0
        for i in range(1500):
            try:
                handles.append(engine.submit([2 + i % 250, 7], greedy(4)))
            except QueueFull:
                rejected += 1
            if i % 100 == 0:
                most_waiting = max(most_waiting, engine.stats().waiting)
                await asyncio.sleep(0.005)  # let some finish, as clients come and go
        done = await asyncio.gather(*(h.collect() for h in handles))
        assert all(c.usage.completion_tokens == 4 for c in done)
        return len(handles), rejected, most_waiting

    accepted, rejected, most_waiting = run(wave())
    assert accepted >= 32 and rejected > 0 and most_waiting <= 32
    rss_before = _rss_mb()
    for _ in range(2):
        run(wave())
    assert _rss_mb() - rss_before < 30  # 3000 more requests, same memory
    stats = engine.stats()
    assert (stats.running, stats.waiting) == (0, 0)
    assert engine._sched.running == [] and not engine._sched.waiting


def test_stop_strings_end_the_text_and_are_never_sent(tokenizer: TextTokenizer, engines: Engines) -> None:
    engine = engines(tiny_lm(tokenizer.vocab_size, seed=3), tokenizer, context=128)
    full = generate(engine, PROMPT, greedy(80)).text
    start = next(i for i in range(3, len(full) - 2) if "\ufffd" not in full[i : i + 2])
    stop = full[start : start + 2]
    expected = full[: full.index(stop)]

    async def stream() -> tuple[list[Event], str]:
        events = [
            e
            async for e in engine.submit(
                PROMPT, SamplingParams(max_tokens=80, temperature=0.0, stop=["zzzq", stop])
            )
        ]
        return events, "".join(e.text for e in events)

    events, text = run(stream())
    assert text == expected
    assert events[-1].finish_reason == "stop"
    assert all(stop not in e.text for e in events)


def test_end_of_text_token_stops_unless_ignored(tokenizer: TextTokenizer, engines: Engines) -> None:
    V, eos = tokenizer.vocab_size, tokenizer.eos_id
    assert eos is not None
    layers = [{"token_embedding": {"dim": 16}}, {"decoder_block": {"heads": 2}}, {"lm_head": {"bias": True}}]
    model = build_model(ModelSpec(layers=layers), (32,), V, vocab_size=V).eval()
    with torch.no_grad():
        model[-1].bias[eos] = 1e4  # the model always says end of text
    engine = engines(model, tokenizer, context=32)
    stopped = generate(engine, PROMPT, SamplingParams(max_tokens=5, temperature=0.7))
    assert (stopped.finish_reason, stopped.token_ids, stopped.text) == ("stop", (), "")
    assert stopped.usage.completion_tokens == 1
    ignored = generate(engine, PROMPT, SamplingParams(max_tokens=5, temperature=0.7, ignore_eos=True))
    assert (ignored.finish_reason, ignored.usage.completion_tokens) == ("length", 5)


def test_requests_that_can_never_run_are_refused(tokenizer: TextTokenizer, engines: Engines) -> None:
    engine = engines(tiny_lm(tokenizer.vocab_size), tokenizer, context=16)

    async def go() -> None:
        with pytest.raises(ContextExceeded, match="the prompt has 16 tokens; the context holds 16"):
            engine.submit(list(range(2, 18)), greedy(1))
        with pytest.raises(
            ContextExceeded, match=r"= 17 exceeds the context of 16 tokens; use max_tokens <= 6"
        ):
            engine.submit(list(range(2, 12)), greedy(7))
        with pytest.raises(InvalidRequest, match="prompt is empty"):
            engine.submit([], greedy(1))
        with pytest.raises(InvalidRequest, match=r"integers in \[0, "):
            engine.submit([5, tokenizer.vocab_size], greedy(1))
        # no max_tokens: whatever the context leaves
        done = await engine.submit(
            list(range(2, 12)), SamplingParams(temperature=0.0, ignore_eos=True)
        ).collect()
        assert done.usage.completion_tokens == 6

    run(go())


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("max_tokens", 0, "max_tokens must be >= 1, got 0"),
        ("temperature", -0.1, "temperature must be in [0, 2], got -0.1"),
        ("temperature", 2.5, "temperature must be in [0, 2], got 2.5"),
        ("top_p", 0.0, "top_p must be in (0, 1], got 0.0"),
        ("stop", ["a", ""], "stop strings must be non-empty"),
        ("stop", ["a", "b", "c", "d", "e"], "stop takes at most 4 strings, got 5"),
    ],
)
def test_bad_sampling_params_name_the_field(field: str, value: object, message: str) -> None:
    with pytest.raises(InvalidRequest) as raised:
        SamplingParams(**{field: value})  # type: ignore[arg-type]
    assert message in str(raised.value)


def test_stats_count_tokens_and_latencies(tokenizer: TextTokenizer, engines: Engines) -> None:
    engine = engines(tiny_lm(tokenizer.vocab_size), tokenizer, context=64, max_running=2)

    async def go() -> list[int]:
        handles = [engine.submit(PROMPT[: i + 1], greedy(3 + i)) for i in range(4)]
        return [(await h.collect()).usage.completion_tokens for h in handles]

    completions = run(go())
    stats = engine.stats()
    assert stats.finished == {"length": 4}
    assert stats.generated_tokens == sum(completions) == 3 + 4 + 5 + 6
    assert stats.prompt_tokens == 1 + 2 + 3 + 4
    assert stats.ttft.count == 4 and stats.inter_token.count == sum(completions) - 4
    assert 0 < stats.ttft.sum < 30 and stats.kv_cache_bytes > 0


def test_the_event_loop_stays_responsive_while_decoding(tokenizer: TextTokenizer, engines: Engines) -> None:
    engine = engines(tiny_lm(tokenizer.vocab_size), tokenizer, context=512, max_running=4)

    async def go() -> tuple[int, float]:
        ticks = 0
        handles = [engine.submit([5 + i], greedy(400)) for i in range(4)]
        work = asyncio.gather(*(h.collect() for h in handles))
        start = time.monotonic()
        while not work.done():
            await asyncio.sleep(0.005)
            ticks += 1
        await work
        return ticks, time.monotonic() - start

    ticks, seconds = run(go())
    assert ticks >= seconds / 0.1  # at least one tick per 100 ms: the loop never waited on a step


def test_close_cancels_or_drains_and_then_refuses(tokenizer: TextTokenizer) -> None:
    model = tiny_lm(tokenizer.vocab_size)

    async def go(drain: bool) -> str:
        engine = Engine(model, tokenizer, context=256, max_running=1)
        handle = engine.submit(PROMPT, greedy(200))
        await asyncio.get_running_loop().run_in_executor(None, lambda: engine.close(drain=drain))
        with pytest.raises(EngineClosed):
            engine.submit(PROMPT, greedy(1))
        return (await handle.collect()).finish_reason

    assert run(go(drain=True)) == "length"
    assert run(go(drain=False)) == "cancelled"


def _rss_mb() -> float:
    return int(Path("/proc/self/statm").read_text().split()[1]) * 4096 / 2**20

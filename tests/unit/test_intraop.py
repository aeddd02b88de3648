"""ThreadChooser: the faster torch thread count wins a trial (real calls, really timed), a changing
speed is followed, answers are the same bits at every count, and a generation engine under a
chooser that switches every few steps gives the tokens of one that never does."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
import torch

from skylift._intraop import ROUNDS, ThreadChooser
from skylift.data._tokenizer import TextTokenizer
from skylift.generation import Engine, SamplingParams

from .generation.conftest import TEXT, generate, tiny_lm


@pytest.fixture(autouse=True)
def _restore_threads() -> Iterator[None]:
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def _sleeper(ms_at: dict[int, float]) -> object:
    """A call that takes ms_at[torch's thread count] milliseconds, as a model would."""
    time.sleep(ms_at[torch.get_num_threads()] / 1000)
    return torch.get_num_threads()


def _calls(chooser: ThreadChooser, ms_at: dict[int, float], n: int) -> list[object]:
    return [chooser.run(1, lambda: _sleeper(ms_at)) for _ in range(n)]


def test_candidates_are_the_most_and_its_halvings() -> None:
    assert ThreadChooser(8).candidates == (8, 4, 2, 1)
    assert ThreadChooser(6).candidates == (6, 3, 1)
    assert ThreadChooser(2).candidates == (2, 1)
    one = ThreadChooser(1)
    assert one.candidates == (1,)
    _calls(one, {1: 0.1}, 50)
    assert one.trials == 0  # nothing to choose between


def test_the_faster_count_is_chosen_and_a_change_of_speed_is_followed() -> None:
    chooser = ThreadChooser(2, first_s=0.1, period_s=0.05)
    seen = _calls(chooser, {2: 3.0, 1: 1.0}, 10)  # the 2-thread calls wait for a neighbour's core
    assert set(seen) == {2} and chooser.trials == 0  # before the first trial: the most
    while chooser.trials == 0:
        seen += _calls(chooser, {2: 3.0, 1: 1.0}, 1)
    assert seen.count(1) == ROUNDS  # the trial ran each count ROUNDS times
    assert chooser.threads == 1 and chooser.switches == 1
    assert set(_calls(chooser, {2: 3.0, 1: 1.0}, 20)) == {1}
    # the neighbour left: 2 threads are faster again, and the next trial sees it
    _calls(chooser, {2: 1.0, 1: 3.0}, 80)
    assert chooser.threads == 2 and chooser.switches == 2
    before = chooser.switches
    _calls(chooser, {2: 1.0, 1: 1.02}, 80)  # within the margin: no flapping
    assert chooser.threads == 2 and chooser.switches == before


def test_a_call_that_raises_is_not_counted() -> None:
    chooser = ThreadChooser(2, first_s=0.0)

    def boom() -> None:
        raise ValueError("model bug")

    _calls(chooser, {2: 1.0, 1: 3.0}, 3)  # the trial has begun
    with pytest.raises(ValueError, match="model bug"):
        chooser.run(1, boom)
    _calls(chooser, {2: 1.0, 1: 3.0}, 2 * ROUNDS - 3)
    assert chooser.trials == 0  # the failed call took no turn of the trial
    _calls(chooser, {2: 1.0, 1: 3.0}, 1)
    assert chooser.trials == 1 and chooser.threads == 2


def test_the_count_is_the_calling_threads_own() -> None:
    torch.set_num_threads(2)
    chooser = ThreadChooser(2, first_s=0.0)
    inside: list[object] = []
    worker = threading.Thread(target=lambda: inside.extend(_calls(chooser, {2: 1.0, 1: 0.2}, 4 * ROUNDS)))
    worker.start()
    worker.join()
    assert 1 in inside and chooser.threads == 1


@pytest.mark.parametrize("shape", [(1, 384, 1152), (16, 384, 1152), (16, 1536, 384), (64, 384, 8192)])
def test_answers_are_the_same_bits_on_one_and_two_threads(shape: tuple[int, int, int]) -> None:
    m, k, n = shape
    g = torch.Generator().manual_seed(m + k + n)
    x, w = torch.randn(m, k, generator=g), torch.randn(n, k, generator=g)
    q = torch.randn(m, 6, 40, 64, generator=g)
    norm = torch.nn.LayerNorm(k)

    def ops() -> list[torch.Tensor]:
        y = torch.nn.functional.linear(x, w)
        attn = torch.nn.functional.scaled_dot_product_attention(q, q, q, is_causal=True)
        return [y, attn, norm(x), torch.nn.functional.gelu(y), torch.softmax(y, -1)]

    torch.set_num_threads(1)
    one = ops()
    torch.set_num_threads(2)
    two = ops()
    assert all(torch.equal(a, b) for a, b in zip(one, two, strict=True))


def test_an_engine_under_a_switching_chooser_gives_the_same_tokens() -> None:
    tokenizer = TextTokenizer.train_bpe([TEXT] * 20, 300)
    model = tiny_lm(tokenizer.vocab_size)
    params = SamplingParams(max_tokens=40, temperature=0.8, seed=7, ignore_eos=True)
    with Engine(model, tokenizer, context=64, max_running=4) as plain:
        expected = generate(plain, [10, 11, 12, 13], params).token_ids
    chooser = ThreadChooser(2, first_s=0.0, period_s=0.0)  # a trial every step: counts alternate
    with Engine(model, tokenizer, context=64, max_running=4, threads=chooser) as switching:
        got = generate(switching, [10, 11, 12, 13], params).token_ids
    assert got == expected and chooser.trials >= 3

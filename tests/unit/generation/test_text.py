"""Streamed text: deltas add up to the text, split characters wait, stop strings are cut and never sent."""

from __future__ import annotations

import pytest

from skylift.data._tokenizer import TextTokenizer
from skylift.generation._text import TextStream

SENTENCE = "We were sitting in my room, caf\u00e9 \u2713 \u00fcber na\u00efve."


def _ids(tokenizer: TextTokenizer, text: str) -> list[int]:
    ids, _ = tokenizer.encode_pieces([text])
    return [int(i) for i in ids]


def _stream(tokenizer: TextTokenizer, text: str, stops: list[str]) -> tuple[list[str], bool, str]:
    prompt = _ids(tokenizer, "There were four of us.")
    stream = TextStream(tokenizer, prompt, stops)
    deltas, stopped = [], False
    for token in _ids(tokenizer, text):
        stopped = stream.add(token)
        if stopped:
            break
        deltas.append(stream.delta(final=False))
    stream.flush()
    deltas.append(stream.delta(final=True))
    return deltas, stopped, stream.text


def test_deltas_add_up_to_the_text_and_never_split_a_character(tokenizer: TextTokenizer) -> None:
    raw_pieces = [tokenizer.decode([t]) for t in _ids(tokenizer, SENTENCE)]
    assert any("\ufffd" in p for p in raw_pieces)  # the tokenizer does split characters here
    deltas, stopped, text = _stream(tokenizer, SENTENCE, [])
    assert "".join(deltas) == text == SENTENCE and not stopped
    assert not any("\ufffd" in d for d in deltas)


@pytest.mark.parametrize("stop", ["in my", "m, c", "\u2713", "na\u00efve."])
def test_a_stop_string_cuts_the_text_before_it(tokenizer: TextTokenizer, stop: str) -> None:
    deltas, stopped, text = _stream(tokenizer, SENTENCE, ["never there", stop])
    expected = SENTENCE[: SENTENCE.index(stop)]
    assert stopped and text == expected and "".join(deltas) == expected
    # no delta ever carried a start of the stop string that later turned out to be the stop
    sent = ""
    for delta in deltas:
        sent += delta
        assert SENTENCE.startswith(sent) and len(sent) <= len(expected)


def test_held_back_text_that_is_not_a_stop_is_sent_in_the_end(tokenizer: TextTokenizer) -> None:
    deltas, stopped, text = _stream(tokenizer, "We were in my", ["in my room"])
    assert not stopped and "".join(deltas) == text == "We were in my"
    assert deltas[-1].endswith("in my")  # held back until the end proved it was not the stop

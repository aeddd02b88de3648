"""The OpenAI mode's requests and settings: distinct streamed bodies, routes, refused combinations."""

from __future__ import annotations

import json
import pickle

import pytest

from skylift.errors import SpecError
from skylift.loadgen import BenchConfig
from skylift.loadgen._config import parse_url
from skylift.loadgen._openai import WORDS, PromptBodies, _head


def test_bodies_stream_with_usage_and_differ_only_in_their_number() -> None:
    bodies = PromptBodies("tiny-lm", chat=False, words=5, max_tokens=8)
    one, two = json.loads(bodies(1)), json.loads(bodies(2))
    assert one == {
        "model": "tiny-lm",
        "max_tokens": 8,
        "stream": True,
        "prompt": "00001 " + " ".join(WORDS[:5]),
        "stream_options": {"include_usage": True},
    }
    assert two["prompt"] == "00002 " + " ".join(WORDS[:5])
    chat = json.loads(PromptBodies("m", chat=True, words=70, max_tokens=1, ignore_eos=True)(3))
    assert chat["messages"] == [{"role": "user", "content": "00003 " + " ".join((WORDS * 2)[:70])}]
    assert chat["ignore_eos"] is True and "prompt" not in chat
    same = PromptBodies("m", chat=False, words=2, max_tokens=1, unique=False)
    assert same(1) == same(2)
    assert pickle.loads(pickle.dumps(bodies))(1) == bodies(1)  # crosses to the client processes


def test_routes_and_the_request_head() -> None:
    target = parse_url("http://127.0.0.1:8000/prefix")
    assert target.route("openai-completions", "m") == "/prefix/v1/completions"
    assert target.route("openai-chat", "m") == "/prefix/v1/chat/completions"
    config = BenchConfig("http://127.0.0.1:8000", "m", protocol="openai-chat", api_key="sk_x")
    head = _head(config).decode()
    assert head.startswith("POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:8000\r\n")
    assert "Authorization: Bearer sk_x\r\n" in head and head.endswith("Accept: text/event-stream\r\n")


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("max_tokens", 0, "max_tokens must be a whole number from 1"),
        ("prompt_tokens", -1, "prompt_tokens must be a whole number from 1"),
        ("rows", 2, "rows does not apply to protocol openai-chat"),
        ("features", 3, "features does not apply to protocol openai-chat"),
        ("repeat", 0.5, "repeat does not apply to protocol openai-chat"),
    ],
)
def test_settings_that_do_not_fit_a_stream_are_refused(field: str, value: object, message: str) -> None:
    with pytest.raises(SpecError, match=message):
        BenchConfig("http://127.0.0.1:1", "m", protocol="openai-chat", **{field: value})  # type: ignore[arg-type]

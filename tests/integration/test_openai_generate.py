"""/v1/completions and /v1/chat/completions on a small GPT trained by skylift, through the
continuous-batching engine, queried with the official `openai` client (with and without
streaming) and raw HTTP for what a client would hide: SSE framing, bad input, disconnects,
backpressure, hot swap."""

from __future__ import annotations

import asyncio
import http.client
import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
import torch

from skylift.data._tokenizer import TextTokenizer
from skylift.registry import Registry
from skylift.security.apikeys import KeyStore
from skylift.spec import parse_spec
from skylift.train import fit
from tests.integration.serve_helpers import Server, running
from tests.integration.task_texts import PROSE

pytestmark = pytest.mark.slow

CONTEXT = 64


def _lm(corpus: Path, epochs: int) -> dict[str, object]:
    return {
        "name": "tiny-lm",
        "task": "language_modeling",
        "data": {
            "train": str(corpus),
            "tokenizer": {"train": "bpe", "vocab_size": 300},
            "block_size": CONTEXT,
            "validation_split": 0.1,
        },
        "model": {
            "layers": [
                {"token_embedding": {"dim": 32}},
                {
                    "decoder_block": {
                        "heads": 2,
                        "mlp": "swiglu",
                        "norm": "rms",
                        "positions": "rope",
                        "repeat": 2,
                    }
                },
                {"norm": {"kind": "rms"}},
                {"lm_head": {"tie_embedding": True}},
            ]
        },
        "train": {
            "epochs": epochs,
            "batch_size": 8,
            "optimizer": {"name": "adamw", "lr": 0.003},
            "threads": 1,
        },
        "distributed": {"workers": 1},
    }


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("home")
    corpus = home / "corpus"
    corpus.mkdir()
    for i in range(4):
        (corpus / f"part{i}.txt").write_text(PROSE * (i + 1))
    fit(parse_spec(_lm(corpus, 2)), home=home, run_id="lm")
    numeric = {
        "name": "diabetes",
        "task": "regression",
        "data": {"train": "builtin:diabetes"},
        "model": {"layers": [{"dense": {"units": 1}}]},
        "train": {"epochs": 1, "threads": 1},
        "distributed": {"workers": 1},
    }
    fit(parse_spec(numeric), home=home, run_id="diabetes")
    return home


@pytest.fixture(scope="module")
def keys(home: Path) -> dict[str, str]:
    store = KeyStore(home / "keys.json")
    return {
        "app": store.create("app", ("predict",), rate_limit=100000)[0],
        "ops": store.create("ops", ("metrics", "admin"))[0],
    }


@pytest.fixture(scope="module")
def server(home: Path, keys: dict[str, str]) -> Iterator[Server]:
    with running(home, "tiny-lm", "diabetes", "--replicas", "1", key=keys["app"]) as s:
        yield s


def _client(server: Server, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"http://127.0.0.1:{server.port}/v1", api_key=key, max_retries=0)


def _tokens(home: Path, text: str) -> list[int]:
    tok = TextTokenizer.from_json(Registry(home).load("tiny-lm").tokenizer or "")
    ids, _ = tok.encode_pieces([text])
    return [int(i) for i in ids]


def test_completions_greedy_equal_the_model_run_in_process(
    home: Path, server: Server, keys: dict[str, str]
) -> None:
    prompt = "There were four of us"
    with _client(server, keys["app"]) as client:
        answer = client.completions.create(model="tiny-lm", prompt=prompt, max_tokens=12, temperature=0)
    loaded = Registry(home).load("tiny-lm")
    tok = TextTokenizer.from_json(loaded.tokenizer or "")
    ids = torch.tensor([_tokens(home, prompt)])
    with torch.no_grad():
        for _ in range(12):
            ids = torch.cat([ids, loaded.module(ids)[:, -1].argmax(-1, keepdim=True)], dim=1)
    new = ids[0, -12:].tolist()
    choice = answer.choices[0]
    if tok.eos_id in new:  # the model may end its text early
        assert choice.finish_reason == "stop"
        new = new[: new.index(tok.eos_id)]
    else:
        assert choice.finish_reason == "length"
    assert choice.text == tok.decode(new)
    assert answer.usage is not None and answer.usage.prompt_tokens == len(_tokens(home, prompt))
    assert answer.usage.total_tokens == answer.usage.prompt_tokens + answer.usage.completion_tokens
    assert answer.object == "text_completion" and answer.model == "tiny-lm" and answer.id.startswith("cmpl-")


def test_a_seed_repeats_a_sampled_answer_and_streaming_gives_the_same_text(
    server: Server, keys: dict[str, str]
) -> None:
    with _client(server, keys["app"]) as client:
        kwargs = {
            "model": "tiny-lm",
            "prompt": "We were",
            "max_tokens": 20,
            "temperature": 0.9,
            "top_p": 0.95,
            "seed": 7,
        }
        first = client.completions.create(**kwargs)  # type: ignore[call-overload]
        again = client.completions.create(**kwargs)  # type: ignore[call-overload]
        assert first.choices[0].text == again.choices[0].text
        chunks = list(client.completions.create(**kwargs, stream=True))  # type: ignore[call-overload]
    assert "".join(c.choices[0].text for c in chunks) == first.choices[0].text
    assert chunks[-1].choices[0].finish_reason == first.choices[0].finish_reason
    assert all(c.choices[0].finish_reason is None for c in chunks[:-1])


def test_chat_with_and_without_streaming(home: Path, server: Server, keys: dict[str, str]) -> None:
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Who were there?"}]
    with _client(server, keys["app"]) as client:
        answer = client.chat.completions.create(model="tiny-lm", messages=messages, max_tokens=8, seed=3)  # type: ignore[arg-type]
        stream = client.chat.completions.create(
            model="tiny-lm",
            messages=messages,  # type: ignore[arg-type]
            max_tokens=8,
            seed=3,
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = list(stream)
    message = answer.choices[0].message
    assert message.role == "assistant" and answer.object == "chat.completion"
    prompt = "system: Be brief.\nuser: Who were there?\nassistant:"  # the plain chat template
    assert answer.usage is not None and answer.usage.prompt_tokens == len(_tokens(home, prompt))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == message.content
    assert chunks[-1].choices == [] and chunks[-1].usage == answer.usage
    assert chunks[-2].choices[0].finish_reason == answer.choices[0].finish_reason


def test_sse_framing_ends_with_done(server: Server, keys: dict[str, str]) -> None:
    body = {"model": "tiny-lm", "prompt": "We", "max_tokens": 5, "stream": True}
    headers = {"Authorization": f"Bearer {keys['app']}", "Content-Type": "application/json"}
    status, head, raw = server.request("POST", "/v1/completions", json.dumps(body).encode(), headers)
    assert status == 200 and head["content-type"] == "text/event-stream"
    events = [e for e in raw.decode().split("\n\n") if e]
    assert all(e.startswith("data: ") for e in events) and events[-1] == "data: [DONE]"
    assert json.loads(events[-2][6:])["choices"][0]["finish_reason"] in ("stop", "length")


def test_a_stop_string_ends_the_text_before_it(server: Server, keys: dict[str, str]) -> None:
    with _client(server, keys["app"]) as client:
        full = client.completions.create(
            model="tiny-lm", prompt="There", max_tokens=30, temperature=0
        ).choices[0]
        if len(full.text) < 4:
            pytest.skip("the model ended its text at once")  # pragma: no cover
        stop = full.text[2:4]
        cut = client.completions.create(
            model="tiny-lm", prompt="There", max_tokens=30, temperature=0, stop=[stop]
        )
    assert (
        cut.choices[0].text == full.text[: full.text.index(stop)] and cut.choices[0].finish_reason == "stop"
    )


@pytest.mark.parametrize(
    ("path", "body", "status", "message"),
    [
        ("/v1/completions", {"model": "nope", "prompt": "x"}, 404, "unknown model 'nope'"),
        ("/v1/completions", {"model": "tiny-lm", "prompt": "x " * 200}, 400, "the context holds 64"),
        (
            "/v1/completions",
            {"model": "tiny-lm", "prompt": "x", "max_tokens": 0},
            400,
            "'max_tokens' must be >= 1",
        ),
        (
            "/v1/completions",
            {"model": "tiny-lm", "prompt": "x", "max_tokens": 500},
            400,
            "exceeds the context",
        ),
        (
            "/v1/completions",
            {"model": "tiny-lm", "prompt": "x", "temperature": 2.5},
            400,
            "temperature must be in [0, 2]",
        ),
        (
            "/v1/completions",
            {"model": "tiny-lm", "prompt": "x", "temperature": "hot"},
            400,
            "'temperature' must be",
        ),
        ("/v1/completions", {"model": "tiny-lm", "prompt": "x", "top_p": 0}, 400, "top_p must be in (0, 1]"),
        ("/v1/completions", {"model": "tiny-lm", "prompt": "x", "n": 2}, 400, "'n' must be 1"),
        (
            "/v1/completions",
            {"model": "tiny-lm", "prompt": "x", "stream": "yes"},
            400,
            "'stream' must be a boolean",
        ),
        ("/v1/completions", {"model": "tiny-lm", "prompt": "x", "stop": ["a"] * 5}, 400, "at most 4"),
        ("/v1/completions", {"model": "tiny-lm", "prompt": [99999]}, 400, "model's vocabulary"),
        ("/v1/completions", {"model": "tiny-lm", "prompt": []}, 400, "'prompt' must be"),
        (
            "/v1/completions",
            {"model": "tiny-lm", "prompt": "x", "seed": 2**70},
            400,
            "'seed' must be an integer",
        ),
        ("/v1/completions", {"model": "diabetes", "prompt": "x"}, 400, "is a regressor"),
        (
            "/v1/chat/completions",
            {"model": "tiny-lm", "messages": [{"role": "wizard", "content": "x"}]},
            400,
            "role must be",
        ),
        ("/v1/chat/completions", {"model": "tiny-lm", "messages": []}, 400, "non-empty list"),
        (
            "/v1/chat/completions",
            {"model": "tiny-lm", "messages": [{"role": "user", "content": 3}]},
            400,
            "content must be",
        ),
        ("/v1/chat/completions", {"model": "tiny-lm"}, 400, "'messages' must be"),
        ("/v1/embeddings", {"model": "tiny-lm", "input": "x"}, 400, "is a generator"),
        ("/v2/models/tiny-lm/infer", {"inputs": []}, 400, "use POST /v1/completions"),
    ],
)
def test_bad_generation_requests_are_4xx_in_openai_shape(
    server: Server, keys: dict[str, str], path: str, body: dict, status: int, message: str
) -> None:
    headers = {"Authorization": f"Bearer {keys['app']}", "Content-Type": "application/json"}
    got, _, raw = server.request("POST", path, json.dumps(body).encode(), headers)
    answer = json.loads(raw)
    error = answer["error"] if path.startswith("/v2") else answer["error"]["message"]
    assert got == status and message in error and "\n" not in error
    got, _, raw = server.request(
        "POST", "/v1/completions", b'{"model": "tiny-lm", "prompt": "\xff"}', headers
    )
    assert got == 400 and json.loads(raw)["error"]["type"] == "invalid_request_error"


def _metric(server: Server, key: str, name: str) -> float:
    _, _, raw = server.request("GET", "/metrics", headers={"Authorization": f"Bearer {key}"})
    return sum(
        float(line.split()[-1]) for line in raw.decode().splitlines() if line.startswith(f"skylift_{name}{{")
    )


async def _post_raw(port: int, key: str, body: dict) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 request on its own connection (Connection: close), read to the end."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    data = json.dumps(body).encode()
    head = (
        f"POST /v1/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\nConnection: close\r\n\r\n"
    )
    writer.write(head.encode() + data)
    raw = await reader.read(-1)
    writer.close()
    top, _, rest = raw.partition(b"\r\n\r\n")
    lines = top.decode().split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines[1:])
    if headers.get("transfer-encoding") == "chunked":  # a stream: undo the framing
        body = b""
        while rest:
            size, _, rest = rest.partition(b"\r\n")
            body, rest = body + rest[: int(size, 16)], rest[int(size, 16) + 2 :]
        rest = body
    return int(lines[0].split()[1]), headers, rest


def test_a_client_that_disconnects_mid_stream_frees_its_slot(server: Server, keys: dict[str, str]) -> None:
    before = _metric(server, keys["ops"], "generation_cancelled_total")
    body = json.dumps({"model": "tiny-lm", "prompt": "We", "max_tokens": 60, "stream": True}).encode()
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    conn.request("POST", "/v1/completions", body, {"Authorization": f"Bearer {keys['app']}"})
    response = conn.getresponse()
    assert response.status == 200 and response.read1(64).startswith(b"data: ")
    conn.sock.shutdown(socket.SHUT_RDWR)  # hang up after the first chunk
    conn.close()
    deadline = time.monotonic() + 10
    while (
        time.monotonic() < deadline and _metric(server, keys["ops"], "generation_cancelled_total") <= before
    ):
        time.sleep(0.2)
    assert _metric(server, keys["ops"], "generation_cancelled_total") == before + 1
    assert _metric(server, keys["ops"], "generation_running") == 0
    assert _metric(server, keys["ops"], "generation_time_to_first_token_seconds_count") >= 1


def test_model_threads_run_at_a_measured_torch_thread_count(server: Server, keys: dict[str, str]) -> None:
    from skylift._cpus import usable_cores

    most = min(2, usable_cores())  # one replica: all the cores (2 on the CI machine)
    if most > 1:
        assert f"1 replica(s) of 1-{most} torch threads, whichever measures faster" in server.log.read_text()
    body = json.dumps({"model": "tiny-lm", "prompt": "We", "max_tokens": 30, "temperature": 0}).encode()
    answers = {
        server.request("POST", "/v1/completions", body, {"Authorization": f"Bearer {keys['app']}"})[2]
        for _ in range(3)
    }
    assert len({json.loads(a)["choices"][0]["text"] for a in answers}) == 1
    deadline = time.monotonic() + (10 if most > 1 else 2)
    while time.monotonic() < deadline and _metric(server, keys["ops"], "model_threads") == 0:
        time.sleep(0.2)  # metrics are published every second
    threads = _metric(server, keys["ops"], "model_threads")  # the generator's and the regressor's
    _, _, raw = server.request("GET", "/metrics", headers={"Authorization": f"Bearer {keys['ops']}"})
    if most == 1:  # one core: nothing to choose
        assert threads == 0 and b"skylift_model_thread_switches_total" not in raw
    else:
        assert 2 <= threads <= 2 * most
        assert b"# TYPE skylift_model_thread_switches_total counter" in raw


def test_a_thousand_streams_get_backpressure_not_a_crash(server: Server, keys: dict[str, str]) -> None:
    body = {"model": "tiny-lm", "prompt": "We", "max_tokens": 4, "stream": True}

    async def many() -> list[tuple[int, dict[str, str], bytes]]:
        return await asyncio.gather(*(_post_raw(server.port, keys["app"], body) for _ in range(1000)))

    results = asyncio.run(many())
    statuses = {s for s, _, _ in results}
    assert statuses <= {200, 503} and 200 in statuses and 503 in statuses
    assert all(raw.endswith(b"data: [DONE]\n\n") for s, _, raw in results if s == 200)
    assert all(h["retry-after"].isdigit() for s, h, _ in results if s == 503)
    with _client(server, keys["app"]) as client:
        assert client.completions.create(model="tiny-lm", prompt="We", max_tokens=2).choices
    assert _metric(server, keys["ops"], "generation_rejected_total") > 0
    assert _metric(server, keys["ops"], "replica_rss_bytes") < 2 * 2**30


def test_a_new_version_is_hot_swapped_in(home: Path, server: Server, keys: dict[str, str]) -> None:
    fit(parse_spec(_lm(home / "corpus", 1)), home=home, run_id="lm2")
    headers = {"Authorization": f"Bearer {keys['ops']}"}
    status, _, raw = server.request("POST", "/v2/repository/models/tiny-lm/load", b"", headers)
    assert status == 200 and json.loads(raw)["loaded"] == "tiny-lm:2"
    with _client(server, keys["app"]) as client:
        assert client.completions.create(model="tiny-lm", prompt="We", max_tokens=3).choices
    _, _, raw = server.request(
        "GET", "/v2/models/tiny-lm", headers={"Authorization": f"Bearer {keys['app']}"}
    )
    assert json.loads(raw)["versions"] == ["2"]

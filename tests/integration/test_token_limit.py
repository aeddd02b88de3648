"""Per-key token limits of a real `skylift serve` (2 replicas) of a tiny trained language model: the
budget is shared by the replicas, charged prompt + max_tokens up front and settled at the usage
the answer reports; beyond it a 429 in OpenAI's shape with Retry-After."""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from skylift.cli import main
from skylift.security.apikeys import KeyStore
from tests.integration.serve_helpers import Server, running
from tests.integration.tiny_lm import CONTEXT, train_tiny_lm

pytestmark = pytest.mark.slow

LIMIT = 120  # tokens a minute: 2 a second come back, so a test's few seconds barely refill it
IDS = [10, 11, 12, 13]  # a prompt of exactly 4 tokens
NAMES = ("shared", "refund", "stream-refund", "refused", "wide")


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("home")
    train_tiny_lm(home)
    return home


@pytest.fixture(scope="module")
def keys(home: Path) -> dict[str, str]:
    store = KeyStore(home / "keys.json")
    made = {name: store.create(name, ("predict",), rate_limit=1e6)[0] for name in NAMES}  # server's limit
    made["big"] = store.create("big", ("predict",), rate_limit=1e6, token_limit=1e7)[0]  # its own
    return made


@pytest.fixture(scope="module")
def server(home: Path, keys: dict[str, str]) -> Iterator[Server]:
    args = ("--replicas", "2", "--token-limit", f"{LIMIT}/m")
    with running(home, "tiny-lm", *args, key=keys["big"]) as s:
        yield s


def post(server: Server, key: str, body: dict[str, Any]) -> tuple[int, dict[str, str], Any]:
    """One request on a fresh connection (any replica may take it); a stream's events as a list."""
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    status, head, raw = server.request("POST", "/v1/completions", json.dumps(body).encode(), headers)
    if head.get("content-type") == "text/event-stream":
        return (
            status,
            head,
            [json.loads(e[6:]) for e in raw.decode().split("\n\n") if e[6:] not in ("", "[DONE]")],
        )
    return status, head, json.loads(raw)


def fixed(max_tokens: int, **extra: Any) -> dict[str, Any]:
    """A request that uses exactly 4 + max_tokens tokens (it never stops early)."""
    return {"model": "tiny-lm", "prompt": IDS, "max_tokens": max_tokens, "ignore_eos": True, **extra}


def test_the_replicas_share_one_budget_charged_up_front(server: Server, keys: dict[str, str]) -> None:
    with ThreadPoolExecutor(8) as pool:  # 8 at once over fresh connections: both replicas take some
        answers = list(pool.map(lambda _: post(server, keys["shared"], fixed(36)), range(8)))
    ok = [a for a in answers if a[0] == 200]
    limited = [a for a in answers if a[0] == 429]
    assert len(ok) == LIMIT // 40 and len(limited) == 8 - len(ok)  # 3 x 40 tokens, whichever replica
    assert all(a[2]["usage"]["total_tokens"] == 40 for a in ok)
    _, head, body = limited[0]
    error = body["error"]
    assert error["type"] == "rate_limit_error" and error["code"] == "rate_limit_exceeded"
    assert error["message"].startswith(
        f"the token limit of {LIMIT} tokens/min for key 'shared' is used up: this request takes 40 tokens"
    )
    assert 10 <= int(head["retry-after"]) <= 20  # 40 tokens at 2 a second
    assert post(server, keys["big"], fixed(36))[0] == 200  # another key, its own limit


@pytest.mark.parametrize(("name", "stream"), [("refund", False), ("stream-refund", True)])
def test_what_an_answer_did_not_use_is_refunded(
    server: Server, keys: dict[str, str], name: str, stream: bool
) -> None:
    ask = {"model": "tiny-lm", "prompt": "There were", "temperature": 0}
    _, _, greedy = post(server, keys["big"], {**ask, "max_tokens": 40})
    text = greedy["choices"][0]["text"]
    stop = [text[2:4]] if len(text) >= 4 else []  # else the model ends at once by itself
    extra = {"stream": True, "stream_options": {"include_usage": True}} if stream else {}
    prompt_tokens = greedy["usage"]["prompt_tokens"]
    status, _, answer = post(
        server, keys[name], {**ask, "max_tokens": CONTEXT - prompt_tokens, "stop": stop, **extra}
    )
    usage = answer[-1]["usage"] if stream else answer["usage"]
    assert status == 200 and usage["completion_tokens"] < 10
    # Charged the whole context (64) up front, then given back all but its usage: a second request
    # of 64 fits in what is left (120 - usage). Without the refund only 56 would be.
    status, _, again = post(server, keys[name], fixed(CONTEXT - len(IDS)))
    assert status == 200, again
    status, _, _ = post(server, keys[name], fixed(CONTEXT - len(IDS)))
    assert status == 429


def test_a_request_refused_before_it_runs_costs_nothing(server: Server, keys: dict[str, str]) -> None:
    for _ in range(4):  # 4 x 64 charged would be twice the budget; each is given back at once
        status, _, body = post(server, keys["refused"], fixed(CONTEXT))  # 4 + 64 > the context
        assert status == 400 and "exceeds the context" in body["error"]["message"]
    assert post(server, keys["refused"], fixed(CONTEXT - len(IDS)))[0] == 200


def test_a_request_larger_than_the_whole_budget_says_so(server: Server, keys: dict[str, str]) -> None:
    status, head, body = post(server, keys["wide"], {**fixed(40), "prompt": [IDS] * 3})  # 3 x 44 > 120
    assert status == 429 and "retry-after" not in head  # waiting would not help
    assert body["error"]["message"] == (
        f"this request takes 132 tokens (prompt + max_tokens), more than the token limit of {LIMIT} "
        "tokens/min for key 'wide' allows: lower max_tokens"
    )
    assert post(server, keys["wide"], fixed(40))[0] == 200  # and it took nothing


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    try:
        code = main(list(args))
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def test_token_limit_flags(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "200")  # the keys table in one line per key
    home = str(tmp_path)
    code, _, err = run(capsys, "serve", "tiny-lm", "--home", home, "--token-limit", "fast")
    assert code == 2 and len(err.splitlines()) == 1
    assert "argument --token-limit: must look like 20000/m, 500/s, 1200000/h or 20000, got 'fast'" in err
    code, _, err = run(capsys, "keys", "create", "--home", home, "--name", "k", "--token-limit", "0")
    assert code == 2 and err == "error: --token-limit must be > 0 tokens/min, got 0.0\n"
    code, out, _ = run(capsys, "keys", "create", "--home", home, "--name", "k", "--token-limit", "500/s")
    assert code == 0 and out.startswith("sk_")
    assert KeyStore(tmp_path / "keys.json").infos()[0].token_limit == 30000
    code, out, _ = run(capsys, "keys", "list", "--home", home)
    assert code == 0 and "server default + 30000 tokens/m" in out

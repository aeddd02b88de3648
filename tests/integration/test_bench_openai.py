"""`skylift bench serve --protocol openai-completions|openai-chat` against a real `skylift serve` of a
tiny trained language model: real SSE streams over HTTP, and a report whose token counts are what
the server's own /metrics counted."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from skylift.security.apikeys import KeyStore
from skylift.spec import parse_spec
from skylift.train import fit
from tests.integration.serve_helpers import Server, running
from tests.integration.tiny_lm import metric, settled_metric, train_tiny_lm

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("home")
    train_tiny_lm(home, chat_template="chatml")
    regressor = {
        "name": "diabetes",
        "task": "regression",
        "data": {"train": "builtin:diabetes"},
        "model": {"layers": [{"dense": {"units": 1}}]},
        "train": {"epochs": 1, "threads": 1},
        "distributed": {"workers": 1},
    }
    fit(parse_spec(regressor), home=home, run_id="diabetes")
    return home


@pytest.fixture(scope="module")
def keys(home: Path) -> dict[str, str]:
    store = KeyStore(home / "keys.json")
    return {
        "bench": store.create("bench", ("predict",), rate_limit=1e6)[0],
        "ops": store.create("ops", ("metrics",))[0],
        "metered": store.create("metered", ("predict",), rate_limit=1e6, token_limit=400)[0],
    }


@pytest.fixture(scope="module")
def server(home: Path, keys: dict[str, str]) -> Iterator[Server]:
    with running(home, "tiny-lm", "diabetes", "--replicas", "1", key=keys["bench"]) as s:
        yield s


def bench(server: Server, key: str, *args: str) -> subprocess.CompletedProcess[str]:
    url = f"http://{server.host}:{server.port}"
    return subprocess.run(
        [sys.executable, "-m", "skylift", "bench", "serve", url, *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "200", "SKYLIFT_API_KEY": key},
    )


def test_streams_report_ttft_itl_and_the_tokens_the_server_counted(
    server: Server, keys: dict[str, str]
) -> None:
    counters = ("generation_generated_tokens_total", "generation_prompt_tokens_total")
    before = {name: metric(server, keys["ops"], name) for name in counters}
    done = bench(
        server, keys["bench"], "--model", "tiny-lm", "--protocol", "openai-completions",
        "--max-tokens", "12", "--prompt-tokens", "16", "--ignore-eos",
        "-c", "4", "-p", "2", "-d", "1.5", "--warmup", "0", "--json", "-",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    r = json.loads(done.stdout)
    assert r["protocol"] == "openai-completions" and r["processes"] == 2 and r["concurrency"] == 4
    assert r["errors"] == {} and r["requests"] == r["ok"] == r["statuses"]["200"] > 8
    assert r["token_source"] == "usage"
    assert r["completion_tokens"] == 12 * r["ok"]  # ignore_eos: every answer is max_tokens long
    assert abs(r["prompt_tokens_mean"] - 16) <= 2  # words calibrated against the server's count
    # With no warm-up every token the server made is in the report, or in its calibration requests.
    probe = r["probe_tokens"]
    for name, field in zip(counters, ("completion_tokens", "prompt_tokens"), strict=True):
        expected = before[name] + r[field] + probe[field]
        assert settled_metric(server, keys["ops"], name, expected) == expected, name
    ttft, itl, tpot, lat = r["ttft_ms"], r["itl_ms"], r["tpot_ms"], r["latency_ms"]
    assert 0 < ttft["p50"] <= ttft["p90"] <= ttft["p99"] <= ttft["max"] <= lat["max"]
    assert ttft["p50"] <= lat["p50"] and ttft["p99"] <= lat["p99"]  # per request: TTFT <= the stream
    assert 0 < itl["p50"] <= itl["p99"] and 0 < tpot["p50"] < lat["p50"]
    assert r["tokens_per_s"] == pytest.approx(r["completion_tokens"] / r["duration_s"])
    assert r["requests_per_s"] == pytest.approx(r["requests"] / r["duration_s"])
    assert "requests/s" in done.stderr and "time to first token p99" in done.stderr  # tables to stderr
    assert keys["bench"] not in done.stdout + done.stderr


def test_chat_streams_through_the_model_s_template_as_a_table(server: Server, keys: dict[str, str]) -> None:
    done = bench(
        server, keys["bench"], "--model", "tiny-lm", "--protocol", "openai-chat",
        "--max-tokens", "4", "--prompt-tokens", "56", "-c", "2", "-d", "0.5", "--warmup", "0.2",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    for row in (
        "openai-chat -> http://",
        "prompt tokens/request",
        "output tokens/s",
        "time to first token p50",
        "inter-token latency p90",
        "time per output token p50",
    ):
        assert row in done.stdout
    # chatml wraps a message in <|im_start|>user ... <|im_end|>: 49 tokens of this small vocabulary
    # before a word; 56 asked for leaves a number and a few words, found by calibration.
    assert "prompts of a number and " in done.stderr
    assert "tokens by the server's count, asked 56" in done.stderr


def test_a_token_limit_fails_the_run_loudly_naming_the_fix(server: Server, keys: dict[str, str]) -> None:
    done = bench(
        server, keys["metered"], "--model", "tiny-lm", "--protocol", "openai-completions",
        "--max-tokens", "30", "--prompt-tokens", "8", "-c", "2", "-d", "1", "--warmup", "0", "--json", "-",
    )  # fmt: skip
    assert done.returncode == 1
    r = json.loads(done.stdout)
    assert r["errors"]["429"] > r["ok"] > 0
    assert "token limit of 400 tokens/min for key 'metered' is used up" in r["error_samples"]["429"]
    line = done.stderr.splitlines()[-1]
    assert line.startswith("error: ") and "requests failed" in line and "--token-limit" in line


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (("--model", "tiny-lm", "--protocol", "openai-chat", "--rows", "2"), 2, "rows does not apply"),
        (("--model", "tiny-lm", "--protocol", "grpc"), 2, "argument --protocol: invalid choice: 'grpc'"),
        (("--model", "nope", "--protocol", "openai-chat"), 2, "model 'nope' not found at http://"),
        (("--model", "diabetes", "--protocol", "openai-completions"), 2, "is a regressor"),
        (("--model", "tiny-lm", "--protocol", "openai-chat", "--max-tokens", "0"), 2, "--max-tokens"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    server: Server, keys: dict[str, str], args: tuple[str, ...], code: int, message: str
) -> None:
    done = bench(server, keys["bench"], *args, "-d", "0.5")
    assert done.returncode == code and message in done.stderr and len(done.stderr.splitlines()) == 1

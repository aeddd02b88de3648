"""BenchConfig validation names the field, the value and what is allowed; URLs parse to targets."""

from __future__ import annotations

import subprocess
import sys

import pytest

from skylift.errors import SpecError
from skylift.loadgen import BenchConfig, auto_processes
from skylift.loadgen._config import parse_url


def test_parse_url() -> None:
    t = parse_url("http://127.0.0.1:8000")
    assert (t.scheme, t.host, t.port, t.prefix, t.tls) == ("http", "127.0.0.1", 8000, "", False)
    assert t.route("v2-binary", "mnist-mlp") == "/v2/models/mnist-mlp/infer"
    assert t.route("v1", "mnist-mlp") == "/v1/models/mnist-mlp:predict"
    assert t.metadata_route("mnist-mlp") == "/v2/models/mnist-mlp"
    s = parse_url("https://models.example/serving/")
    assert (s.port, s.prefix, s.authority, s.tls) == (443, "/serving", "models.example", True)
    assert parse_url("http://[::1]:81").authority == "[::1]:81"
    for bad in ("127.0.0.1:8000", "ftp://host", "http://", "http://h:99999", "http://h/x?q=1"):
        with pytest.raises(SpecError):
            parse_url(bad)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("concurrency", 0, "concurrency must be a whole number from 1 to 10,000, got 0"),
        ("rows", -1, "rows must be a whole number from 1"),
        ("duration_s", 0, "duration_s must be a number of seconds > 0, got 0"),
        ("warmup_s", float("nan"), "warmup_s must be a number of seconds >= 0, got nan"),
        (
            "protocol",
            "grpc",
            "protocol must be one of v2-json, v2-binary, v1, openai-completions, openai-chat, got 'grpc'",
        ),
        ("processes", 0, "processes must be a whole number"),
        ("insecure", True, "insecure and cacert apply to https:// URLs only"),
        ("cacert", "/nonexistent.pem", "cacert must be a PEM file"),
    ],
)
def test_invalid_fields_name_the_field_and_value(field: str, value: object, message: str) -> None:
    with pytest.raises(SpecError, match="^" + message.replace("(", r"\(").replace("?", r"\?")):
        BenchConfig("http://127.0.0.1:1", "m", **{field: value})  # type: ignore[arg-type]


def test_api_key_is_not_in_the_repr() -> None:
    assert "hunter2" not in repr(BenchConfig("http://127.0.0.1:1", "m", api_key="hunter2"))


def test_auto_processes_grows_with_concurrency_up_to_the_cores() -> None:
    assert auto_processes(1) == 1 and auto_processes(16) == 1
    assert 1 <= auto_processes(10_000) <= 1024
    assert auto_processes(64) >= min(2, auto_processes(10_000))


def test_loadgen_is_client_side_only() -> None:
    code = (
        "import sys, skylift.loadgen, skylift.cli._bench; "
        "bad = [m for m in sys.modules if m.split('.')[:2] in (['skylift', 'serve'], ['skylift', 'train'],"
        " ['skylift', 'tune']) or m in ('torch', 'fastapi', 'starlette', 'uvicorn')]; print(bad)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_public_api_is_pinned() -> None:
    import skylift.loadgen

    assert skylift.loadgen.__all__ == [
        "PROTOCOLS",
        "BenchConfig",
        "BenchReport",
        "Latency",
        "Protocol",
        "StreamReport",
        "auto_processes",
        "percentile",
        "run_bench",
    ]

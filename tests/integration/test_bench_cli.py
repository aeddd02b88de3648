"""`skylift bench serve` end to end: a real `skylift` process loads a real server on 127.0.0.1."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from skylift.cli import main
from tests.conftest import free_port
from tests.unit.loadgen.server import MODEL, V2Server, every_tenth


def skylift(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "skylift", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "COLUMNS": "200", **(env or {})},
    )


def test_report_as_table_and_json_file_with_errors_by_status(tmp_path: Path) -> None:
    out = tmp_path / "report.json"
    with V2Server(every_tenth) as srv:
        done = skylift(
            "bench", "serve", srv.url, "--model", MODEL, "-c", "4", "-p", "2",
            "--duration", "1", "--warmup", "0.2", "--json", str(out),
            env={"SKYLIFT_API_KEY": "from-env"},
        )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert srv.invalid == [] and srv.headers_seen[-1]["authorization"] == "Bearer from-env"
    report = json.loads(out.read_text())
    assert report["processes"] == 2 and report["concurrency"] == 4 and report["protocol"] == "v2-json"
    assert report["requests"] == sum(report["statuses"].values()) > 50
    assert report["ok"] == report["statuses"]["200"]
    assert set(report["errors"]) == {"400", "503"}
    assert report["errors"]["503"] == report["statuses"]["503"]
    assert report["error_samples"]["503"] == "server overloaded"
    assert 0.8 <= report["duration_s"] <= 1.5
    assert report["requests_per_s"] == pytest.approx(report["requests"] / report["duration_s"])
    lat = report["latency_ms"]
    assert 0 < lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"]
    # The terminal report: the summary and the errors by status, with the server's own message.
    for text in ("requests/s", "latency p99", "errors by status", "503", "server overloaded", "400"):
        assert text in done.stdout
    assert "from-env" not in done.stdout + done.stderr


def test_json_to_stdout_is_only_json() -> None:
    with V2Server() as srv:
        done = skylift(
            "bench", "serve", srv.url, "--model", MODEL, "--protocol", "v2-binary", "--rows", "3",
            "-c", "2", "-d", "0.5", "--warmup", "0", "--json", "-",
        )  # fmt: skip
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["protocol"] == "v2-binary" and report["rows"] == 3 and report["errors"] == {}
    assert report["rows_per_s"] == pytest.approx(3 * report["ok_per_s"])
    assert "requests/s" in done.stderr and srv.invalid == []


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    try:
        code = main(list(args))
    except SystemExit as exc:  # argparse errors exit from inside parse_args
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def test_bad_input_is_one_line_and_an_exit_code(capsys: pytest.CaptureFixture[str]) -> None:
    port = free_port()
    code, _, err = run(capsys, "bench", "serve", f"http://127.0.0.1:{port}", "--model", "m", "-d", "1")
    assert code == 1 and err == f"error: cannot connect to http://127.0.0.1:{port}: Connection refused\n"

    code, _, err = run(capsys, "bench", "serve", "http://127.0.0.1:1", "--model", "m", "--concurrency", "0")
    assert code == 2 and len(err.splitlines()) == 1
    assert "argument --concurrency/-c: must be a whole number >= 1, got '0'" in err

    code, _, err = run(capsys, "bench", "serve", "127.0.0.1:8000", "--model", "m")
    assert code == 2 and err.startswith("error: URL must look like http://HOST[:PORT]")

    with V2Server(lambda n: 200 if n == 0 else 500) as srv:
        code, _, err = run(capsys, "bench", "serve", srv.url, "--model", "nope", "-d", "1")
        assert code == 2 and len(err.splitlines()) == 1
        assert err.startswith(f"error: model 'nope' not found at {srv.url}")

        # Every request after the probe fails: the report is printed, and the exit code says so.
        code, out, err = run(
            capsys, "bench", "serve", srv.url, "--model", MODEL, "-d", "0.3", "--warmup", "0"
        )
        assert code == 1 and "errors by status" in out and "500" in out
        assert err.splitlines()[-1].startswith("error: ") and "requests failed (100%): HTTP 500 x" in err


def test_bench_against_a_real_skylift_serve(tmp_path: Path) -> None:
    from skylift.security.apikeys import KeyStore
    from skylift.spec import load_spec
    from skylift.train import fit
    from tests.conftest import EXAMPLE
    from tests.integration.serve_helpers import running

    home = tmp_path / "home"
    fit(load_spec(EXAMPLE, ["train.epochs=1"]), home=home)
    key, _ = KeyStore(home / "keys.json").create("bench", ("predict",))
    # --rate-limit 0: the default 100/s per key would answer the load test with 429s.
    with running(home, "mnist-mlp", "--replicas", "1", "--rate-limit", "0", key=key) as srv:
        url = f"http://{srv.host}:{srv.port}"
        for protocol in ("v2-json", "v2-binary", "v1"):
            done = skylift(
                "bench", "serve", url, "--model", "mnist-mlp", "--protocol", protocol, "--rows", "2",
                "-c", "4", "-p", "1", "-d", "0.5", "--warmup", "0.1", "--json", "-",
                env={"SKYLIFT_API_KEY": key},
            )  # fmt: skip
            assert done.returncode == 0, done.stderr
            report = json.loads(done.stdout)
            assert report["requests"] > 0 and report["ok"] == report["requests"], report
            assert report["errors"] == {} and report["rows_per_s"] > 0
        assert key.split("_", 2)[2] not in srv.log.read_text()


def test_readme_bench_line_and_a_rate_limited_or_wrong_key(tmp_path: Path) -> None:
    """README's lines: `KEY=$(skylift keys create ... --rate-limit 100000)`, `skylift serve ...
    --tls-self-signed`, `skylift bench serve https://... --api-key $KEY --cacert ...` measure the
    model; a key held to its rate limit makes bench fail loudly, naming the limit."""
    import ssl
    import time

    from skylift.spec import load_spec
    from skylift.train import fit
    from tests.conftest import EXAMPLE
    from tests.integration.serve_helpers import running

    home = tmp_path / "home"
    fit(load_spec(EXAMPLE, ["train.epochs=1"]), home=home)
    env = {"SKYLIFT_HOME": str(home)}
    keys = {}
    for name, limit in (("web", "100000"), ("slow", "5")):
        made = skylift("keys", "create", "--name", name, "--scope", "predict", "--rate-limit", limit, env=env)
        assert made.returncode == 0, made.stderr
        keys[name] = made.stdout.strip()
    cert = home / "tls" / "tls-cert.pem"
    with running(home, "mnist-mlp", "--replicas", "1", "--tls-self-signed", ready=False) as srv:
        deadline = time.monotonic() + 60
        while not cert.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        srv.tls, srv.key = ssl.create_default_context(cafile=str(cert)), keys["web"]
        while time.monotonic() < deadline:
            try:
                if srv.request("GET", "/v2/health/ready")[0] == 200:
                    break
            except OSError:
                time.sleep(0.1)
        url = f"https://127.0.0.1:{srv.port}"

        report = tmp_path / "report.json"

        def bench(key: str) -> subprocess.CompletedProcess[str]:
            return skylift(
                "bench", "serve", url, "--model", "mnist-mlp", "--api-key", key, "--cacert", str(cert),
                "-c", "4", "-p", "1", "-d", "1", "--warmup", "0", "--json", str(report),
            )  # fmt: skip

        done = bench(keys["web"])
        assert done.returncode == 0, done.stdout + done.stderr
        figures = json.loads(report.read_text())
        assert figures["errors"] == {} and figures["ok"] == figures["requests"] > 0, figures
        assert "failed" not in done.stderr

        done = bench(keys["slow"])  # 5 requests/s: nearly every request is refused with 429
        assert done.returncode == 1, done.stdout + done.stderr
        (line,) = [s for s in done.stderr.splitlines() if s.startswith("error: ")]
        assert re.match(r"error: [\d,]+ of [\d,]+ requests failed \(\d+%\): HTTP 429 x[\d,]+ ", line), line
        assert "rate limit of 5 requests/s for key 'slow' exceeded" in line
        assert "skylift keys create --rate-limit" in line and "serve --rate-limit 0" in line
        assert "errors by status" in done.stdout and "429" in done.stdout
        figures = json.loads(report.read_text())  # the report is still written
        assert figures["errors"]["429"] > figures["requests"] / 2

        done = bench("sk_0123456789abcdef_wrong")
        assert done.returncode == 1 and "pass --api-key" not in done.stderr, done.stderr
        assert "refused the API key given with --api-key" in done.stderr and "(HTTP 401: " in done.stderr
        assert done.stderr.count("\n") == 1

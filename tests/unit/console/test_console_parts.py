"""The console's pieces that need no browser: endpoint records, /metrics rates, redaction, sign-in."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

from skylift import endpoints
from skylift.console import ConsoleConfig
from skylift.console._files import redact
from skylift.console._pages_login import _next
from skylift.console._prometheus import rates, scrape
from skylift.console._sessions import Sessions
from skylift.console._upstream import Unreachable, call, chat_body, stream, v2_body
from skylift.errors import AuthError, SpecError
from skylift.security.apikeys import KeyStore

MODELS = {"mnist-mlp": {"ref": "mnist-mlp@production", "version": 2}}


def test_an_endpoint_record_is_listed_while_its_process_lives(tmp_path: Path) -> None:
    path = endpoints.record(tmp_path, "0.0.0.0", 8123, models=MODELS, replicas=2, auth=True, tls=False)
    [found] = endpoints.running(tmp_path)
    assert path == tmp_path / "endpoints" / f"{found.id}.json" and found.pid == os.getpid()
    assert found.url == "http://127.0.0.1:8123" and found.models == MODELS and found.auth
    assert "key" not in path.read_text()
    endpoints.remove(path)
    assert endpoints.running(tmp_path) == [] and not path.exists()


def test_a_server_of_another_host_is_called_at_its_outward_url_never_on_loopback_here(
    tmp_path: Path,
) -> None:
    class Ok(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    theirs = endpoints.Endpoint(1, "http://127.0.0.1:1", MODELS, 1, True, False, host="pod-b", boot_id="b")
    with HTTPServer(("127.0.0.1", 0), Ok) as outward, socket.create_server(("127.0.0.1", 0)) as trap:
        threading.Thread(target=outward.serve_forever, daemon=True).start()
        there = replace(theirs, host_url=f"http://127.0.0.1:{outward.server_port}")
        assert call(there, tmp_path, "GET", "/metrics")[0] == 200
        outward.shutdown()
        # bound to loopback over there: its port here may be anyone's, and would get the key
        loopback_only = replace(theirs, url=f"http://127.0.0.1:{trap.getsockname()[1]}")
        with pytest.raises(Unreachable, match="bound to loopback on host pod-b"):
            call(loopback_only, tmp_path, "GET", "/metrics", key="secret")
        [event] = stream(loopback_only, tmp_path, "/v1/chat/completions", {}, "secret")
        assert b"bound to loopback" in event
        trap.setblocking(False)
        with pytest.raises(BlockingIOError):
            trap.accept()  # nobody knocked


def test_stale_and_malformed_records_are_skipped(tmp_path: Path) -> None:
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    pid = int(dead.stdout)
    folder = tmp_path / "endpoints"
    folder.mkdir()
    record = {
        "pid": pid,
        "url": "http://127.0.0.1:1",
        "models": {},
        "replicas": 1,
        "auth": False,
        "tls": False,
    }
    (folder / f"{pid}.json").write_text(json.dumps(record))
    (folder / "123.json").write_text("{not json")
    # a live pid whose start time differs: a reused pid, not the server that wrote the record
    reused = {**record, "pid": os.getpid(), "start_ticks": 1}
    (folder / f"{os.getpid()}.json").write_text(json.dumps(reused))
    assert endpoints.running(tmp_path) == []
    assert not (folder / f"{pid}.json").exists() and (folder / "123.json").exists()


def test_rates_between_two_scrapes() -> None:
    def text(n: int, seconds: float, fast: int) -> str:
        return "\n".join(
            [
                f'skylift_requests_total{{replica="0",route="v2/models/infer",status="200"}} {n}',
                f'skylift_requests_total{{replica="0",route="metrics",status="200"}} {n * 7}',
                f'skylift_request_seconds_bucket{{replica="0",route="v2/models/infer",le="0.005"}} {fast}',
                f'skylift_request_seconds_bucket{{replica="0",route="v2/models/infer",le="+Inf"}} {n}',
                f'skylift_request_seconds_sum{{replica="0",route="v2/models/infer"}} {seconds}',
                f'skylift_request_seconds_count{{replica="0",route="v2/models/infer"}} {n}',
                'skylift_replica_rss_bytes{replica="0"} 1048576',
            ]
        )

    first, second = scrape(text(10, 0.1, 10), 100.0), scrape(text(30, 0.3, 29), 102.0)
    assert rates(None, first)["rps"] is None
    r = rates(first, second)
    assert r["rps"] == pytest.approx(10.0) and r["mean_ms"] == pytest.approx(10.0)
    assert r["p50_ms"] == pytest.approx(5.0) and r["p99_ms"] is None  # past the last finite bound
    assert second.rss == {"0": 1048576.0}
    assert rates(second, first)["rps"] is None  # counters went back: the server restarted


def test_secrets_are_masked_in_shown_text() -> None:
    key = "sk_0123abcd_" + "A" * 43
    shown = redact(f"storage: postgresql://user:hunter2@db:5432/optuna\nkey {key}\nSKYLIFT_MASTER_KEY=abc=\n")
    assert "hunter2" not in shown and "postgresql://user:***@db" in shown
    assert key not in shown and "abc=" not in shown


def test_sign_in_checks_the_key_store_and_a_revoked_key_ends_its_sessions(tmp_path: Path) -> None:
    store = KeyStore(tmp_path / "keys.json")
    key, _ = store.create("ops", ("predict", "admin"))
    sessions = Sessions(tmp_path / "keys.json", login=True)
    with pytest.raises(AuthError):
        sessions.sign_in("sk_00000000_" + "A" * 43)
    s = sessions.sign_in(key)
    assert s.may("admin") and sessions.get(s.token) == s and key not in repr(s)
    assert s.csrf_ok(s.csrf) and not s.csrf_ok("x") and not s.csrf_ok(None)
    store.revoke("ops")
    assert sessions.get(s.token) is None
    assert (
        Sessions(tmp_path / "keys.json", login=True).get(Sessions(tmp_path / "k", False).anonymous().token)
        is None
    )


def test_after_sign_in_only_local_paths_are_followed() -> None:
    assert _next("/models/x?version=1") == "/models/x?version=1"
    for target in ("//evil.example/", "https://evil.example/", "\\\\evil", "", None, "runs"):
        assert _next(target) == "/runs"


def test_keys_are_required_off_loopback(tmp_path: Path) -> None:
    ConsoleConfig(tmp_path).check()  # loopback: no keys needed
    for config in (ConsoleConfig(tmp_path, host="0.0.0.0"), ConsoleConfig(tmp_path, require_key=True)):
        with pytest.raises(SpecError, match="needs API keys"):
            config.check()
    KeyStore(tmp_path / "keys.json").create("ops", ("predict",))
    ConsoleConfig(tmp_path, host="0.0.0.0").check()


def test_playground_requests_are_checked_before_they_are_sent() -> None:
    sig = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, 4]}]}
    assert v2_body(sig, {"rows": [[0, 1, 2, 3]]})["inputs"][0]["shape"] == [1, 4]
    for bad in ({"rows": [[0, 1]]}, {"rows": [[0, 1, 2, float("nan")]]}, {"rows": []}, {"texts": ["a"]}):
        with pytest.raises(SpecError):
            v2_body(sig, bad)
    text = {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [-1]}]}
    assert v2_body(text, {"texts": ["hi"]})["inputs"][0]["data"] == ["hi"]
    with pytest.raises(SpecError, match="role"):
        chat_body("lm", {"messages": [{"role": "tool", "content": "x"}]})
    assert chat_body("lm", {"messages": [{"role": "user", "content": "x"}]})["stream"] is True

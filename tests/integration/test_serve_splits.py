"""Traffic splits, shadows and guarded rollouts on a real `skylift serve` under real load.

Versions of mnist-mlp, registered without training:
  1  the example MLP (the stable version)
  2  the same architecture, other weights (a healthy canary, and a shadow)
  3  a broken canary: it embeds each pixel as an id of a 2-word vocabulary (it was built for
     binarised pixels), so it loads and warms up (zeros) but fails on every real image whose
     pixels run 0-255 ("index out of range"), like a version shipped with the wrong preprocessing
  4  a model of 8 features: another signature
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from skylift.models import build_model
from skylift.registry import Registry
from skylift.security.apikeys import KeyStore
from skylift.serve.splits import bucket
from skylift.spec import ModelSpec, load_spec
from tests.conftest import EXAMPLE
from tests.integration.serve_helpers import Server, running

M = "mnist-mlp"
_BROKEN = [{"embedding": {"vocab_size": 2, "dim": 2}}, {"flatten": {}}, {"dense": {"units": 10}}]


def _register(home: Path, seed: int, layers: list[dict[str, Any]] | None = None, width: int = 784) -> None:
    spec = load_spec(EXAMPLE).model if layers is None else ModelSpec.model_validate({"layers": layers})
    torch.manual_seed(seed)
    module = build_model(spec, (width,), 10).eval()
    meta = {"model": spec.model_dump(mode="json"), "input_shape": [width], "classes": list("0123456789")}
    Registry(home).register(M, module.state_dict(), meta)


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("splits-home")
    _register(home, seed=0)
    _register(home, seed=1)
    _register(home, seed=2, layers=_BROKEN)
    _register(home, seed=3, width=8)
    return home


@pytest.fixture(scope="module")
def keys(home: Path) -> dict[str, str]:
    store = KeyStore(home / "keys.json")
    return {
        name: store.create(name, scopes, rate_limit=1e9)[0]
        for name, scopes in (("app", ("predict", "metrics")), ("root", ("predict", "metrics", "admin")))
    }


@pytest.fixture(scope="module")
def server(home: Path, keys: dict[str, str]) -> Iterator[Server]:
    args = ("--replicas", "2", "--split", "1=90,2=10", "--sticky-header", "X-Session", "--cache", "none")
    with running(home, f"{M}:1", *args, key=keys["app"]) as s:
        yield s


def _admin(s: Server, keys: dict[str, str], method: str, what: str, body: Any = None) -> tuple[int, Any]:
    """An admin call; after a change, the time every replica needs to follow it (0.5 s poll)."""
    raw = None if body is None else json.dumps(body).encode()
    status, _, answer = s.request(
        method, f"/v2/repository/models/{M}/{what}", raw, {"Authorization": f"Bearer {keys['root']}"}
    )
    if method != "GET" and status == 200:
        time.sleep(0.7)
    return status, json.loads(answer)


def _infer(s: Server, x: np.ndarray, headers: dict[str, str] | None = None) -> tuple[int, str, Any]:
    body = {
        "inputs": [{"name": "input", "shape": list(x.shape), "datatype": "FP32", "data": x.ravel().tolist()}]
    }
    status, head, raw = s.request(
        "POST",
        f"/v2/models/{M}/infer",
        json.dumps(body).encode(),
        {"Authorization": f"Bearer {s.key}", **(headers or {})},
    )
    return status, head.get("x-model-version", ""), json.loads(raw)


def _metric(s: Server, name: str, **labels: str) -> float:
    """A series summed over the replicas (and any labels not given)."""
    text = s.request("GET", "/metrics")[2].decode()
    total = 0.0
    for line in text.splitlines():
        if line.startswith(f"skylift_{name}{{"):
            inside, value = line[len(name) + 9 :].rsplit("} ", 1)
            found = dict(part.split("=", 1) for part in inside.split(","))
            if all(found.get(k) == f'"{v}"' for k, v in labels.items()):
                total += float(value)
    return total


def _until(check: Any, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def _bench(s: Server, *args: str) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-m", "skylift", "bench", "serve", f"http://127.0.0.1:{s.port}", "--model", M,
         "--api-key", s.key or "", "-p", "1", "--warmup", "0", "--json", "-", *args],
        capture_output=True, text=True, timeout=120, env={**os.environ, "COLUMNS": "120"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    report: dict[str, Any] = json.loads(done.stdout)
    assert "answers by model version" in done.stderr  # the table beside the JSON
    return report


def test_bad_rollout_flags_are_one_line_and_exit_2(home: Path) -> None:
    env = {**os.environ, "SKYLIFT_HOME": str(home)}
    for args, message in (
        (("--split", "1=90,2=20"), "split weights must sum to 100, got 110 (1=90,2=20)"),
        (("--split", "1=90,9=10"), "mnist-mlp has no version 9 (versions: 1, 2, 3, 4)"),
        (
            ("--shadow", "4"),
            "mnist-mlp:4 takes input FP32 [-1, 8] but mnist-mlp:1 takes input FP32 [-1, 784]",
        ),
        (("--guard", "error_rate<0.1"), "--guard applies to a split: give --split too"),
    ):
        out = subprocess.run(
            [sys.executable, "-m", "skylift", "serve", f"{M}:1", "--no-auth", *args],
            capture_output=True, text=True, env=env, timeout=60,
        )  # fmt: skip
        assert out.returncode == 2 and out.stderr.startswith(f"error: {message}"), out.stderr
        assert out.stderr.count("\n") == 1, out.stderr


def test_a_90_10_split_lands_within_bounds_and_every_answer_names_its_version(
    server: Server, keys: dict[str, str]
) -> None:
    status, rollout = _admin(server, keys, "GET", "split")
    assert (
        status == 200 and rollout["weights"] == {"1": 90, "2": 10} and rollout["sticky_header"] == "x-session"
    )
    before = _metric(server, "version_requests_total", version="2", status="200")
    report = _bench(server, "-c", "8", "--duration", "2")
    versions, n = report["versions"], report["requests"]
    assert n >= 500 and report["ok"] == n and set(versions) == {"1", "2"}
    assert versions["1"]["responses"] + versions["2"]["responses"] == n
    sd = (n * 0.1 * 0.9) ** 0.5
    assert abs(versions["2"]["responses"] - 0.1 * n) < 4.5 * sd, versions  # a binomial draw, 4.5 sd
    # the server's own per-version counters agree (published within half a second)
    _until(
        lambda: (
            _metric(server, "version_requests_total", version="2", status="200") - before
            >= versions["2"]["ok"]
        )
    )
    assert _metric(server, "version_request_seconds_count", version="1") > 0
    assert _metric(server, "split_weight", version="2") == 20  # 10 on each of the 2 replicas
    x = np.random.default_rng(0).random((1, 784), dtype=np.float32)
    for _ in range(20):
        status, header, out = _infer(server, x)
        assert status == 200 and header == out["model_version"] in ("1", "2")
    status, header, out = _infer(server, np.zeros((1, 5), dtype=np.float32))  # an error names it too
    assert status == 400 and header in ("1", "2") and "shape" in out["error"]


def test_a_session_sees_one_version_and_a_ramp_only_moves_sessions_onto_the_canary(
    server: Server, keys: dict[str, str]
) -> None:
    assert (
        _admin(server, keys, "POST", "split", {"weights": {"1": 90, "2": 10}, "sticky_header": "X-Session"})[
            0
        ]
        == 200
    )
    x = np.random.default_rng(1).random((1, 784), dtype=np.float32)

    def versions(session: str, times: int = 3) -> set[str]:
        return {_infer(server, x, {"X-Session": session})[1] for _ in range(times)}

    sessions = [f"user-{i}" for i in range(100)]
    first = {s: versions(s) for s in sessions}
    assert all(len(v) == 1 for v in first.values())  # one version per session, whichever replica answers
    on_canary = {s for s, v in first.items() if v == {"2"}}
    assert on_canary == {s for s in sessions if bucket(s.encode()) >= 90}  # the documented hash
    assert (
        _admin(server, keys, "POST", "split", {"weights": {"1": 70, "2": 30}, "sticky_header": "X-Session"})[
            0
        ]
        == 200
    )
    later = {s: versions(s, 2) for s in sessions}
    assert all(later[s] == {"2"} for s in on_canary) and sum(v == {"2"} for v in later.values()) > len(
        on_canary
    )


def test_a_split_change_needs_the_admin_scope_and_bad_ones_are_4xx(
    home: Path, server: Server, keys: dict[str, str]
) -> None:
    body = json.dumps({"weights": {"1": 50, "2": 50}}).encode()
    status, _, answer = server.request("POST", f"/v2/repository/models/{M}/split", body)  # the app key
    assert status == 403 and json.loads(answer) == {"error": "API key 'app' lacks the 'admin' scope"}
    for sent, code, message in (
        ({"weights": {"1": 90, "2": 20}}, 400, "split weights must sum to 100, got 110"),
        ({"weights": {"1": 90, "9": 10}}, 404, "mnist-mlp has no version 9"),
        ({"weights": {"1": 90, "4": 10}}, 400, "the inputs would not fit"),
        ({"weights": {"1": 100}, "guard": {"error_rate": 5}}, 400, "guard error_rate must be in (0, 1]"),
    ):
        status, answer = _admin(server, keys, "POST", "split", sent)
        assert status == code and message in answer["error"], answer
    status, answer = _admin(server, keys, "POST", "shadow", {"version": 4})
    assert status == 400 and "the inputs would not fit" in answer["error"]
    status, answer = _admin(server, keys, "POST", "split", {"weights": {"1": 50, "2": 50}})
    assert status == 200 and answer["weights"] == {"1": 50, "2": 50} and answer["sticky_header"] is None
    assert _admin(server, keys, "PUT", "split", {})[0] == 405
    audit = [json.loads(line) for line in (home / "audit.log").read_text().splitlines()]
    denied = [e for e in audit if e["route"].endswith("/split") and e["status"] == 403]
    assert denied and denied[-1]["key"] == "app" and denied[-1]["outcome"] == "denied: needs scope admin"
    assert audit[-1]["key"] == "root" and audit[-1]["outcome"].startswith("failed: split: method PUT")
    assert audit[-2]["outcome"] == f"ok: split {M}: split 1=50,2=50"
    assert any(e["outcome"].startswith("failed: split: split weights must sum to 100") for e in audit)


def test_a_split_set_at_runtime_survives_replica_restarts(server: Server, keys: dict[str, str]) -> None:
    assert (
        _admin(server, keys, "POST", "split", {"weights": {"1": 60, "2": 40}, "sticky_header": "X-Session"})[
            0
        ]
        == 200
    )
    before = server.replicas()
    for pid in before:  # every replica now is one that read the split from the shared state
        os.kill(pid, signal.SIGKILL)
    _until(lambda: len(server.replicas()) == 2 and not set(server.replicas()) & set(before), 60)
    _until(lambda: server.request("GET", "/v2/health/ready")[0] == 200, 60)
    moved = [s for s in (f"s{i}" for i in range(400)) if 60 <= bucket(s.encode()) < 90][:12]
    x = np.random.default_rng(2).random((1, 784), dtype=np.float32)
    # Under the command line's 90/10 these sessions would be on version 1.
    assert {_infer(server, x, {"X-Session": s})[1] for s in moved for _ in range(3)} == {"2"}


def test_a_shadow_is_compared_and_never_holds_up_the_answers(
    server: Server, keys: dict[str, str], home: Path
) -> None:
    assert _admin(server, keys, "POST", "split", {"weights": {"1": 100}})[0] == 200
    status, rollout = _admin(server, keys, "POST", "shadow", {"version": 2})
    assert status == 200 and rollout["shadow"] == {"version": 2, "queue": 256}
    rows0, agreed0 = _metric(server, "shadow_rows_total"), _metric(server, "shadow_agreed_rows_total")
    x = np.random.default_rng(3).random((40, 784), dtype=np.float32)
    for row in x:
        status, header, _ = _infer(server, row[None])
        assert status == 200 and header == "1"  # the shadow's answers are never returned
    v1, v2 = (Registry(home).load(f"{M}:{v}").module for v in (1, 2))
    with torch.inference_mode():
        same = int((v1(torch.from_numpy(x)).argmax(1) == v2(torch.from_numpy(x)).argmax(1)).sum())
    _until(lambda: _metric(server, "shadow_rows_total") - rows0 == 40)
    assert _metric(server, "shadow_agreed_rows_total") - agreed0 == same
    assert _metric(server, "shadow_failed_total") == 0 and _metric(server, "shadow_seconds_count") >= 40
    # A queue of one copy under 32 connections: copies are dropped and counted, no answer fails.
    assert _admin(server, keys, "POST", "shadow", {"version": 2, "queue": 1})[0] == 200
    report = _bench(server, "-c", "32", "--duration", "1")
    assert report["ok"] == report["requests"] > 100 and set(report["versions"]) == {"1"}
    _until(lambda: _metric(server, "shadow_dropped_total") > 0)
    assert _admin(server, keys, "DELETE", "shadow")[1]["shadow"] is None


def test_a_broken_canary_is_rolled_back_under_load(
    server: Server, keys: dict[str, str], home: Path, tmp_path: Path
) -> None:
    guard = {"error_rate": 0.1, "min_requests": 10}
    assert _admin(server, keys, "POST", "split", {"weights": {"1": 90, "3": 10}, "guard": guard})[0] == 200
    pixels = np.random.default_rng(4).integers(0, 256, (1, 784)).astype(np.float32)  # a real image: 0-255
    body = tmp_path / "image.json"
    body.write_text(json.dumps({"inputs": [{"name": "input", "shape": [1, 784], "datatype": "FP32",
                                            "data": pixels.ravel().tolist()}]}))  # fmt: skip
    report = _bench(server, "-c", "16", "--duration", "3", "--body-file", str(body))
    versions = report["versions"]
    # Every failure is the canary's own; the stable version answered everything it was given.
    assert versions["1"]["ok"] == versions["1"]["responses"] > 200
    assert versions["3"]["ok"] == 0 and set(report["errors"]) == {"500"}
    assert report["errors"]["500"] == versions["3"]["responses"] <= 80  # ~min_requests per replica
    status, rollout = _admin(server, keys, "GET", "split")
    assert status == 200 and rollout["weights"] == {"1": 100, "3": 0} and len(rollout["rollbacks"]) == 1
    assert rollout["rollbacks"][0]["version"] == 3 and rollout["rollbacks"][0]["weight"] == 10
    assert rollout["rollbacks"][0]["reason"].startswith("error rate ")
    _until(lambda: _metric(server, "rollbacks_total", version="3") == 1)
    assert (
        _metric(server, "split_weight", version="3") == 0
        and _metric(server, "version_errors_total", version="1") == 0
    )
    audit = [json.loads(line) for line in (home / "audit.log").read_text().splitlines()]
    rollbacks = [e for e in audit if e["outcome"].startswith("rollback: guard rolled back mnist-mlp:3")]
    assert len(rollbacks) == 1 and rollbacks[0]["method"] == "GUARD" and rollbacks[0]["key"] is None
    assert server.log.read_text().count("guard rolled back mnist-mlp:3 (weight 10 -> 0)") == 1
    assert server.proc.poll() is None and len(server.replicas()) == 2  # nobody died
    assert {_infer(server, pixels)[1] for _ in range(10)} == {"1"}


def test_the_docs_rollout_runs_as_written(server: Server, keys: dict[str, str]) -> None:
    """docs/rollouts.md's admin commands, in order, against this server (run last: it promotes v2)."""
    doc = (Path(__file__).parents[2] / "docs" / "rollouts.md").read_text()
    blocks = re.findall(r"<!-- run: (\S+) -->\n```bash\n(.*?)```", doc, re.S)
    assert [name for name, _ in blocks] == ["canary", "watch", "shadow", "promote", "rollback"]
    env = {**os.environ, "KEY": keys["app"], "ADMIN": keys["root"]}
    for name, code in blocks:
        script = code.replace("127.0.0.1:8000", f"127.0.0.1:{server.port}")
        done = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", script], env=env, capture_output=True, text=True
        )
        assert done.returncode == 0, (name, done.stderr)
        time.sleep(0.7)  # every replica follows
        if name == "watch":
            assert "skylift_split_weight{" in done.stdout and '"weights":{"1":90,"2":10}' in done.stdout
    rollout = _admin(server, keys, "GET", "split")[1]
    assert rollout["version"] == 2 and rollout["weights"] == {"1": 100, "2": 0} and rollout["shadow"] is None

"""`skylift serve` on two hosts sharing one Redis cache, behind HAProxy on a third host (network
namespaces, see netns.py): the cache is shared across hosts, and killing one host's server under
load fails no request beyond those in flight while the balancer's health check takes it out.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from skylift.security.apikeys import KeyStore
from tests.integration.netns import Host, hosts, wait_http
from tests.unit.batch.conftest import register_mlp

CONCURRENCY = 8
HAPROXY = """
global
    maxconn 256
    tune.bufsize 65536
defaults
    mode http
    timeout connect 1s
    timeout client 30s
    timeout server 30s
    # A request refused by a dead server is sent again to the other one (infer is idempotent).
    retries 3
    option redispatch
    retry-on conn-failure empty-response
frontend skylift
    bind {lb}:8080
    default_backend replicas
backend replicas
    balance roundrobin
    # Readiness needs a key with the predict scope (liveness needs none, but says nothing of the model).
    option httpchk
    http-check send meth GET uri /v2/health/ready hdr Authorization "Bearer {key}"
    http-check expect status 200
    server a {a}:8000 check inter 300ms fall 2 rise 2
    server b {b}:8000 check inter 300ms fall 2 rise 2
"""


def _background(
    host: Host, *args: str, log: Path, env: dict[str, str] | None = None
) -> subprocess.Popen[str]:
    extra = [f"{k}={v}" for k, v in (env or {}).items()]
    with log.open("w") as out:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(
            host.cmd("env", *extra, *args), stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )


def _stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[tuple[list[Host], str, list[subprocess.Popen[str]]]]:
    """(hosts a, b, balancer; the predict key; the two servers' processes), all running."""
    home = tmp_path / "home"  # one registry on storage every host mounts
    register_mlp(home)
    keys = KeyStore(home / "keys.json")
    key, _ = keys.create("client", ("predict",), rate_limit=1e6)  # the load must not meet a rate limit
    probe, _ = keys.create("probe", ("predict",))  # the balancer's own, for its health checks
    procs: list[subprocess.Popen[str]] = []
    with hosts(3) as (a, b, lb):
        try:
            redis = [
                "redis-server",
                "--bind",
                a.address,
                "--port",
                "6379",
                "--save",
                "",
                "--protected-mode",
                "no",
            ]
            procs.append(_background(a, *redis, log=tmp_path / "redis.log"))
            cache = f"redis://{a.address}:6379/0"
            servers = []
            for host in (a, b):
                serve = [sys.executable, "-m", "skylift", "serve", "mnist-mlp", "--host", host.address]
                serve += ["--port", "8000", "--replicas", "1", "--cache", cache]
                log = tmp_path / f"serve-{host.ns}.log"
                servers.append(_background(host, *serve, log=log, env={"SKYLIFT_HOME": str(home)}))
            procs += servers
            for host, proc in zip((a, b), servers, strict=True):
                wait_http(lb, f"http://{host.address}:8000/v2/health/ready", key, proc=proc)
            config = HAPROXY.format(lb=lb.address, a=a.address, b=b.address, key=probe)
            (tmp_path / "haproxy.cfg").write_text(config)
            haproxy = ["haproxy", "-db", "-f", str(tmp_path / "haproxy.cfg")]
            procs.append(_background(lb, *haproxy, log=tmp_path / "haproxy.log"))
            wait_http(lb, f"http://{lb.address}:8080/v2/health/ready", key, timeout=30)
            yield [a, b, lb], key, servers
        finally:
            for proc in procs:
                _stop(proc)


def _body(seed: int) -> bytes:
    x = np.random.default_rng(seed).random(784, dtype=np.float32)
    return json.dumps(
        {"inputs": [{"name": "input", "shape": [1, 784], "datatype": "FP32", "data": x.tolist()}]}
    ).encode()


def test_the_cache_is_shared_across_hosts(
    cluster: tuple[list[Host], str, list[subprocess.Popen[str]]],
) -> None:
    (a, b, lb), key, _ = cluster
    auth = [f"Authorization: Bearer {key}"]
    body = _body(7)
    first = lb.get(f"http://{a.address}:8000/v2/models/mnist-mlp/infer", auth, body)
    again = lb.get(f"http://{b.address}:8000/v2/models/mnist-mlp/infer", auth, body)
    assert first[0] == again[0] == 200, (first, again)
    assert "x-cache: miss" in first[1] and "x-cache: hit" in again[1]  # answered by A, found by B
    assert json.loads(first[2])["outputs"] == json.loads(again[2])["outputs"]


def test_killing_one_host_under_load_fails_no_request_beyond_those_in_flight(
    cluster: tuple[list[Host], str, list[subprocess.Popen[str]]], tmp_path: Path
) -> None:
    (a, _, lb), key, servers = cluster
    bench = lb.cmd(sys.executable, "-m", "skylift", "bench", "serve", f"http://{lb.address}:8080")
    bench += ["--model", "mnist-mlp", "-c", str(CONCURRENCY), "-d", "6", "--warmup", "0.5", "--api-key", key]
    load = subprocess.Popen(
        [*bench, "--json", "-"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    time.sleep(3)
    _stop(servers[0])  # kill -9 host A's whole server: supervisor and replica
    out, err = load.communicate(timeout=120)
    assert load.returncode == 0, err
    report = json.loads(out)
    failed = report["requests"] - report["ok"]
    assert report["ok"] > 100 and failed <= CONCURRENCY, report
    # The balancer has taken A out: every request now succeeds, through B.
    answers = [
        lb.get(
            f"http://{lb.address}:8080/v2/models/mnist-mlp/infer", [f"Authorization: Bearer {key}"], _body(i)
        )[0]
        for i in range(20)
    ]
    assert answers == [200] * 20
    assert lb.get(f"http://{a.address}:8000/v2/health/live")[0] == 0  # A is gone, not just slow

"""`skylift serve` behind a real HAProxy on loopback: a path prefix forwarded unstripped
(--root-path /ml) and the client address from X-Forwarded-For believed only from the proxy
(--forwarded-allow-ips). HAProxy connects from 127.0.0.2 and the client from 127.0.0.3, so the
audit log shows which address the server believed.
"""

from __future__ import annotations

import http.client
import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from torch import nn

from skylift.security.apikeys import KeyStore
from tests.conftest import finish, free_port, skylift_process
from tests.integration.serve_helpers import Server, running
from tests.unit.batch.conftest import features, reference, register_mlp

M = "mnist-mlp"
PROXY, CLIENT = "127.0.0.2", "127.0.0.3"
HAPROXY = """
global
    maxconn 64
defaults
    mode http
    timeout connect 2s
    timeout client 30s
    timeout server 30s
frontend web
    bind 127.0.0.1:{port}
    # Only /ml/ is this service's, forwarded with its prefix, as a path-routing balancer does.
    http-request deny deny_status 404 unless {{ path_beg /ml/ }}
    default_backend skylift
backend skylift
    option forwardfor
    server s 127.0.0.1:{backend} source {proxy}
"""


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("proxy-home")


@pytest.fixture(scope="module")
def module(home: Path) -> nn.Module:
    return register_mlp(home)


@pytest.fixture(scope="module")
def key(home: Path) -> str:
    made, _ = KeyStore(home / "keys.json").create("app", ("predict",))
    return made


@pytest.fixture(scope="module")
def proxied(home: Path, module: nn.Module, key: str) -> Iterator[tuple[Server, int]]:
    """(the server, HAProxy's port): serve trusting only the proxy's address, under /ml."""
    flags = ("--replicas", "1", "--forwarded-allow-ips", PROXY, "--root-path", "/ml")
    with running(home, M, *flags, key=key) as server:
        assert f"X-Forwarded-For believed from {PROXY}; root path /ml" in server.log.read_text()
        port = free_port()
        config = home / "haproxy.cfg"
        config.write_text(HAPROXY.format(port=port, backend=server.port, proxy=PROXY))
        with (home / "haproxy.log").open("w") as log:
            haproxy = subprocess.Popen(["haproxy", "-db", "-f", str(config)], stdout=log, stderr=log)
        try:
            deadline = time.monotonic() + 20
            while _get(port, "/ml/v2/health/live")[0] != 200:
                assert haproxy.poll() is None, (home / "haproxy.log").read_text()
                assert time.monotonic() < deadline, "HAProxy never forwarded /ml/v2/health/live"
                time.sleep(0.05)
            yield server, port
        finally:
            haproxy.terminate()
            haproxy.wait(timeout=30)


def _get(
    port: int, path: str, headers: dict[str, str] | None = None, source: str = "127.0.0.1"
) -> tuple[int, bytes]:
    """GET 127.0.0.1:port/path from the loopback address `source` (status 0: not listening yet)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30, source_address=(source, 0))
    try:
        conn.request("GET", path, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.read()
    except ConnectionError:
        return 0, b""
    finally:
        conn.close()


def _audited(home: Path, route: str) -> dict[str, object]:
    """The audit line of the one request to `route` (each check denies a made-up model's path)."""
    lines = [json.loads(line) for line in (home / "audit.log").read_text().splitlines()]
    found: list[dict[str, object]] = [line for line in lines if line["route"] == route]
    assert len(found) == 1, lines
    return found[0]


def test_tritonclient_infers_through_haproxy_under_the_prefix(
    proxied: tuple[Server, int], module: nn.Module, key: str
) -> None:
    import tritonclient.http as triton

    _, port = proxied
    x = features(3)
    client = triton.InferenceServerClient(f"127.0.0.1:{port}/ml")  # every request under /ml/
    headers = {"Authorization": f"Bearer {key}"}
    try:
        assert client.is_server_ready(headers=headers) and client.is_model_ready(M, headers=headers)
        inp = triton.InferInput("input", list(x.shape), "FP32")
        inp.set_data_from_numpy(x, binary_data=True)
        result = client.infer(M, [inp], headers=headers)
    finally:
        client.close()
    probabilities = result.as_numpy("probabilities")
    assert probabilities is not None
    np.testing.assert_allclose(probabilities, reference(module, x)[1], atol=1e-5)


def test_the_audit_believes_the_proxy_and_no_one_else(home: Path, proxied: tuple[Server, int]) -> None:
    server, port = proxied
    wrong = {"Authorization": "Bearer sk_00000000_wrong"}
    # Through HAProxy from 127.0.0.3, with a forged X-Forwarded-For: HAProxy appends the address it
    # saw, and the rightmost address not of a trusted proxy is the client.
    forged = {**wrong, "X-Forwarded-For": "6.6.6.6"}
    assert _get(port, "/ml/v2/models/via-proxy", forged, source=CLIENT)[0] == 401
    entry = _audited(home, "/ml/v2/models/via-proxy")
    assert entry["client"] == CLIENT and entry["outcome"] == "denied: invalid key"
    # Straight to the server from 127.0.0.1, which is no trusted proxy: its header is not believed.
    assert server.request("GET", "/v2/models/direct", None, forged)[0] == 401
    assert str(_audited(home, "/v2/models/direct")["client"]).startswith("127.0.0.1:")


def test_paths_without_the_prefix_work_and_openapi_names_it(proxied: tuple[Server, int]) -> None:
    server, port = proxied
    assert server.request("GET", f"/v2/models/{M}")[0] == 200  # a probe, or a proxy that strips /ml
    assert server.request("GET", f"/ml/v2/models/{M}")[0] == 200
    assert _get(port, f"/v2/models/{M}")[0] == 404  # HAProxy forwards only /ml/
    status, body = _get(port, "/ml/openapi.json", {"Authorization": f"Bearer {server.key}"})
    doc = json.loads(body)
    assert status == 200 and doc["servers"] == [{"url": "/ml"}] and "/v2/models/{model}/infer" in doc["paths"]


def test_without_the_flag_forwarded_headers_are_ignored_whatever_the_environment(
    home: Path, module: nn.Module, key: str
) -> None:
    # uvicorn reads FORWARDED_ALLOW_IPS when not told otherwise; skylift tells it.
    with running(home, M, "--replicas", "1", key=key, env={"FORWARDED_ALLOW_IPS": "*"}) as server:
        headers = {"Authorization": "Bearer sk_00000000_wrong", "X-Forwarded-For": "6.6.6.6"}
        assert server.request("GET", "/v2/models/unflagged", None, headers)[0] == 401
        doc = json.loads(server.request("GET", "/openapi.json")[2])
    assert str(_audited(home, "/v2/models/unflagged")["client"]).startswith("127.0.0.1:")
    assert "servers" not in doc


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("--forwarded-allow-ips", "300.1.1.1", "entry '300.1.1.1' is not an IP address or CIDR network"),
        ("--root-path", "ml", "must start with '/'"),
        ("--root-path", "/a/../b", "may not hold empty, '.' or '..' segments"),
    ],
)
def test_a_bad_flag_is_one_line_and_exit_2(home: Path, flag: str, value: str, message: str) -> None:
    code, out, err = finish(skylift_process(home, "serve", M, flag, value), timeout=60)
    assert code == 2 and out == "" and err.count("\n") == 1, err
    assert err.startswith(f"skylift serve: error: argument {flag}: ") and message in err
    assert "Traceback" not in err

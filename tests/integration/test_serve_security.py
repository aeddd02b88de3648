"""Secure serving for real: API keys and scopes, live key changes, audit log, TLS."""

from __future__ import annotations

import json
import os
import socket
import ssl
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from skylift.errors import AuthError
from skylift.security.apikeys import KeyStore
from skylift.spec import load_spec
from skylift.train import fit
from tests.conftest import EXAMPLE
from tests.integration.serve_helpers import Server, running
from tests.unit.serve.test_serve_compression import lying_frame

M = "mnist-mlp"
ONE_ROW = json.dumps(
    {"inputs": [{"name": "input", "shape": [1, 784], "datatype": "FP32", "data": [0.1] * 784}]}
)


def _keys(home: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "skylift", "keys", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "SKYLIFT_HOME": str(home), **(env or {})},
        timeout=60,
    )


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("secure-home")
    fit(load_spec(EXAMPLE, ["train.epochs=1"]), home=home)
    return home


@pytest.fixture(scope="module")
def keys(home: Path) -> dict[str, str]:
    made = {}
    for name, scope in (("app", "predict"), ("ops", "metrics"), ("root", "predict,metrics,admin")):
        out = _keys(home, "create", "--name", name, "--scope", scope)
        assert out.returncode == 0, out.stderr
        made[name] = out.stdout.strip()
    return made


@pytest.fixture(scope="module")
def server(home: Path, keys: dict[str, str]) -> Iterator[Server]:
    with running(home, M, "--replicas", "1", key=keys["app"]) as s:
        yield s


def test_keys_are_shown_once_and_stored_hashed(home: Path, keys: dict[str, str]) -> None:
    store = home / "keys.json"
    text = store.read_text()
    assert stat.S_IMODE(store.stat().st_mode) == 0o600
    for key in keys.values():
        assert key.startswith("sk_") and key not in text and key.split("_", 2)[2] not in text
    listing = _keys(home, "list")
    assert listing.returncode == 0 and "app" in listing.stdout and "root" in listing.stdout
    assert not any(k.split("_", 2)[2][:10] in listing.stdout for k in keys.values())
    bad = _keys(home, "create", "--name", "x", "--scope", "root")
    assert bad.returncode == 2 and "--scope takes a comma list" in bad.stderr


def test_unknown_id_and_wrong_secret_fail_alike(home: Path, keys: dict[str, str]) -> None:
    store = KeyStore(home / "keys.json")
    key_id = keys["app"].split("_")[1]
    for wrong in (f"sk_{key_id}_{'A' * 43}", f"sk_00000000_{'A' * 43}", "sk_", "x" * 5000, ""):
        with pytest.raises(AuthError, match=r"^invalid API key$"):
            store.verify(wrong)
    assert store.verify(keys["app"]).name == "app"


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({}, 401),
        ({"Authorization": "Bearer"}, 401),
        ({"Authorization": "Basic dXNlcjpwYXNz"}, 401),
        ({"Authorization": "Bearer sk_12345678_short"}, 401),
        ({"Authorization": "Bearer " + "A" * 6000}, 401),
        ({"X-API-Key": "not-a-key"}, 401),
    ],
)
def test_missing_or_bad_credentials_are_401(server: Server, headers: dict[str, str], status: int) -> None:
    got, reply_headers, body = server.request("POST", f"/v2/models/{M}/infer", ONE_ROW.encode(), headers)
    assert got == status and reply_headers.get("www-authenticate") == "Bearer"
    assert "API key" in json.loads(body)["error"]


def test_truncated_valid_key_is_401_and_never_echoed(server: Server, keys: dict[str, str]) -> None:
    truncated = keys["app"][:-3]
    got, _, body = server.request("GET", f"/v2/models/{M}", None, {"X-API-Key": truncated})
    assert got == 401 and truncated.encode() not in body


def test_scopes(server: Server, keys: dict[str, str]) -> None:
    bearer = {"Authorization": f"Bearer {keys['app']}"}
    assert server.request("POST", f"/v2/models/{M}/infer", ONE_ROW.encode(), bearer)[0] == 200
    assert (
        server.request("POST", f"/v2/models/{M}/infer", ONE_ROW.encode(), {"X-API-Key": keys["app"]})[0]
        == 200
    )
    assert server.request("GET", "/v2/health/live", None, {})[0] == 200  # liveness needs no key
    assert server.request("GET", "/v2/health/ready", None, {})[0] == 401
    assert server.request("GET", "/metrics", None, bearer)[0] == 403
    assert server.request("GET", "/metrics", None, {"X-API-Key": keys["ops"]})[0] == 200
    assert server.request("POST", "/v2/repository/index", b"", bearer)[0] == 403
    status, _, body = server.request("POST", "/v2/repository/index", b"", {"X-API-Key": keys["root"]})
    assert status == 200 and json.loads(body)[0]["name"] == M
    assert (
        server.request("POST", f"/v2/models/{M}/infer", ONE_ROW.encode(), {"X-API-Key": keys["ops"]})[0]
        == 403
    )
    doc = json.loads(server.request("GET", "/openapi.json", None, bearer)[2])
    assert set(doc["components"]["securitySchemes"]) == {"bearer", "apiKey"}


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "//v2/repository/index"),
        ("POST", "///v2/repository/index"),
        ("POST", "/v2/repository/index/"),
        ("POST", "//v2/repository/models/mnist-mlp/unload"),
        ("POST", "//v2/repository/models/mnist-mlp/load"),
        ("POST", "/v2/repository//index"),
        ("GET", "//metrics"),
        ("GET", "/metrics/"),
    ],
)
def test_extra_slashes_do_not_get_around_a_scope(
    server: Server, keys: dict[str, str], method: str, path: str
) -> None:
    """The scope comes from the same reading of the path as the route (an audit found a bypass)."""
    status, _, body = server.request(method, path, b"", {"X-API-Key": keys["app"]})
    assert status == 403 and "lacks the" in json.loads(body)["error"], body
    assert server.request("POST", f"/v2/models/{M}/infer", ONE_ROW.encode())[0] == 200  # still loaded


def test_keys_created_and_revoked_apply_without_restart(home: Path, server: Server) -> None:
    new = _keys(home, "create", "--name", "late", "--scope", "predict").stdout.strip()
    short = _keys(home, "create", "--name", "brief", "--scope", "predict", "--expires", "2s").stdout.strip()

    def status(key: str) -> int:
        return server.request("GET", f"/v2/models/{M}", None, {"X-API-Key": key})[0]

    deadline = time.monotonic() + 10
    while status(new) != 200 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert status(new) == 200
    assert _keys(home, "revoke", "late").returncode == 0
    deadline = time.monotonic() + 10
    while status(new) != 401 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert status(new) == 401
    time.sleep(2.1)
    assert status(short) == 401  # expired


def test_audit_log_records_failures_and_admin_actions_without_keys(
    home: Path, server: Server, keys: dict[str, str]
) -> None:
    server.request("GET", "/metrics", None, {"X-API-Key": keys["app"]})
    server.request("POST", "/v2/repository/index", b"", {"X-API-Key": keys["root"]})
    server.request("POST", f"/v2/repository/models/{M}/load", b"", {"X-API-Key": keys["root"]})
    bad_ref = b'{"parameters": {"reference": "mnist-mlp:abc"}}'
    root = {"X-API-Key": keys["root"]}
    assert server.request("POST", f"/v2/repository/models/{M}/load", bad_ref, root)[0] == 400
    assert server.request("POST", "/v2/repository/models/nope/unload", b"", root)[0] == 404
    assert server.request("GET", "/v2/repository/index", None, root)[0] == 405
    lines = [json.loads(line) for line in (home / "audit.log").read_text().splitlines()]
    failures = [(e["key"], e["status"], e["outcome"].split(": ")[:2]) for e in lines[-3:]]
    assert failures == [
        ("root", 400, ["failed", "load"]),
        ("root", 404, ["failed", "unload"]),
        ("root", 405, ["failed", "index"]),
    ]
    assert "version must be a positive integer" in lines[-3]["outcome"]
    assert any(entry["key"] == "app" and entry["outcome"] == "denied: needs scope metrics" for entry in lines)
    assert any(
        e["key"] == "root"
        and e["outcome"] == "ok: load"
        and e["status"] == 200
        and e["client"].startswith("127.0.0.1:")
        for e in lines
    )
    assert any(e["key"] is None and e["outcome"] == "denied: no API key" for e in lines)
    text = (home / "audit.log").read_text()
    assert not any(k.split("_", 2)[2] in text for k in keys.values())


def test_tls_self_signed_with_a_verifying_client(home: Path, keys: dict[str, str]) -> None:
    ctx = ssl.create_default_context(cafile=None)
    cert = home / "tls" / "tls-cert.pem"
    with running(home, M, "--replicas", "1", "--tls-self-signed", key=keys["app"], ready=False) as s:
        deadline = time.monotonic() + 30
        while not cert.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        ctx = ssl.create_default_context(cafile=str(cert))  # verifies the chain and the host name
        s.tls = ctx
        while time.monotonic() < deadline:
            try:
                if s.request("GET", "/v2/health/ready")[0] == 200:
                    break
            except OSError:
                time.sleep(0.1)
        assert "SHA-256" in s.log.read_text() and "https://127.0.0.1" in s.log.read_text()
        assert (
            s.request(
                "POST", f"/v2/models/{M}/infer", ONE_ROW.encode(), {"Authorization": f"Bearer {keys['app']}"}
            )[0]
            == 200
        )
        # plain HTTP to the TLS port gets a plain-text 400 saying so (as nginx does); the server carries on
        for request in (
            b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n",
            f"POST /v2/models/{M}/infer "
            f"HTTP/1.1\r\nHost: x\r\nContent-Length: {len(ONE_ROW)}\r\n\r\n{ONE_ROW}".encode(),
        ):
            with socket.create_connection((s.host, s.port), timeout=10) as raw:
                raw.sendall(request)
                reply = b""
                while data := raw.recv(1024):  # the server closes the connection after its answer
                    reply += data
            head, _, text = reply.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 400 ") and b"content-type: text/plain" in head.lower()
            assert b"use https://" in text and len(text) < 200
        assert s.request("GET", "/v2/health/live")[0] == 200
        untrusting = ssl.create_default_context()
        with pytest.raises(ssl.SSLCertVerificationError):
            Server(s.proc, s.host, s.port, s.log, None, untrusting).request("GET", "/v2/health/live")


def test_rate_limit_is_shared_by_replicas_and_overridable_per_key(home: Path, keys: dict[str, str]) -> None:
    fast = _keys(
        home, "create", "--name", "bulk", "--scope", "predict", "--rate-limit", "60000/m"
    ).stdout.strip()
    with running(home, M, "--replicas", "2", "--rate-limit", "5/s", key=keys["app"]) as s:
        time.sleep(1.1)  # let the readiness probes' tokens refill
        tick = time.monotonic()
        replies = [s.request("GET", f"/v2/models/{M}", None, {"X-API-Key": keys["app"]}) for _ in range(40)]
        elapsed = time.monotonic() - tick
        allowed = sum(r[0] == 200 for r in replies)
        assert {r[0] for r in replies} == {200, 429}
        assert allowed <= 5 + 5 * elapsed + 1  # one bucket for both replicas, not one each
        limited = next(r for r in replies if r[0] == 429)
        assert (
            int(limited[1]["retry-after"]) >= 1
            and "rate limit of 5 requests/s" in json.loads(limited[2])["error"]
        )
        assert all(
            s.request("GET", f"/v2/models/{M}", None, {"X-API-Key": fast})[0] == 200 for _ in range(40)
        )


def test_compressed_requests_and_responses(server: Server, keys: dict[str, str]) -> None:
    import gzip

    import zstandard

    auth = {"Authorization": f"Bearer {keys['app']}"}
    for encoding, packed in (
        ("gzip", gzip.compress(ONE_ROW.encode())),
        ("zstd", zstandard.ZstdCompressor().compress(ONE_ROW.encode())),
    ):
        status, headers, body = server.request(
            "POST", f"/v2/models/{M}/infer", packed, {**auth, "Content-Encoding": encoding}
        )
        assert status == 200, body
        assert headers.get("content-encoding") is None  # small answer, no Accept-Encoding
    rows = json.dumps(
        {"inputs": [{"name": "input", "shape": [50, 784], "datatype": "FP32", "data": [0.2] * 39200}]}
    )
    for accept, expected in (
        ("gzip", "gzip"),
        ("zstd;q=1, gzip;q=0.5", "zstd"),
        ("br", None),
        ("zstd;q=0", None),
    ):
        status, headers, body = server.request(
            "POST", f"/v2/models/{M}/infer", rows.encode(), {**auth, "Accept-Encoding": accept}
        )
        assert status == 200 and headers.get("content-encoding") == expected
        if expected == "gzip":
            body = gzip.decompress(body)
        elif expected == "zstd":
            body = zstandard.ZstdDecompressor().decompress(body)
        assert len(json.loads(body)["outputs"][0]["data"]) == 500


def test_compression_attacks_get_4xx_and_the_server_stays_up(server: Server, keys: dict[str, str]) -> None:
    import gzip

    import zstandard

    auth = {"Authorization": f"Bearer {keys['app']}"}
    bomb = gzip.compress(b"\0" * (200 << 20), compresslevel=9)  # 200 MiB of zeros in ~200 KB
    liar = bytearray(zstandard.ZstdCompressor(write_content_size=True).compress(b"{}"))
    zbomb = zstandard.ZstdCompressor(level=19).compress(b"[" * (64 << 20))
    honest = zstandard.ZstdCompressor(write_content_size=True).compress(ONE_ROW.encode())
    cases = [
        (bomb, "gzip", 413, "inflates past"),
        (zbomb, "zstd", 413, "inflates past"),
        (bytes(liar[:-3]), "zstd", 400, "zstd"),
        (lying_frame(honest, 100), "zstd", 400, "zstd body is corrupt"),  # declares less than it holds
        (lying_frame(honest, len(ONE_ROW) + 500), "zstd", 400, "zstd body is corrupt"),  # declares more
        (lying_frame(honest, 1 << 40), "zstd", 413, "inflates past"),  # declares 1 TiB
        (gzip.compress(ONE_ROW.encode())[:-10], "gzip", 400, "gzip body is"),
        (b"not gzip at all", "gzip", 400, "gzip body is corrupt"),
        (ONE_ROW.encode(), "br", 415, "Content-Encoding 'br'"),
    ]
    for body, encoding, status, message in cases:
        got, _, raw = server.request(
            "POST", f"/v2/models/{M}/infer", body, {**auth, "Content-Encoding": encoding}
        )
        assert got == status and message in json.loads(raw)["error"], (encoding, raw[:200])
    assert server.request("POST", f"/v2/models/{M}/infer", ONE_ROW.encode(), auth)[0] == 200


def _ca_and_server_cert(folder: Path) -> tuple[Path, Path, Path]:
    """A user's own PKI: a CA, and a server certificate it signed for localhost and 127.0.0.1."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)
    day = datetime.timedelta(days=1)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - day)
        .not_valid_after(now + day)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    names = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - day)
        .not_valid_after(now + day)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    paths = folder / "ca.pem", folder / "server.pem", folder / "server.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return paths


def test_tls_with_the_users_own_certificate(home: Path, keys: dict[str, str], tmp_path: Path) -> None:
    ca, cert, key = _ca_and_server_cert(tmp_path)
    trusting = ssl.create_default_context(cafile=str(ca))  # verifies the chain and the host name
    args = ("--replicas", "1", "--tls-cert", str(cert), "--tls-key", str(key))
    with running(home, M, *args, key=keys["app"], tls=trusting) as s:
        assert "https://127.0.0.1" in s.log.read_text()
        assert s.request("POST", f"/v2/models/{M}/infer", ONE_ROW.encode())[0] == 200
        with pytest.raises(ssl.SSLCertVerificationError):  # a client that does not trust the CA
            Server(s.proc, s.host, s.port, s.log, keys["app"], ssl.create_default_context()).request(
                "GET", "/v2/health/live"
            )
        with socket.create_connection((s.host, s.port), timeout=10) as raw:  # plain HTTP: refused
            raw.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n")
            assert not raw.recv(1024).startswith(b"HTTP/1.1 200")
        assert s.request("GET", "/v2/health/live")[0] == 200


def test_skylift_api_keys_file_points_the_server_and_the_cli_at_another_store(
    home: Path, keys: dict[str, str], tmp_path: Path
) -> None:
    store = {"SKYLIFT_API_KEYS_FILE": str(tmp_path / "elsewhere" / "keys.json")}
    made = _keys(home, "create", "--name", "elsewhere", "--scope", "predict", env=store)
    assert made.returncode == 0, made.stderr
    key = made.stdout.strip()
    assert "elsewhere" in _keys(home, "list", env=store).stdout
    assert "elsewhere" not in _keys(home, "list").stdout  # SKYLIFT_HOME/keys.json is untouched
    with running(home, M, "--replicas", "1", key=key, env=store) as s:
        assert f"API keys from {store['SKYLIFT_API_KEYS_FILE']}" in s.log.read_text()
        assert s.request("POST", f"/v2/models/{M}/infer", ONE_ROW.encode())[0] == 200
        # A key of the home store is unknown to this server.
        assert s.request("GET", f"/v2/models/{M}", None, {"X-API-Key": keys["app"]})[0] == 401


def test_keys_never_appear_in_metrics_logs_or_errors(
    home: Path, server: Server, keys: dict[str, str]
) -> None:
    app, key_id = keys["app"], keys["app"].split("_")[1]
    secrets = [k.split("_", 2)[2] for k in keys.values()]
    wrong = f"sk_{key_id}_{'B' * 43}"
    replies = [
        server.request("POST", f"/v2/models/{M}/infer", ONE_ROW.encode(), {"Authorization": f"Bearer {app}"}),
        server.request("GET", "/metrics", None, {"X-API-Key": app}),  # 403
        server.request("GET", f"/v2/models/{M}", None, {"X-API-Key": wrong}),  # 401
        server.request("GET", f"/v2/models/{M}", None, {"X-API-Key": app[:-1]}),  # 401
        server.request("POST", f"/v2/models/{M}/infer", b"{", {"X-API-Key": app}),  # 400
        server.request("POST", "/v2/repository/index", b"", {"X-API-Key": keys["root"]}),
    ]
    time.sleep(1.2)  # replicas publish their metrics about once a second
    status, _, metrics = server.request("GET", "/metrics", None, {"X-API-Key": keys["ops"]})
    assert status == 200 and b"skylift_requests_total" in metrics
    texts = [
        metrics.decode(),
        server.log.read_text(),
        (home / "audit.log").read_text(),
        *(body.decode() for _, _, body in replies),
    ]
    for text in texts:
        assert not any(secret in text for secret in secrets) and "B" * 43 not in text


def test_a_corrupt_key_file_keeps_the_server_answering(
    home: Path, server: Server, keys: dict[str, str]
) -> None:
    store = home / "keys.json"
    good = store.read_text()
    try:
        store.write_text(good[: len(good) // 2])  # a bad hand edit
        time.sleep(2.5)  # the server re-reads the file within ~2 s
        for _ in range(5):
            assert server.request("POST", f"/v2/models/{M}/infer", ONE_ROW.encode())[0] == 200
        assert server.log.read_text().count("not a skylift key file") == 1
    finally:
        store.write_text(good)
    assert server.request("GET", f"/v2/models/{M}", None, {"X-API-Key": keys["root"]})[0] == 200

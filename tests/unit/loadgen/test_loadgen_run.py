"""`run_bench` against a real server on 127.0.0.1: bodies the server accepts, unique stamps,
errors by status, timeouts, dropped and closed connections, chunked replies, TLS, request quotas."""

from __future__ import annotations

import datetime
import ipaddress
import re
import socket
import ssl
from pathlib import Path

import numpy as np
import pytest

from skylift.errors import AuthError, ModelNotFound, SkyliftError, SpecError
from skylift.loadgen import BenchConfig, BenchReport, run_bench
from skylift.loadgen._body import stamp_value
from tests.unit.loadgen.server import MODEL, V2Server, every_tenth


def bench(url: str, **kw: object) -> BenchReport:
    kw = {"concurrency": 2, "duration_s": 0.3, "warmup_s": 0.0, "processes": 1, **kw}
    return run_bench(BenchConfig(url, MODEL, **kw))  # type: ignore[arg-type]


@pytest.mark.parametrize("protocol", ["v2-json", "v2-binary", "v1"])
def test_every_protocol_sends_valid_unique_requests(protocol: str) -> None:
    with V2Server() as srv:
        r = bench(srv.url, protocol=protocol, concurrency=3, rows=2)
    assert srv.invalid == []
    assert r.ok > 10 and r.errors == {} and r.statuses == {"200": r.ok}
    assert r.rows_per_s == pytest.approx(2 * r.ok_per_s)
    assert r.latency_ms.p50 is not None and 0 < r.latency_ms.p50 <= r.latency_ms.p99 <= r.latency_ms.max  # type: ignore[operator]
    # The probe is request 0; every request after it carries a value no other request had.
    assert len(set(srv.first_values)) == len(srv.first_values) > r.ok
    assert np.float32(srv.first_values[0]) == np.float32(stamp_value(0))


def test_same_body_repeats_the_first_value() -> None:
    with V2Server() as srv:
        bench(srv.url, unique=False)
    assert len(set(srv.first_values)) == 1


def test_errors_by_status_with_the_servers_message() -> None:
    with V2Server(every_tenth, chunked=True) as srv:
        r = bench(srv.url, concurrency=4, duration_s=0.5)
    assert set(r.errors) == {"400", "503"}
    assert r.error_samples["503"] == "server overloaded"
    assert r.ok == r.statuses["200"] and r.requests == sum(r.statuses.values())
    assert 0.6 < r.ok / r.requests < 0.95  # 8 in 10 succeed, give or take the window's edges


def test_timeouts_drops_and_server_closes_are_counted_and_recovered() -> None:
    with V2Server(stall=lambda n: n in (3, 4), drop=lambda n: n % 7 == 6, close_every=5) as srv:
        r = bench(srv.url, concurrency=3, duration_s=0.8, timeout_s=0.2)
    assert r.errors["timeout"] == 2
    assert r.errors["closed"] >= 3 and "connection closed mid-request" in r.error_samples["closed"]
    assert r.ok > 20  # connections were reopened after every close, drop and timeout


def test_requests_quota_stops_early() -> None:
    with V2Server() as srv:
        r = bench(srv.url, duration_s=30.0, requests=25)
    assert r.requests == 25 and r.duration_s < 10


def test_features_when_the_server_has_no_metadata() -> None:
    with V2Server(metadata=False) as srv:
        r = bench(srv.url, features=784)
        assert r.ok > 0 and srv.invalid == []
        with pytest.raises(ModelNotFound, match="pass --features N"):
            bench(srv.url)
        with pytest.raises(ModelNotFound, match="HTTP 404"):
            run_bench(BenchConfig(srv.url, "other", features=784, processes=1))


def test_refused_key_and_unreachable_server() -> None:
    with V2Server(lambda n: 401) as srv:
        # A key was passed: the fix is another key, not "pass --api-key".
        with pytest.raises(AuthError, match=r"refused the API key given with --api-key .*skylift keys"):
            bench(srv.url, api_key="wrong")
        assert srv.headers_seen[0]["authorization"] == "Bearer wrong"
        with pytest.raises(AuthError, match=r"needs an API key .*; pass --api-key or set SKYLIFT_API_KEY"):
            bench(srv.url)
    with V2Server(lambda n: 403) as srv, pytest.raises(AuthError, match="it lacks the scope"):
        bench(srv.url, api_key="metrics-only")
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{s.getsockname()[1]}"
    with pytest.raises(SkyliftError, match=re.escape(f"cannot connect to {url}: Connection refused")):
        bench(url)


def _self_signed(tmp: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp / "cert.pem", tmp / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_path, key_path


def test_https_with_cacert_or_insecure(tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    with V2Server(tls=ctx) as srv:
        assert bench(srv.url, cacert=str(cert)).ok > 0
        assert bench(srv.url, insecure=True, protocol="v2-binary").ok > 0
        with pytest.raises(SkyliftError, match="--cacert"):
            bench(srv.url)
    assert srv.invalid == []


def test_bad_metadata_datatype_is_a_spec_error() -> None:
    import json

    from tests.unit.loadgen import server

    meta = json.loads(server.METADATA)
    meta["inputs"][0]["datatype"] = "INT64"
    original, server.METADATA = server.METADATA, json.dumps(meta).encode()
    try:
        with V2Server() as srv, pytest.raises(SpecError, match="FP32 tensors only"):
            bench(srv.url)
    finally:
        server.METADATA = original

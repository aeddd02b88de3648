"""Serving behind a proxy, in-process: the flags' checks, routing under --root-path, what is emitted."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from skylift.cli import main
from skylift.errors import SpecError
from skylift.serve.app import App
from skylift.serve.config import ServeConfig, parse_forwarded_allow_ips, parse_root_path
from skylift.serve.metrics import Metrics
from skylift.serve.openapi import openapi
from skylift.serve.repository import Repository
from skylift.serve.routes import split_root


@pytest.mark.parametrize(
    ("text", "trusted"),
    [
        ("", ()),
        ("127.0.0.2", ("127.0.0.2",)),
        (" 10.0.0.0/8 , ::1", ("10.0.0.0/8", "::1")),
        ("fd00::/8,192.168.1.7", ("fd00::/8", "192.168.1.7")),
        ("*", ("*",)),
    ],
)
def test_forwarded_allow_ips_are_normalised(text: str, trusted: tuple[str, ...]) -> None:
    assert parse_forwarded_allow_ips(text) == trusted


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("300.1.1.1", "entry '300.1.1.1' is not an IP address or CIDR network"),
        ("proxy.local", "entry 'proxy.local' is not an IP address"),
        ("10.0.0.0/33", "entry '10.0.0.0/33' is not an IP address or CIDR network"),
        ("10.0.0.1/8", "entry '10.0.0.1/8' has host bits set: give 10.0.0.0/8"),
        ("10.0.0.1,", "has an empty entry"),
        ("*,10.0.0.1", "takes * alone"),
    ],
)
def test_a_malformed_forwarded_allow_ips_names_the_entry(text: str, message: str) -> None:
    with pytest.raises(SpecError, match=r"^--forwarded-allow-ips ") as caught:
        parse_forwarded_allow_ips(text)
    assert message in str(caught.value)


@pytest.mark.parametrize(
    ("text", "root"), [("", ""), ("/", ""), ("/ml", "/ml"), ("/ml/", "/ml"), ("/api/ml-2", "/api/ml-2")]
)
def test_root_path_is_normalised(text: str, root: str) -> None:
    assert parse_root_path(text) == root


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("ml", "must start with '/'"),
        ("/a/../b", "'..' segments"),
        ("/a/./b", "'..' segments"),
        ("//ml", "empty"),
        ("/ml?x=1", "without a query"),
        ("/ml#top", "without a query or fragment"),
        ("/m l", "letters, digits"),
        ("/ml%2F", "letters, digits"),
        ("/v2", "may not start with /v2"),
        ("/v1/x", "may not start with /v1"),
        ("/metrics", "may not start with /metrics"),
    ],
)
def test_a_bad_root_path_is_refused(text: str, message: str) -> None:
    with pytest.raises(SpecError, match=r"^--root-path ") as caught:
        parse_root_path(text)
    assert message in str(caught.value)


@pytest.mark.parametrize(
    ("path", "split"),
    [
        ("/ml/v2/health/live", ("/ml", "/v2/health/live")),
        ("/ml", ("/ml", "/")),
        ("/ml/", ("/ml", "/")),
        ("//ml/v2", ("//ml", "/v2")),  # read as the router reads leading slashes
        ("/v2/health/live", ("", "/v2/health/live")),
        ("/mlx/v2", ("", "/mlx/v2")),  # a prefix ends at a slash
        ("/m", ("", "/m")),
    ],
)
def test_split_root(path: str, split: tuple[str, str]) -> None:
    assert split_root(path, "/ml") == split


def _config(tmp_path: Path, **fields: Any) -> ServeConfig:
    base: dict[str, Any] = {
        "models": ("m",),
        "home": tmp_path,
        "state_dir": tmp_path,
        "keys_path": tmp_path / "keys.json",
        "audit_log": tmp_path / "audit.log",
    }
    return ServeConfig(**{**base, **fields})


def test_the_config_check_refuses_what_the_flags_refuse(tmp_path: Path) -> None:
    _config(tmp_path, no_auth=True, forwarded_allow_ips=("10.0.0.0/8",), root_path="/ml").check()
    for fields, message in (
        ({"forwarded_allow_ips": ("300.1.1.1",)}, "'300.1.1.1' is not an IP address"),
        ({"forwarded_allow_ips": ("*", "10.0.0.1")}, "takes * alone"),
        ({"root_path": "ml"}, "must start with '/'"),
        ({"root_path": "/ml/"}, "no trailing slash: give '/ml'"),
    ):
        with pytest.raises(SpecError, match=r"^--") as caught:
            _config(tmp_path, no_auth=True, **fields).check()
        assert message in str(caught.value)


async def _request(app: App, path: str, client: tuple[str, int] = ("10.1.2.3", 5555)) -> tuple[int, Any, Any]:
    """(status, JSON body, the scope the app saw) of one GET, as uvicorn makes it."""
    sent: list[dict[str, Any]] = []
    scope = {"type": "http", "method": "GET", "path": path, "root_path": "", "headers": [], "client": client}

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return sent[0]["status"], json.loads(sent[1]["body"]), scope


def _get(app: App, path: str, client: tuple[str, int] = ("10.1.2.3", 5555)) -> tuple[int, Any, Any]:
    return asyncio.run(_request(app, path, client))


def _app(config: ServeConfig) -> App:
    metrics = Metrics(0, None)
    return App(config, Repository(config, metrics), metrics)


def test_routes_under_the_root_path_and_without_it(tmp_path: Path) -> None:
    app = _app(_config(tmp_path, no_auth=True, root_path="/ml"))
    status, body, scope = _get(app, "/ml/v2/health/live")
    assert (status, body) == (200, {"live": True})
    assert scope["root_path"] == "/ml" and scope["path"] == "/ml/v2/health/live"  # ASGI: path keeps it
    status, body, scope = _get(app, "/v2/health/live")  # a probe, or a proxy that strips the prefix
    assert (status, body, scope["root_path"]) == (200, {"live": True}, "")
    assert _get(app, "/mlx/v2/health/live")[0] == 404
    status, body, _ = _get(app, "/ml/nothing")
    assert (status, body) == (404, {"error": "no route '/nothing'"})
    for path in ("/ml/openapi.json", "/openapi.json"):  # the prefix is where clients must send
        status, doc, _ = _get(app, path)
        assert status == 200 and doc["servers"] == [{"url": "/ml"}]
    assert "servers" not in openapi(auth=False)  # without --root-path: relative to the host


def test_the_audit_names_the_client_and_the_path_as_sent(tmp_path: Path) -> None:
    app = _app(_config(tmp_path, root_path="/ml"))
    assert _get(app, "/ml/v2/repository/index")[0] == 401  # the admin route, under the prefix
    assert _get(app, "/ml/v2/models/m", ("192.0.2.7", 0))[0] == 401  # a forwarded client: no port
    first, second = (json.loads(line) for line in (tmp_path / "audit.log").read_text().splitlines())
    assert first["route"] == "/ml/v2/repository/index" and first["client"] == "10.1.2.3:5555"
    assert second["client"] == "192.0.2.7"


def test_bad_flags_are_one_line_and_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    for flag, value, message in (
        ("--forwarded-allow-ips", "300.1.1.1", "entry '300.1.1.1' is not an IP address"),
        ("--root-path", "ml", "must start with '/'"),
        ("--root-path", "/a/../b", "'..' segments"),
    ):
        with pytest.raises(SystemExit) as caught:
            main(["serve", "m", flag, value])
        err = capsys.readouterr().err
        assert caught.value.code == 2 and err.count("\n") == 1, err
        assert err.startswith(f"skylift serve: error: argument {flag}: ") and message in err


def test_trusting_every_peer_is_warned_about(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["--home", str(tmp_path), "serve", "nope", "--no-auth", "--forwarded-allow-ips", "*"])
    assert code == 2  # no such model; the warning came first
    warning = capsys.readouterr().err.splitlines()[0]
    assert warning.startswith("warning: --forwarded-allow-ips * believes X-Forwarded-For from any peer")

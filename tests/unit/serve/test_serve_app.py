"""The ASGI app in-process: the safety net for bugs, and a broken key file that must not take auth down."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch

from skylift.security.apikeys import KeyStore
from skylift.serve.app import App
from skylift.serve.config import ServeConfig
from skylift.serve.metrics import Metrics
from skylift.serve.repository import Repository, ServedModel
from skylift.serve.runtimes import Context
from skylift.serve.runtimes.classifier import Classifier


def _app(tmp_path: Path, no_auth: bool = False) -> App:
    config = ServeConfig(
        models=("m",),
        home=tmp_path,
        state_dir=tmp_path,
        no_auth=no_auth,
        keys_path=tmp_path / "keys.json",
        audit_log=tmp_path / "audit.log",
    )
    metrics = Metrics(0, None)
    return App(config, Repository(config, metrics), metrics)


async def _request(
    app: App, method: str, path: str, key: str | None = None, body: bytes = b""
) -> tuple[int, dict[str, Any]]:
    """One request through the ASGI interface, as uvicorn makes it."""
    sent: list[dict[str, Any]] = []
    headers = [(b"authorization", f"Bearer {key}".encode())] if key else []
    scope = {"type": "http", "method": method, "path": path, "headers": headers, "client": ("127.0.0.1", 9)}

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return sent[0]["status"], json.loads(sent[1]["body"]) if sent[1]["body"][:1] == b"{" else {}


def _call(app: App, method: str, path: str, key: str | None = None) -> tuple[int, dict[str, Any]]:
    return asyncio.run(_request(app, method, path, key))


class BrokenRuntime:
    """A model runtime that fails the way a bug would, with a key-shaped string in its message."""

    def __init__(self, secret: str) -> None:
        self.secret = secret

    @property
    def inputs(self) -> Any:
        raise RuntimeError(f"boom while holding {self.secret}")


def test_an_unexpected_error_is_a_json_500_logged_without_keys_and_counted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key, _ = KeyStore(tmp_path / "keys.json").create("app", ("predict", "metrics"))
    app = _app(tmp_path)
    app.repo.models["m"] = ServedModel("m", 1, "m", BrokenRuntime(key), {})  # type: ignore[arg-type]
    status, body = _call(app, "GET", "/v2/models/m", key)
    assert status == 500 and body == {"error": "internal server error (logged by the server)"}
    err = capsys.readouterr().err
    assert "internal error on GET v2/models/metadata" in err and "RuntimeError: boom" in err
    assert key not in err and key.split("_", 2)[2] not in err and "sk_***" in err
    metrics = app.metrics.render()
    assert 'skylift_internal_errors_total{replica="0"} 1' in metrics
    assert 'route="v2/models/metadata",status="500"' in metrics
    assert _call(app, "GET", "/v2/health/live")[0] == 200  # the app carries on


def _model(x_RS: torch.Tensor) -> torch.Tensor:
    """A model with a bug: it fails on any batch holding a negative value."""
    if (x_RS < 0).any():
        raise ValueError("negative input")
    return torch.zeros((len(x_RS), 2))


def test_a_model_that_fails_is_a_json_500_logged_with_its_version_and_counted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    app = _app(tmp_path, no_auth=True)

    async def infer(value: float) -> tuple[int, dict[str, Any]]:
        req = {"inputs": [{"name": "input", "shape": [1, 2], "datatype": "FP32", "data": [value, 1.0]}]}
        return await _request(app, "POST", "/v2/models/m/infer", body=json.dumps(req).encode())

    async def go() -> list[tuple[int, dict[str, Any]]]:
        loaded = SimpleNamespace(input_shape=(2,), classes=["a", "b"], data={}, module=_model)
        runtime = Classifier(Context("m", 3, loaded, app.config, app.metrics))  # type: ignore[arg-type]
        app.repo.models["m"] = ServedModel("m", 3, "m@production", runtime, {})
        runtime.start()
        try:
            return [await infer(-1.0), await infer(1.0)]
        finally:
            await runtime.stop()

    (bad, body), (good, _) = asyncio.run(go())
    assert bad == 500 and body == {"error": "internal server error (logged by the server)"}
    assert good == 200  # the model thread and the batcher carry on
    err = capsys.readouterr().err
    assert "internal error on POST v2/models/infer" in err and "model m:3" in err
    assert "ValueError: negative input" in err and "Traceback" in err
    assert 'skylift_internal_errors_total{replica="0"} 1' in app.metrics.render()


def test_a_corrupt_key_file_keeps_the_last_good_keys_and_says_so_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = KeyStore(tmp_path / "keys.json")
    key, _ = store.create("app", ("predict",))
    app = _app(tmp_path)
    assert app.auth is not None
    assert _call(app, "GET", "/v2/health/ready", key)[0] == 503  # authorized; no model loaded
    (tmp_path / "keys.json").write_text('{"keys": [{"id": "12')  # a bad hand edit
    for _ in range(3):
        app.auth._read = 0.0  # as if the reload interval had passed
        assert _call(app, "GET", "/v2/health/ready", key)[0] == 503
        assert _call(app, "GET", "/v2/health/ready", "sk_00000000_" + "A" * 43)[0] == 401
    err = capsys.readouterr().err
    assert err.count("not a skylift key file") == 1 and "keeping the 1 key(s)" in err
    (tmp_path / "keys.json").unlink()
    newer, _ = KeyStore(tmp_path / "keys.json").create("later", ("predict",))
    app.auth._read = 0.0
    assert _call(app, "GET", "/v2/health/ready", newer)[0] == 503  # a good file applies again
    assert _call(app, "GET", "/v2/health/ready", key)[0] == 401


def test_errors_count_under_the_route_they_hit(tmp_path: Path) -> None:
    app = _app(tmp_path, no_auth=True)
    assert _call(app, "GET", "/v2/models/nope")[0] == 404
    assert _call(app, "GET", "/v2/models/nope/infer")[0] == 405
    assert _call(app, "GET", "/nowhere")[0] == 404
    text = app.metrics.render()
    assert 'route="v2/models/metadata",status="404"' in text
    assert 'route="v2/models/infer",status="405"' in text
    assert 'route="unmatched",status="404"' in text and text.count('route="unmatched",status=') == 1


def test_an_unwritable_audit_log_leaves_auth_answers_as_they_are(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key, _ = KeyStore(tmp_path / "keys.json").create("app", ("predict",))
    app = _app(tmp_path)
    (tmp_path / "audit.log").mkdir()  # writing a line to it fails with an OSError, even for root
    for _ in range(3):
        assert _call(app, "GET", "/v2/models/m", "sk_00000000_wrong")[0] == 401  # not a 500
        assert _call(app, "GET", "/metrics", key)[0] == 403
    err = capsys.readouterr().err
    assert err.count("cannot write the audit log") == 1 and "Traceback" not in err

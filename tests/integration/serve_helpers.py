"""Starting a real `skylift serve` on a free loopback port, and a small blocking HTTP client."""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass
class Server:
    proc: subprocess.Popen[str]
    host: str
    port: int
    log: Path
    key: str | None = None
    """Sent as Authorization: Bearer on every request unless the caller sets its own headers."""
    tls: ssl.SSLContext | None = None

    def request(
        self, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        if self.tls is not None:
            conn: http.client.HTTPConnection = http.client.HTTPSConnection(
                self.host, self.port, timeout=30, context=self.tls
            )
        else:
            conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
        if headers is None and self.key:
            headers = {"Authorization": f"Bearer {self.key}"}
        try:
            conn.request(method, path, body=body, headers=headers or {})
            resp = conn.getresponse()
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
        finally:
            conn.close()

    def infer(self, model: str, x: Any, **extra: Any) -> tuple[int, Any]:
        body = {
            "inputs": [
                {"name": "input", "shape": list(x.shape), "datatype": "FP32", "data": x.ravel().tolist()}
            ]
        }
        body.update(extra)
        status, _, raw = self.request(
            "POST",
            f"/v2/models/{model}/infer",
            json.dumps(body).encode(),
            {"Content-Type": "application/json"},
        )
        return status, json.loads(raw)

    def infer_binary(self, model: str, x: Any) -> int:
        head = json.dumps(
            {
                "inputs": [
                    {
                        "name": "input",
                        "shape": list(x.shape),
                        "datatype": "FP32",
                        "parameters": {"binary_data_size": x.nbytes},
                    }
                ]
            }
        ).encode()
        status, _, _ = self.request(
            "POST",
            f"/v2/models/{model}/infer",
            head + x.tobytes(),
            {"Inference-Header-Content-Length": str(len(head))},
        )
        return status

    def replicas(self) -> list[int]:
        found = []
        for task in Path(f"/proc/{self.proc.pid}/task").iterdir():
            found += [int(c) for c in (task / "children").read_text().split()]
        return [pid for pid in found if "spawn_main" in _cmdline(pid)]  # not the resource tracker


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return ""


@contextmanager
def running(
    home: Path,
    *args: str,
    ready: bool = True,
    timeout: float = 120,
    key: str | None = None,
    tls: ssl.SSLContext | None = None,
    env: dict[str, str] | None = None,
) -> Iterator[Server]:
    """`skylift serve ARGS --port 0` in its own session; yields once /v2/health/ready answers 200.

    `env`: extra environment variables for the server.
    """
    log = home / f"serve-{time.monotonic_ns()}.log"
    out = log.open("w")
    env = {**os.environ, "SKYLIFT_HOME": str(home), **(env or {})}
    proc = subprocess.Popen(
        [sys.executable, "-m", "skylift", "serve", *args, "--port", "0"],
        env=env,
        stdout=out,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + timeout
        port = None
        while port is None:
            match = re.search(r"on https?://([\d.]+):(\d+)", log.read_text())
            if match:
                host, port = match.group(1), int(match.group(2))
            elif proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"server did not start: {log.read_text()}")
            else:
                time.sleep(0.05)
        server = Server(proc, host, port, log, key, tls)
        while ready:
            try:
                if server.request("GET", "/v2/health/ready")[0] == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline or proc.poll() is not None:
                raise AssertionError(f"server never became ready: {log.read_text()}")
            time.sleep(0.05)
        yield server
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        out.close()

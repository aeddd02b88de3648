"""`skylift quickstart`'s last act: serve the model it trained on loopback and query it over HTTP."""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from skylift.errors import SkyliftError

ROWS = 10  # predictions shown


def _start(ref: str, home: Path, log: Path) -> tuple[subprocess.Popen[bytes], str, ssl.SSLContext]:
    """`skylift serve REF --tls-self-signed` on a free loopback port; returns once it answers ready."""
    out = log.open("wb")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "skylift",
            "serve",
            ref,
            "--tls-self-signed",
            "--port",
            "0",
            "--replicas",
            "1",
        ],
        env={**os.environ, "SKYLIFT_HOME": str(home)},
        stdout=out,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 120
    url = None
    tls = None
    while time.monotonic() < deadline and proc.poll() is None:
        if url is None:
            match = re.search(r"on (https://[\d.]+:\d+)", log.read_text(errors="replace"))
            if match:
                url = match.group(1)
                tls = ssl.create_default_context(cafile=str(home / "tls" / "tls-cert.pem"))
        else:
            try:
                with urllib.request.urlopen(f"{url}/v2/health/live", timeout=2, context=tls) as r:
                    if r.status == 200 and tls is not None:
                        return proc, url, tls
            except OSError:
                pass
        time.sleep(0.05)
    proc.kill()
    tail = log.read_text(errors="replace").strip().splitlines()[-1:] or ["no output"]
    raise SkyliftError(f"the server did not start: {tail[0]}")


def serve_and_query(console: Any, ref: str, home: Path, x: Any, y: Any, classes: tuple[str, ...]) -> float:
    """Create an API key, serve `ref` over TLS on loopback, send rows of x as one KServe V2 request,
    print predictions beside the truth and a curl command that works against the server.

    Returns the accuracy over the rows sent.
    """
    from rich.table import Table

    from skylift.security.apikeys import KeyStore, keys_file

    # A unique name, and a week's life: quickstart keys are for trying things, not for keeping.
    name = f"quickstart-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"
    key, info = KeyStore(keys_file(home)).create(name, ("predict",), expires_in=7 * 86400)
    model = ref.split(":")[0].split("@")[0]
    with tempfile.TemporaryDirectory(prefix="skylift-quickstart-") as tmp:
        proc, url, tls = _start(ref, home, Path(tmp) / "serve.log")
        try:
            endpoint = f"{url}/v2/models/{model}/infer"
            request_file = home / "quickstart-request.json"
            one = {
                "inputs": [
                    {
                        "name": "input",
                        "shape": [1, x.shape[1]],
                        "datatype": "FP32",
                        "data": x[0].ravel().tolist(),
                    }
                ]
            }
            request_file.write_text(json.dumps(one))
            curl = (
                f"curl --cacert {home / 'tls' / 'tls-cert.pem'} -H 'Authorization: Bearer {key}' "
                f"-d @{request_file} {endpoint}"
            )
            answered = _run_curl(curl)
            body = {
                "inputs": [
                    {"name": "input", "shape": list(x.shape), "datatype": "FP32", "data": x.ravel().tolist()}
                ]
            }
            headers = {"Content-Type": "application/json", "Authorization": f"Bearer {key}"}
            req = urllib.request.Request(endpoint, json.dumps(body).encode(), headers)
            with urllib.request.urlopen(req, timeout=30, context=tls) as resp:
                outputs = {o["name"]: o for o in json.loads(resp.read())["outputs"]}
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)
    probs = outputs["probabilities"]["data"]
    n_classes = len(classes)
    console.print(f"POST {endpoint}")
    table = Table(
        "row", "predicted", "confidence", "true", "", title="predictions over HTTP", title_justify="left"
    )
    right = 0
    for i, label in enumerate(outputs["label"]["data"]):
        truth = classes[int(y[i])]
        right += label == truth
        confidence = max(probs[i * n_classes : (i + 1) * n_classes])
        table.add_row(str(i), label, f"{confidence:.3f}", truth, "ok" if label == truth else "[red]wrong[/]")
    console.print(table)
    console.print(f"{right}/{len(y)} correct over HTTPS")
    console.print(f"API key {info.name!r} (scope predict, expires in 7 days, printed once): {key}")
    console.print("the same request with curl, while the server ran:", highlight=False)
    console.print(curl, highlight=False, soft_wrap=True)
    if answered:
        console.print(f"  -> {answered}", highlight=False, soft_wrap=True)
    console.print(
        f"server on {url} stopped; serve it again with `skylift serve {ref} --tls-self-signed --port 8443` "
        "and use the same command with that port",
        highlight=False,
    )
    return right / len(y)


def _run_curl(command: str) -> str | None:
    """Run the printed curl command for real, when curl is installed; its reply, shortened."""
    import shlex
    import shutil

    if shutil.which("curl") is None:
        return None
    out = subprocess.run(
        [*shlex.split(command), "--silent", "--show-error"], capture_output=True, text=True, timeout=30
    )
    reply = (out.stdout or out.stderr).strip()
    return reply if len(reply) <= 160 else reply[:157] + "..."

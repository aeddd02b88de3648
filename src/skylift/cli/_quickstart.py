"""`skylift quickstart`'s last act: serve the model it trained on loopback and query it over HTTP."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from skylift.errors import SkyliftError

ROWS = 10  # predictions shown


def _start(ref: str, home: Path, log: Path) -> tuple[subprocess.Popen[bytes], str]:
    """`skylift serve REF` on a free loopback port; returns once it answers ready."""
    out = log.open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "skylift", "serve", ref, "--no-auth", "--port", "0", "--replicas", "1"],
        env={**os.environ, "SKYLIFT_HOME": str(home)},
        stdout=out,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 120
    url = None
    while time.monotonic() < deadline and proc.poll() is None:
        if url is None:
            match = re.search(r"on (http://[\d.]+:\d+)", log.read_text(errors="replace"))
            url = match.group(1) if match else None
        else:
            try:
                with urllib.request.urlopen(f"{url}/v2/health/ready", timeout=2) as r:
                    if r.status == 200:
                        return proc, url
            except OSError:
                pass
        time.sleep(0.05)
    proc.kill()
    tail = log.read_text(errors="replace").strip().splitlines()[-1:] or ["no output"]
    raise SkyliftError(f"the server did not start: {tail[0]}")


def serve_and_query(console: Any, ref: str, home: Path, x: Any, y: Any, classes: tuple[str, ...]) -> float:
    """Serve `ref`, send rows of x as one KServe V2 request, print predictions beside the truth.

    Returns the accuracy over the rows sent.
    """
    from rich.table import Table

    with tempfile.TemporaryDirectory(prefix="skylift-quickstart-") as tmp:
        proc, url = _start(ref, home, Path(tmp) / "serve.log")
        try:
            body = {
                "inputs": [
                    {"name": "input", "shape": list(x.shape), "datatype": "FP32", "data": x.ravel().tolist()}
                ]
            }
            endpoint = f"{url}/v2/models/{ref.split(':')[0].split('@')[0]}/infer"
            req = urllib.request.Request(
                endpoint, json.dumps(body).encode(), {"Content-Type": "application/json"}
            )
            with urllib.request.urlopen(req, timeout=30) as resp:
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
    console.print(f"server on {url} stopped; {right}/{len(y)} correct over HTTP")
    return right / len(y)

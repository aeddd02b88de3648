"""skylift's container image, built here from Debian packages and wheels (scripts/build_image.sh),
run with podman: it serves a registered model that tritonclient queries, with auth on and the
health check passing, and it runs a 2-worker training.

The image is built once per test session; podman keeps the base and the image between runs, so a
second run rebuilds only what changed (the skylift wheel and the last layer).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from skylift.registry import Registry
from skylift.spec import load_spec
from skylift.train import fit
from tests.conftest import EXAMPLE, free_port

ROOT = Path(__file__).resolve().parents[2]
IMAGE = "localhost/skylift:test"
IMAGE_USER = 10001  # the Containerfile's `skylift` user; the volume must be its own
ENV = {
    **os.environ,
    "PYTHON": sys.executable,
    "CONTAINERS_CONF": str(Path(__file__).parent / "container" / "containers.conf"),
}


def _podman(*args: str, timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(["podman", *args], env=ENV, capture_output=True, text=True, timeout=timeout)
    assert not check or proc.returncode == 0, proc.stderr[-2000:]
    return proc


@pytest.fixture(scope="module")
def image() -> str:
    built = subprocess.run(
        ["bash", str(ROOT / "scripts" / "build_image.sh"), IMAGE],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert built.returncode == 0, built.stderr[-3000:]
    return IMAGE


@pytest.fixture(scope="module")
def volume(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SKYLIFT_HOME with mnist-mlp:1 registered on the host, owned by the image's user."""
    home = tmp_path_factory.mktemp("container-home")
    fit(load_spec(EXAMPLE, ["train.epochs=1", "distributed.workers=1"]), home=home)
    return home


def _own(path: Path) -> None:
    for folder, _, files in os.walk(path):
        os.chown(folder, IMAGE_USER, IMAGE_USER)
        for name in files:
            os.chown(Path(folder) / name, IMAGE_USER, IMAGE_USER)


def _skylift(volume: Path, *args: str) -> str:
    """A skylift command on the host over `volume`, which is then handed back to the image's user."""
    proc = subprocess.run(
        [sys.executable, "-m", "skylift", *args, f"--home={volume}"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    _own(volume)
    return proc.stdout


@pytest.fixture(scope="module")
def served(image: str, volume: Path) -> Iterator[tuple[int, str]]:
    key = _skylift(volume, "keys", "create", "--name", "probe", "--scope", "predict").split()[-1]
    port = free_port()
    name = f"skylift-test-{port}"
    _podman(
        "run", "--detach", "--name", name,
        "--volume", f"{volume}:/home/skylift/.skylift",
        "--publish", f"127.0.0.1:{port}:8000",
        "--env", f"SKYLIFT_PROBE_KEY={key}",
        image, "serve", "mnist-mlp:1", "--host", "0.0.0.0", "--replicas", "1",
    )  # fmt: skip
    try:
        yield port, key
    finally:
        logs = _podman("logs", name, check=False)
        _podman("rm", "--force", name, check=False)
        print(logs.stdout[-2000:], logs.stderr[-2000:])


def test_the_image_runs_as_a_non_root_user_with_skylift_as_its_entrypoint(image: str) -> None:
    config = _podman("image", "inspect", "--format", "{{.Config.User}} {{.Config.Entrypoint}}", image).stdout
    assert config.split()[0] == "skylift" and "skylift" in config.split(maxsplit=1)[1]
    version = _podman("run", "--rm", image, "--version").stdout
    assert version.startswith("skylift ")


def test_the_served_model_answers_tritonclient_and_the_health_check_passes(
    served: tuple[int, str], volume: Path
) -> None:
    import tritonclient.http as triton

    port, key = served
    headers = {"Authorization": f"Bearer {key}"}
    client = triton.InferenceServerClient(f"127.0.0.1:{port}")
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                if client.is_server_ready(headers=headers):
                    break
            except Exception:  # not listening yet
                pass
            assert time.monotonic() < deadline, "the container's server never became ready"
            time.sleep(1)
        assert client.is_model_ready("mnist-mlp", headers=headers)
        with pytest.raises(urllib.error.HTTPError, match="401"):  # auth is on: no key, no answer
            urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/models/mnist-mlp", timeout=10)
        x = np.random.default_rng(0).random((3, 784), dtype=np.float32)
        inp = triton.InferInput("input", list(x.shape), "FP32")
        inp.set_data_from_numpy(x, binary_data=True)
        result = client.infer("mnist-mlp", [inp], headers=headers)
    finally:
        client.close()
    module = Registry(volume).load("mnist-mlp:1").module
    with torch.inference_mode():
        want = torch.softmax(module(torch.from_numpy(x)), -1).numpy()
    np.testing.assert_allclose(result.as_numpy("probabilities"), want, atol=1e-6)
    name = f"skylift-test-{port}"
    assert _podman("healthcheck", "run", name, check=False).returncode == 0


def test_the_image_trains_with_2_workers_into_its_volume(image: str, volume: Path) -> None:
    (volume / "job.yaml").write_text(EXAMPLE.read_text(encoding="utf-8"), encoding="utf-8")
    _own(volume)
    proc = _podman(
        "run", "--rm", "--volume", f"{volume}:/home/skylift/.skylift", image,
        "train", "/home/skylift/.skylift/job.yaml", "--workers", "2", "--set", "train.epochs=1",
        timeout=900,
    )  # fmt: skip
    assert "training with 2 worker(s)" in proc.stdout, proc.stdout[-2000:]
    assert "registered model: mnist-mlp:2" in proc.stdout, proc.stdout[-2000:]

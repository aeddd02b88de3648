"""Two hosts made as network namespaces (each its own address and SKYLIFT_HOME, see netns.py)
train one job together with the README's 2-node command, survive a killed worker, and predict.

This machine's hostname resolves to 127.0.0.1, as on many hosts and containers: before each node
advertised its address on the route to the rendezvous, every join hung until the workers'
watchdog exited them with code 75 (the first test failed that way).
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.integration.netns import Host, hosts
from tests.unit.batch.conftest import features, register_mlp

SPEC = {
    "name": "two-hosts",
    "data": {"train": "builtin:digits28"},
    "model": {"layers": [{"dense": {"units": 32, "activation": "relu"}}, {"dense": {"units": 10}}]},
    "train": {"epochs": 2, "batch_size": 64, "register_best": False},
    "distributed": {"workers": 1, "max_restarts": 0},
}


@pytest.fixture
def two() -> Iterator[list[Host]]:
    with hosts(2) as made:
        yield made


def _skylift(host: Host, home: Path, *args: str) -> subprocess.Popen[str]:
    cmd = host.cmd("env", f"SKYLIFT_HOME={home}", sys.executable, "-m", "skylift", *args)
    return subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )


def _node(host: Host, home: Path, spec: Path, rank: int, endpoint: str, *extra: str) -> subprocess.Popen[str]:
    args = ["train", str(spec), "--run-id", "two", "--nnodes", "2", "--node-rank", str(rank)]
    return _skylift(host, home, *args, "--rdzv-endpoint", endpoint, *extra)


def test_two_hosts_train_one_job_and_say_which_address_each_advertises(
    two: list[Host], tmp_path: Path
) -> None:
    spec = tmp_path / "job.yaml"
    spec.write_text(yaml.safe_dump(SPEC), encoding="utf-8")
    endpoint = f"{two[0].address}:29400"
    # The commands come from `--print-commands`, as a user would copy them to each machine.
    ask = [
        "train",
        str(spec),
        "--run-id",
        "two",
        "--nnodes",
        "2",
        "--rdzv-endpoint",
        endpoint,
        "--print-commands",
    ]
    printed = subprocess.run(
        [sys.executable, "-m", "skylift", *ask],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert printed.returncode == 0, printed.stderr
    commands = [
        shlex.split(line.split(": ", 1)[1])
        for line in printed.stdout.splitlines()
        if line.startswith("node ")
    ]
    assert [c[c.index("--node-rank") + 1] for c in commands] == ["0", "1"]
    nodes = [_skylift(host, tmp_path / f"home{r}", *commands[r][1:]) for r, host in enumerate(two)]
    outs = [node.communicate(timeout=600) for node in nodes]
    for node, (out, err) in zip(nodes, outs, strict=True):
        assert node.returncode == 0, out[-2000:] + err[-2000:]
    assert f"node 0 of 2: advertising {two[0].address} on eth0" in outs[0][0]
    assert f"node 1 of 2: advertising {two[1].address} on eth0" in outs[1][0]
    assert f"(from the route to {two[0].address})" in outs[1][0]
    history = (tmp_path / "home0" / "runs" / "two" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in history] == [1, 2]
    assert "this node does not hold the run folder" in outs[1][0]


def test_a_node_address_that_is_not_this_machines_is_refused_in_one_line(
    two: list[Host], tmp_path: Path
) -> None:
    spec = tmp_path / "job.yaml"
    spec.write_text(yaml.safe_dump(SPEC), encoding="utf-8")
    elsewhere = two[0].address.rsplit(".", 1)[0] + ".99"
    for named, said in ((elsewhere, "is not an address of this machine"), ("eth9", "neither an IPv4")):
        node = _node(two[0], tmp_path / "home", spec, 0, f"{two[0].address}:29400", "--node-addr", named)
        out, err = node.communicate(timeout=300)
        assert node.returncode == 2, out + err
        assert said in err and len(err.strip().splitlines()) == 1, err
        assert not (tmp_path / "home").exists()  # refused before anything is written


def _workers(pid: int) -> list[int]:
    """The training or prediction worker processes under an agent."""
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            cmdline = Path(f"/proc/{child}/cmdline").read_bytes()
            found += [int(child)] if b"spawn_main" in cmdline or b"skylift.train.worker" in cmdline else []
    return found


def test_a_worker_killed_on_one_host_is_restarted_and_every_epoch_runs_once(
    two: list[Host], tmp_path: Path
) -> None:
    spec = tmp_path / "job.yaml"
    slow = {**SPEC, "train": {**SPEC["train"], "epochs": 5}, "distributed": {"workers": 1, "max_restarts": 1}}
    spec.write_text(yaml.safe_dump(slow), encoding="utf-8")
    endpoint = f"{two[0].address}:29400"
    nodes = [_node(host, tmp_path / f"home{r}", spec, r, endpoint) for r, host in enumerate(two)]
    history = tmp_path / "home0" / "runs" / "two" / "metrics.jsonl"
    deadline = time.monotonic() + 300
    while not (history.is_file() and history.read_text().strip()):  # after the first epoch
        assert time.monotonic() < deadline and all(n.poll() is None for n in nodes), nodes[0].stderr
        time.sleep(0.1)
    (victim,) = _workers(nodes[1].pid)
    os.kill(victim, signal.SIGKILL)
    outs = [node.communicate(timeout=600) for node in nodes]
    for node, (out, err) in zip(nodes, outs, strict=True):
        assert node.returncode == 0, out[-2000:] + err[-2000:]
    epochs = [json.loads(line)["epoch"] for line in history.read_text().splitlines()]
    assert epochs == [1, 2, 3, 4, 5]
    assert "restart" in outs[1][0] + outs[1][1]


def test_predict_over_two_hosts_writes_what_one_host_writes(two: list[Host], tmp_path: Path) -> None:
    # One home on storage both hosts mount (as a cluster's shared volume would be).
    home = tmp_path / "home"
    register_mlp(home)
    np.save(tmp_path / "x.npy", features(3000))
    common = ("predict", "mnist-mlp", "--input", str(tmp_path / "x.npy"), "--proba", "--chunk-rows", "500")
    one = _skylift(two[0], home, *common, "--output", str(tmp_path / "one.npz"))
    out, err = one.communicate(timeout=300)
    assert one.returncode == 0, out + err
    multi = ("--nnodes", "2", "--rdzv-endpoint", f"{two[0].address}:29500")
    nodes = [
        _skylift(host, home, *common, "--output", str(tmp_path / "two.npz"), *multi, "--node-rank", str(r))
        for r, host in enumerate(two)
    ]
    outs = [node.communicate(timeout=300) for node in nodes]
    for node, (out, err) in zip(nodes, outs, strict=True):
        assert node.returncode == 0, out[-2000:] + err[-2000:]
    assert f"node 1 of 2: advertising {two[1].address} on eth0" in outs[1][0]
    assert "1 worker(s) x 2 node(s)" in outs[0][0]
    assert (tmp_path / "two.npz").read_bytes() == (tmp_path / "one.npz").read_bytes()


def test_a_node_that_cannot_meet_the_others_fails_in_one_line_within_its_timeout(
    two: list[Host], tmp_path: Path
) -> None:
    spec = tmp_path / "job.yaml"
    spec.write_text(yaml.safe_dump(SPEC), encoding="utf-8")
    endpoint = f"{two[0].address}:29400"
    for rank, said in (
        (1, f"cannot reach the rendezvous at {endpoint} within 3 s"),
        (0, "not all 2 nodes joined"),
    ):
        tick = time.monotonic()
        node = _node(two[rank], tmp_path / f"home{rank}", spec, rank, endpoint, "--rdzv-timeout", "3")
        out, err = node.communicate(timeout=120)
        assert node.returncode != 0 and said in err, out + err
        assert len(err.strip().splitlines()) == 1, err
        assert time.monotonic() - tick < 60


def test_a_node_started_with_another_spec_is_refused_by_spec_hash(two: list[Host], tmp_path: Path) -> None:
    spec = tmp_path / "job.yaml"
    spec.write_text(yaml.safe_dump(SPEC), encoding="utf-8")
    endpoint = f"{two[0].address}:29400"
    nodes = [
        _node(two[0], tmp_path / "home0", spec, 0, endpoint),
        _node(two[1], tmp_path / "home1", spec, 1, endpoint, "--set", "train.optimizer.lr=0.01"),
    ]
    outs = [node.communicate(timeout=300) for node in nodes]
    for node, (out, err) in zip(nodes, outs, strict=True):
        assert node.returncode == 2, out + err
        assert "run a different spec from rank 0's (spec hash" in err, err
        assert len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "home0" / "runs" / "two" / "metrics.jsonl").exists()  # not one epoch trained

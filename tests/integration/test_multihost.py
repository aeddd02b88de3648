"""Two hosts made as network namespaces (each its own address and SKYLIFT_HOME, joined by a veth
pair) train one job together with the README's 2-node command.

This machine's hostname resolves to 127.0.0.1, as on many hosts and containers: before each node
advertised its address on the route to the rendezvous, every join hung until the workers'
watchdog exited them with code 75 (the first test failed that way).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

SPEC = {
    "name": "two-hosts",
    "data": {"train": "builtin:digits28"},
    "model": {"layers": [{"dense": {"units": 32, "activation": "relu"}}, {"dense": {"units": 10}}]},
    "train": {"epochs": 2, "batch_size": 64, "register_best": False},
    "distributed": {"workers": 1, "max_restarts": 0},
}


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=30)


@pytest.fixture
def hosts() -> Iterator[tuple[str, str, str]]:
    """(namespace 0, namespace 1, subnet prefix): 10.77.N.1 and 10.77.N.2 on a veth pair."""
    tag = os.getpid() % 200 + 20
    ns = (f"skylift{tag}a", f"skylift{tag}b")
    prefix = f"10.77.{tag}"
    for name in ns:
        subprocess.run(["ip", "netns", "delete", name], capture_output=True, timeout=30)
        _ip("netns", "add", name)
    try:
        _ip("link", "add", f"sk{tag}a", "type", "veth", "peer", "name", f"sk{tag}b")
        for i, (name, end) in enumerate(zip(ns, "ab", strict=True), start=1):
            _ip("link", "set", f"sk{tag}{end}", "netns", name)
            _ip("-n", name, "addr", "add", f"{prefix}.{i}/24", "dev", f"sk{tag}{end}")
            _ip("-n", name, "link", "set", f"sk{tag}{end}", "up")
            _ip("-n", name, "link", "set", "lo", "up")
        yield ns[0], ns[1], prefix
    finally:
        for name in ns:
            subprocess.run(["ip", "netns", "delete", name], capture_output=True, timeout=30)


def _node(ns: str, home: Path, spec: Path, rank: int, endpoint: str, *extra: str) -> subprocess.Popen[str]:
    cmd = ["ip", "netns", "exec", ns, "env", f"SKYLIFT_HOME={home}", sys.executable, "-m", "skylift", "train"]
    cmd += [str(spec), "--run-id", "two", "--nnodes", "2", "--node-rank", str(rank)]
    cmd += ["--rdzv-endpoint", endpoint, *extra]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_two_hosts_train_one_job_and_say_which_address_each_advertises(
    hosts: tuple[str, str, str], tmp_path: Path
) -> None:
    ns0, ns1, prefix = hosts
    spec = tmp_path / "job.yaml"
    spec.write_text(yaml.safe_dump(SPEC), encoding="utf-8")
    endpoint = f"{prefix}.1:29400"
    nodes = [_node(ns, tmp_path / f"home{r}", spec, r, endpoint) for r, ns in enumerate((ns0, ns1))]
    outs = [node.communicate(timeout=600) for node in nodes]
    for node, (out, err) in zip(nodes, outs, strict=True):
        assert node.returncode == 0, out[-2000:] + err[-2000:]
    assert f"node 0 of 2: advertising {prefix}.1 on sk" in outs[0][0]
    assert f"node 1 of 2: advertising {prefix}.2 on sk" in outs[1][0]
    assert f"(from the route to {prefix}.1)" in outs[1][0]
    history = (tmp_path / "home0" / "runs" / "two" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in history] == [1, 2]
    assert "this node does not hold the run folder" in outs[1][0]


def test_a_node_address_that_is_not_this_machines_is_refused_in_one_line(
    hosts: tuple[str, str, str], tmp_path: Path
) -> None:
    ns0, _, prefix = hosts
    spec = tmp_path / "job.yaml"
    spec.write_text(yaml.safe_dump(SPEC), encoding="utf-8")
    for named, said in ((f"{prefix}.9", "is not an address of this machine"), ("eth9", "neither an IPv4")):
        node = _node(ns0, tmp_path / "home", spec, 0, f"{prefix}.1:29400", "--node-addr", named)
        out, err = node.communicate(timeout=300)
        assert node.returncode == 2, out + err
        assert said in err and len(err.strip().splitlines()) == 1, err
        assert not (tmp_path / "home").exists()  # refused before anything is written

"""Hosts made as Linux network namespaces for the multi-host tests (the tests run as root).

Each host is a namespace with its own address on one subnet; their `eth0` ends of veth pairs
meet on a bridge that lives in a namespace of its own, so the test's traffic never touches this
machine's interfaces or routes, and removing the namespaces removes everything.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Host:
    ns: str
    address: str

    def cmd(self, *args: str) -> list[str]:
        """`args` run inside this host."""
        return ["ip", "netns", "exec", self.ns, *args]

    def run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.cmd(*args), capture_output=True, text=True, timeout=timeout)

    def get(self, url: str, headers: Sequence[str] = (), body: bytes | None = None) -> tuple[int, str, str]:
        """(status, headers, body) of an HTTP request sent from this host with curl."""
        args = ["curl", "-sS", "-m", "20", "-D", "-", "-o", "-", *(a for h in headers for a in ("-H", h))]
        if body is not None:
            args += ["--data-binary", "@-", "-H", "Content-Type: application/json"]
        done = subprocess.run(self.cmd(*args, url), input=body, capture_output=True, timeout=30)
        head, _, rest = done.stdout.decode(errors="replace").partition("\r\n\r\n")
        status = int(head.split()[1]) if head.startswith("HTTP/") else 0
        return status, head.lower(), rest


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=30)


@contextlib.contextmanager
def hosts(n: int) -> Iterator[list[Host]]:
    """`n` hosts at 10.77.T.1 .. 10.77.T.n (T from this process id); all removed on exit."""
    tag = os.getpid() % 200 + 20
    switch = f"sk{tag}sw"
    made = [Host(f"sk{tag}h{i}", f"10.77.{tag}.{i}") for i in range(1, n + 1)]
    for ns in (switch, *(h.ns for h in made)):
        subprocess.run(["ip", "netns", "delete", ns], capture_output=True, timeout=30)
    try:
        _ip("netns", "add", switch)
        _ip("-n", switch, "link", "add", "br0", "type", "bridge")
        _ip("-n", switch, "link", "set", "br0", "up")
        for i, host in enumerate(made, start=1):
            _ip("netns", "add", host.ns)
            # Both ends are made in the switch; one moves into the host and becomes its eth0.
            _ip("-n", switch, "link", "add", f"p{i}", "type", "veth", "peer", "name", f"h{i}")
            _ip("-n", switch, "link", "set", f"h{i}", "netns", host.ns)
            _ip("-n", switch, "link", "set", f"p{i}", "master", "br0", "up")
            _ip("-n", host.ns, "link", "set", f"h{i}", "name", "eth0")
            _ip("-n", host.ns, "addr", "add", f"{host.address}/24", "dev", "eth0")
            _ip("-n", host.ns, "link", "set", "eth0", "up")
            _ip("-n", host.ns, "link", "set", "lo", "up")
        yield made
    finally:
        for ns in (*(h.ns for h in made), switch):
            subprocess.run(["ip", "netns", "delete", ns], capture_output=True, timeout=30)


def wait_http(
    host: Host,
    url: str,
    key: str | None = None,
    timeout: float = 120,
    proc: subprocess.Popen[str] | None = None,
) -> None:
    """Until `url` answers 200 from `host` (a server starting in another namespace)."""
    deadline = time.monotonic() + timeout
    headers = [f"Authorization: Bearer {key}"] if key else []
    while host.get(url, headers)[0] != 200:
        if time.monotonic() > deadline or (proc is not None and proc.poll() is not None):
            raise AssertionError(f"{url} never answered 200 from {host.ns}")
        time.sleep(0.2)

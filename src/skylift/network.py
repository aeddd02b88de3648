"""Which address a node of a multi-node job gives its peers, and a first check that it reaches them.

A node's hostname often resolves to 127.0.0.1 (/etc/hosts on many hosts and containers), and
torch's rendezvous and gloo then advertise loopback: the peers' joins hang until a watchdog ends
them. The address a node advertises is instead the one its own routing table uses to reach the
rendezvous endpoint (the source address of that route), or the address or interface the user
names with --node-addr; gloo is pointed at the interface holding it.
"""

from __future__ import annotations

import fcntl
import ipaddress
import os
import socket
import struct
import time
from dataclasses import dataclass

from skylift.errors import SpecError

_SIOCGIFADDR = 0x8915  # Linux ioctl: an interface's IPv4 address
RENDEZVOUS_WAIT_S = 300.0  # how long a node other than 0 waits for node 0's rendezvous to answer


@dataclass(frozen=True)
class NodeAddress:
    address: str
    interface: str | None
    how: str
    """Where the address came from, for the one line the node prints."""


def split_endpoint(endpoint: str) -> tuple[str, int]:
    host, sep, port = endpoint.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise SpecError(f"--rdzv-endpoint must be HOST:PORT, got {endpoint!r}")
    return host.strip("[]"), int(port)


def interface_addresses() -> dict[str, str]:
    """IPv4 address of each interface that has one (name -> address)."""
    found: dict[str, str] = {}
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for _, name in socket.if_nameindex():
            try:
                packed = fcntl.ioctl(s.fileno(), _SIOCGIFADDR, struct.pack("256s", name.encode()[:15]))
            except OSError:  # no IPv4 address on this interface
                continue
            found[name] = socket.inet_ntoa(packed[20:24])
    return found


def node_address(endpoint: str, named: str | None) -> NodeAddress:
    """The address this node advertises: `named` (an IPv4 address or an interface name), else the
    source address of the route to the rendezvous host. SpecError when `named` is on no interface."""
    addresses = interface_addresses()
    if named:
        if named in addresses:
            return NodeAddress(addresses[named], named, f"interface {named} (--node-addr)")
        try:
            ipaddress.IPv4Address(named)
        except ValueError:
            raise SpecError(
                f"--node-addr {named!r} is neither an IPv4 address nor an interface of this machine "
                f"({', '.join(sorted(addresses)) or 'none found'})"
            ) from None
        interface = next((name for name, a in addresses.items() if a == named), None)
        if interface is None:
            raise SpecError(f"--node-addr {named} is not an address of this machine ({_listed(addresses)})")
        return NodeAddress(named, interface, "--node-addr")
    host, port = split_endpoint(endpoint)
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect((host, port))  # UDP: no packet is sent, the kernel only picks the route
            address = s.getsockname()[0]
    except OSError as exc:
        raise SpecError(f"--rdzv-endpoint {endpoint}: no route to it from this machine ({exc})") from None
    interface = next((name for name, a in addresses.items() if a == address), None)
    return NodeAddress(address, interface, f"the route to {host}")


def wait_for_rendezvous(endpoint: str, timeout_s: float) -> None:
    """Until a TCP connection to the rendezvous endpoint succeeds (node 0 may start later);
    SpecError naming the endpoint once `timeout_s` has passed."""
    host, port = split_endpoint(endpoint)
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with socket.create_connection((host, port), timeout=2):
                return
        except OSError as exc:
            if time.monotonic() >= deadline:
                raise SpecError(
                    f"cannot reach the rendezvous at {endpoint} within {timeout_s:.0f} s ({exc}): is node 0 "
                    "running with the same --rdzv-endpoint, and does a firewall let this machine in?"
                ) from None
        time.sleep(0.5)


def advertise(
    nnodes: int, node_rank: int, endpoint: str, named: str | None, wait_s: float = RENDEZVOUS_WAIT_S
) -> str:
    """The address this node gives its peers, for the elastic launcher's `local_addr`: says it in
    one line, points gloo at its interface (the spawned workers inherit the variable), and, on a
    node other than 0, waits up to `wait_s` for node 0's rendezvous to answer."""
    node = node_address(endpoint, named)
    if node.interface and "GLOO_SOCKET_IFNAME" not in os.environ:
        os.environ["GLOO_SOCKET_IFNAME"] = node.interface
    via = f" on {node.interface}" if node.interface else ""
    print(
        f"node {node_rank} of {nnodes}: advertising {node.address}{via} (from {node.how}) "
        f"to the rendezvous at {endpoint}",
        flush=True,
    )
    if node_rank != 0:
        wait_for_rendezvous(endpoint, wait_s)
    return node.address


def is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 or localhost (a name counts only if every address it resolves to is
    loopback): where a server may run without API keys."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        try:
            return all(ipaddress.ip_address(a[4][0]).is_loopback for a in socket.getaddrinfo(host, None))
        except OSError:
            return False


def _listed(addresses: dict[str, str]) -> str:
    return ", ".join(f"{name} {a}" for name, a in sorted(addresses.items())) or "none found"

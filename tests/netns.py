"""Network namespaces for the scaling test: hosts that only see each other.

One hub namespace holds a bridge; every host namespace gets a veth pair whose other end is on
that bridge, and a private address on its own end. The machine's own namespace gets no address
and no route: nothing a host sends can leave the namespaces, and the test reaches them through
unix sockets (PostgreSQL, Postfix's queue tools) or by creating a socket inside a namespace
(`inside`). Everything is removed by `Network.remove` (deleting a namespace deletes its links).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import subprocess
from collections.abc import Iterator

CLONE_NEWNET = 0x40000000


def available() -> str | None:
    """Why namespaces cannot be made here, or None."""
    if os.geteuid() != 0:
        return "needs root (ip netns, veth pairs)"
    if not shutil.which("ip"):
        return "iproute2 is not installed (as root, `make deps` installs it)"
    probe = f"bbprobe{os.getpid()}"
    r = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if r.returncode:
        return f"ip netns add failed: {r.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], check=True)
    return None


def ip(*args: str) -> None:
    r = subprocess.run(["ip", *args], capture_output=True, text=True)
    if r.returncode:
        raise RuntimeError(f"ip {' '.join(args)}: {r.stderr.strip()}")


@contextlib.contextmanager
def inside(ns: str) -> Iterator[None]:
    """This thread in namespace `ns` (sockets made meanwhile stay there), then back."""
    libc = ctypes.CDLL(None, use_errno=True)
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    target = os.open(f"/run/netns/{ns}", os.O_RDONLY)
    try:
        if libc.setns(target, CLONE_NEWNET):
            raise OSError(ctypes.get_errno(), f"setns {ns}")
        yield
    finally:
        libc.setns(own, CLONE_NEWNET)
        os.close(own)
        os.close(target)


class Network:
    """Namespaces `<prefix>-<name>` on one bridge, each host with its addresses on `e0`."""

    def __init__(self, prefix: str, subnet: str = "10.21.0") -> None:
        self.prefix, self.subnet = prefix, subnet
        self.hub = f"{prefix}-hub"
        self.hosts: list[str] = []

    def ns(self, name: str) -> str:
        return f"{self.prefix}-{name}"

    def exec(self, name: str, argv: list[str]) -> list[str]:
        """`argv` run inside host `name`'s namespace."""
        return ["ip", "netns", "exec", self.ns(name), *argv]

    def create(self) -> None:
        ip("netns", "add", self.hub)
        ip("-n", self.hub, "link", "add", "br0", "type", "bridge")
        ip("-n", self.hub, "link", "set", "br0", "up")

    def host(self, name: str, *last_octets: int) -> None:
        ns = self.ns(name)
        ip("netns", "add", ns)
        self.hosts.append(name)
        ip("-n", ns, "link", "set", "lo", "up")
        ip("-n", ns, "link", "add", "e0", "type", "veth", "peer", "name", name, "netns",
           self.hub)
        for octet in last_octets:
            ip("-n", ns, "addr", "add", f"{self.subnet}.{octet}/24", "dev", "e0")
        ip("-n", ns, "link", "set", "e0", "up")
        ip("-n", self.hub, "link", "set", name, "master", "br0", "up")

    def pids(self, name: str) -> list[int]:
        out = subprocess.run(["ip", "netns", "pids", self.ns(name)], capture_output=True,
                             text=True).stdout
        return [int(p) for p in out.split()]

    def kill_all(self, name: str) -> int:
        """SIGKILL every process in host `name` (all started by this test); how many."""
        pids = [p for p in self.pids(name) if p != os.getpid()]
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        return len(pids)

    def remove(self) -> None:
        for name in self.hosts:
            self.kill_all(name)
            subprocess.run(["ip", "netns", "del", self.ns(name)], capture_output=True)
        subprocess.run(["ip", "netns", "del", self.hub], capture_output=True)

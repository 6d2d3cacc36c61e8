"""Network namespaces for tests: hosts on a private bridged LAN, created and
removed by the tests themselves. Nothing leaves these namespaces."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).parent


def can_netns() -> str | None:
    """None if netns tests can run, else the reason."""
    if os.geteuid() != 0:
        return "needs root for network namespaces"
    if subprocess.run(["ip", "netns", "list"], capture_output=True).returncode != 0:
        return "iproute2 'ip netns' not available"
    if not os.path.exists("/dev/net/tun"):
        return "/dev/net/tun missing"
    return None


needs_netns = pytest.mark.skipif(can_netns() is not None, reason=can_netns() or "")


def sh(*cmd: str, check: bool = True, timeout: float = 20) -> subprocess.CompletedProcess[str]:
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: {r.stderr.strip()}")
    return r


class Host:
    def __init__(self, name: str, index: int) -> None:
        self.name, self.index = name, index
        self.ip4 = f"10.77.0.{index}"
        self.ip6 = f"fd77::{index}"
        self.procs: list[subprocess.Popen[Any]] = []

    def run(self, *cmd: str, check: bool = True, timeout: float = 20) -> subprocess.CompletedProcess[str]:
        return sh("ip", "netns", "exec", self.name, *cmd, check=check, timeout=timeout)

    def popen(self, *cmd: str, **kw: Any) -> subprocess.Popen[Any]:
        kw.setdefault("stdin", subprocess.DEVNULL)
        kw.setdefault("stderr", subprocess.PIPE)
        p = subprocess.Popen(["ip", "netns", "exec", self.name, *cmd], **kw)
        self.procs.append(p)
        return p

    def ping(self, ip: str, count: int = 3, wait: float = 1) -> bool:
        r = self.run("ping", "-c", str(count), "-i", "0.2", "-W", str(wait), ip, check=False, timeout=30)
        return r.returncode == 0

    def wait_link(self, ifname: str, timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.run("ip", "link", "show", ifname, check=False).returncode == 0:
                return
            for p in self.procs:
                if p.poll() is not None:
                    err = p.stderr.read() if p.stderr else ""
                    raise RuntimeError(f"process exited {p.returncode}: {err}")
            time.sleep(0.05)
        raise TimeoutError(f"{ifname} did not appear in {self.name}")

    def mac(self, ifname: str) -> bytes:
        out = self.run("cat", f"/sys/class/net/{ifname}/address").stdout.strip()
        return bytes.fromhex(out.replace(":", ""))

    def addr(self, ifname: str, cidr: str) -> None:
        self.run("ip", "addr", "add", cidr, "dev", ifname)
        self.run("ip", "link", "set", ifname, "up")

    def agent(self) -> Agent:
        return Agent(self)

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
        for p in self.procs:
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()


class Lan:
    """N hosts, each with eth0 on one bridge (in its own namespace). Without
    ``multicast`` there is no multicast route anywhere and the bridge floods
    no multicast, as in a cloud."""

    def __init__(self, n: int, tag: str, multicast: bool = True) -> None:
        self.multicast = multicast
        pid = os.getpid() % 100000
        self.prefix = f"vdp{pid}{tag}"
        self.bridge = f"{self.prefix}br"
        self.hosts = [Host(f"{self.prefix}h{i}", i) for i in range(1, n + 1)]
        try:
            self._build()
        except Exception:
            self.destroy()
            raise

    def _build(self) -> None:
        sh("ip", "netns", "add", self.bridge)
        b = Host(self.bridge, 0)
        b.run("ip", "link", "add", "br0", "type", "bridge", "mcast_snooping", "0")
        b.run("ip", "link", "set", "br0", "up")
        for h in self.hosts:
            sh("ip", "netns", "add", h.name)
            h.run("sysctl", "-qw", "net.ipv6.conf.all.accept_dad=0")
            h.run("sysctl", "-qw", "net.ipv6.conf.default.accept_dad=0")
            h.run("ip", "link", "set", "lo", "up")
            sh("ip", "link", "add", "eth0", "netns", h.name, "type", "veth", "peer", f"p{h.index}", "netns", self.bridge)
            b.run("ip", "link", "set", f"p{h.index}", "master", "br0")
            b.run("ip", "link", "set", f"p{h.index}", "up")
            if not self.multicast:
                b.run("bridge", "link", "set", "dev", f"p{h.index}", "mcast_flood", "off")
            h.run("ip", "addr", "add", f"{h.ip4}/24", "dev", "eth0")
            h.run("ip", "-6", "addr", "add", f"{h.ip6}/64", "dev", "eth0", "nodad")
            h.run("ip", "link", "set", "eth0", "up")
            if self.multicast:
                h.run("ip", "route", "add", "224.0.0.0/4", "dev", "eth0")

    def destroy(self) -> None:
        for h in self.hosts:
            h.stop()
        for name in [h.name for h in self.hosts] + [self.bridge]:
            pids = sh("ip", "netns", "pids", name, check=False).stdout.split()
            for pid in pids:
                try:
                    os.kill(int(pid), 9)
                except (ProcessLookupError, ValueError):
                    pass
            sh("ip", "netns", "del", name, check=False)


class Agent:
    """A Python process inside a namespace driving vdeplug connections over
    JSON lines (tests/netns_agent.py)."""

    def __init__(self, host: Host) -> None:
        self.p = host.popen(sys.executable, str(HERE / "netns_agent.py"), stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def call(self, **req: Any) -> Any:
        assert self.p.stdin and self.p.stdout
        self.p.stdin.write(json.dumps(req) + "\n")
        self.p.stdin.flush()
        line = self.p.stdout.readline()
        if not line:
            err = self.p.stderr.read() if self.p.stderr else ""
            raise RuntimeError(f"agent died: {err}")
        resp = json.loads(line)
        if "error" in resp:
            raise RuntimeError(resp["error"])
        return resp["result"]

    def open(self, url: str) -> int:
        return int(self.call(op="open", url=url))

    def send(self, cid: int, frame: bytes) -> int:
        return int(self.call(op="send", id=cid, frame=frame.hex()))

    def recv(self, cid: int, timeout: float = 2.0) -> bytes | None:
        r = self.call(op="recv", id=cid, timeout=timeout)
        return None if r is None else bytes.fromhex(r)

    def stats(self, cid: int) -> dict[str, int]:
        return dict(self.call(op="stats", id=cid))

    def close(self, cid: int) -> None:
        self.call(op="close", id=cid)


@pytest.fixture
def lan_factory():
    lans: list[Lan] = []

    def make(n: int, multicast: bool = True) -> Lan:
        lan = Lan(n, chr(ord("a") + len(lans)), multicast)
        lans.append(lan)
        return lan

    yield make
    for lan in lans:
        lan.destroy()

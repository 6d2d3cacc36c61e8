"""vxlan:// peers from DNS (issue 26, item 1): a peer name stands for all
its addresses, looked up again every refresh= seconds. A real DNS server
(dnsmasq) runs in one namespace of a lab; the others resolve through it
(``ip netns exec`` bind-mounts /etc/netns/NS/resolv.conf), and the records
change under the endpoints (an --addn-hosts file, reloaded by SIGHUP)."""

from __future__ import annotations

import os
import shutil
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import frame
from netns import Agent, needs_netns
from vdeplug.lab import Host

pytestmark = [
    needs_netns,
    pytest.mark.skipif(shutil.which("dnsmasq") is None, reason="dnsmasq not installed (apt-get install dnsmasq-base)"),
    pytest.mark.skipif(os.geteuid() != 0, reason="resolv.conf per namespace needs ip netns exec (root)"),
]

BCAST = b"\xff" * 6
NAME = "pods.vdeplug.test"


class Dns:
    """dnsmasq in ``server``, answering ``NAME`` from a hosts file, and the
    resolv.conf of each client namespace pointing at it."""

    def __init__(self, server: Host, clients: list[Host], tmp: Path) -> None:
        self.server, self.hosts = server, tmp / "hosts"
        self.ip = server.ip4
        self.dirs = [Path("/etc/netns") / h.netns for h in clients]
        for d in self.dirs:
            d.mkdir(parents=True, exist_ok=True)
            (d / "resolv.conf").write_text(f"nameserver {self.ip}\noptions timeout:1 attempts:1\n")
        self.set([])
        # --user=root: the hosts file sits in a private temporary directory.
        cmd = ["dnsmasq", "--keep-in-foreground", "--no-resolv", "--no-hosts", "--user=root", f"--addn-hosts={self.hosts}"]
        self.proc = server.popen(*cmd, f"--listen-address={self.ip}", "--bind-interfaces", f"--pid-file={tmp / 'pid'}")
        deadline = time.monotonic() + 10
        while clients[0].run("getent", "ahostsv4", "ready." + NAME, check=False).returncode != 0:
            assert self.proc.poll() is None and time.monotonic() < deadline, "dnsmasq did not start"
            time.sleep(0.1)

    def set(self, members: list[Host]) -> None:
        """``NAME`` now answers the members' addresses (and ready.NAME the server's)."""
        lines = [f"{h.ip4} {NAME}" for h in members] + [f"{self.ip} ready.{NAME}"]
        self.hosts.write_text("\n".join(lines) + "\n")
        if getattr(self, "proc", None):
            self.proc.send_signal(signal.SIGHUP)

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.stop()
        for d in self.dirs:
            shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def dns_lab(lan_factory, tmp_path: Path) -> Iterator[tuple[list[Host], Dns]]:
    *hosts, server = lan_factory(5).hosts
    dns = Dns(server, hosts, tmp_path)
    try:
        yield hosts, dns
    finally:
        dns.close()


def wait_stat(agent: Agent, cid: int, key: str, want, timeout: float = 5.0) -> float:
    """Seconds until ``stats[key]`` satisfies ``want`` (a waiting recv lets
    the endpoint tick and take the resolver's answers)."""
    start = time.monotonic()
    while not want(agent.stats(cid)[key]):
        assert time.monotonic() - start < timeout, f"{key} = {agent.stats(cid)[key]}"
        agent.recv(cid, timeout=0.2)
    return time.monotonic() - start


def reached(agents: list[Agent], ids: list[int], f: bytes) -> list[bool]:
    """Which of the endpoints got ``f`` (within a second)."""
    return [any(a.recv(i, timeout=1.0 if k == 0 else 0.3) == f for k in range(3)) for a, i in zip(agents, ids)]


@pytest.mark.parametrize("scheme", ["vxlan", "vxvde"])
def test_members_from_dns_join_and_leave(dns_lab, scheme: str) -> None:
    (a, b, c, d), dns = dns_lab
    dns.set([a, b, c])
    agents = [Agent(h) for h in (a, b, c, d)]
    ids = [ag.open(f"{scheme}://{NAME}/refresh=1/vni=26") for ag in agents]
    xa = agents[0]
    assert xa.stats(ids[0])["dns_peers"] == 2, "every address but ours"
    f1 = frame(100, src=1, dst=BCAST)
    xa.send(ids[0], f1)
    assert reached(agents[1:], ids[1:], f1) == [True, True, False], "d is not in DNS yet"
    # d joins DNS: a floods to it within a couple of refreshes.
    dns.set([a, b, c, d])
    took = wait_stat(xa, ids[0], "dns_peers", lambda n: n == 3)
    assert took < 3.5, f"d joined after {took:.1f} s"
    f2 = frame(101, src=1, dst=BCAST)
    xa.send(ids[0], f2)
    assert reached(agents[1:], ids[1:], f2) == [True, True, True]
    # b leaves DNS: it is flooded to no more, and a forgets the MAC it learned there.
    b_mac = frame(60, src=0x0B, dst=BCAST)
    agents[1].send(ids[1], b_mac)
    assert xa.recv(ids[0]) == b_mac
    dns.set([a, c, d])
    wait_stat(xa, ids[0], "dns_removed", lambda n: n == 1)
    f3 = frame(102, src=1, dst=BCAST)
    xa.send(ids[0], f3)
    assert reached(agents[1:], ids[1:], f3) == [False, True, True]
    to_b = frame(103, src=1, dst=b_mac[6:12])
    xa.send(ids[0], to_b)  # b's MAC is forgotten: flooded to the members left
    assert reached(agents[1:], ids[1:], to_b) == [False, True, True]
    st = xa.stats(ids[0])
    assert (st["dns_peers"], st["dns_added"], st["dns_failures"]) == (2, 1, 0)


def test_a_failing_dns_keeps_the_last_list(dns_lab) -> None:
    (a, b, c, _), dns = dns_lab
    dns.set([a, b, c])
    agents = [Agent(h) for h in (a, b, c)]
    ids = [ag.open(f"vxlan://{NAME}/refresh=1/vni=27") for ag in agents]
    dns.stop()
    wait_stat(agents[0], ids[0], "dns_failures", lambda n: n >= 2)
    f = frame(100, src=1, dst=BCAST)
    agents[0].send(ids[0], f)
    assert reached(agents[1:], ids[1:], f) == [True, True], "the last good list is kept"
    assert agents[0].stats(ids[0])["dns_peers"] == 2
    agents[0].close(ids[0])
    agents[0].p.stdin.close()  # type: ignore[union-attr]
    agents[0].p.wait(timeout=5)
    err = agents[0].p.stderr.read()  # type: ignore[union-attr]
    assert err.count(f"vxlan: cannot resolve {NAME}") == 1, err

"""A 64-host lab (issue 26, item 2): ``Lab.lan(64, overlay=...)`` puts 64
namespaces on one bridge, each with a tap plugged by our vde_plug into
``vxvde://`` (a multicast group on the bridge) or ``vxlan://NAME`` (NAME:
every host's address, from a dnsmasq on the bridge). Every host pings one
other (a rotation: each host is a source once and a destination once), and
one host's broadcasts reach every other host exactly once. The same at 256
hosts: benches/lab_scale.py. Budget: the whole file well under a minute."""

from __future__ import annotations

import os
import random
import shutil
import sys
import time
from collections.abc import Iterator

import pytest
from netns import needs_netns
from vdeplug.lab import Host, Lab

pytestmark = [needs_netns, pytest.mark.skipif(os.geteuid() != 0, reason="a resolv.conf per namespace (dns=) and 64 ip netns: root")]

N = 64
NAME = "all.lab"
OVERLAYS = {
    "vxvde": {"overlay": "vxvde://239.77.26.2/vni=262"},
    "vxlan+dns": {"dns": NAME, "overlay": f"vxlan://{NAME}/vni=263"},
}
K = 5  # broadcast frames sent
ETHERTYPE = 0x88B5  # no protocol takes it: the kernel counts each copy a tap gets in rx_dropped
SEND = f"""
import socket, sys, time
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind(("ov0", 0))
for i in range({K}):
    s.send(b"\\xff" * 6 + bytes.fromhex("02002626" + sys.argv[1]) + ({ETHERTYPE}).to_bytes(2, "big") + i.to_bytes(2, "big") + bytes(44))
    time.sleep(0.01)
"""


def rx_dropped(lab: Lab, hosts: list[Host]) -> list[int]:
    """Each host's count of frames its ov0 took that no protocol wanted
    (and of any it dropped: none here, the overlay carries ARP and IPv4)."""
    rs = lab.each(hosts, ["cat", "/sys/class/net/ov0/statistics/rx_dropped"])
    return [int(r.stdout) if r.returncode == 0 else -1 for r in rs]


def flood_copies(lab: Lab, hosts: list[Host], sender: Host) -> list[int]:
    """Copies of ``sender``'s K broadcasts each host took (the last ones to
    come: half a second of quiet after every other host has K)."""
    before = rx_dropped(lab, hosts)
    sender.run(sys.executable, "-c", SEND, f"{hosts.index(sender):04x}")
    others = [i for i, h in enumerate(hosts) if h is not sender]
    deadline = time.monotonic() + 5
    while True:
        got = [a - b for a, b in zip(rx_dropped(lab, hosts), before)]
        if all(got[i] >= K for i in others) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    time.sleep(0.5)  # a second copy would be right behind the first
    return [a - b for a, b in zip(rx_dropped(lab, hosts), before)]


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


@pytest.fixture
def lab() -> Iterator[Lab]:
    with Lab() as lab:
        yield lab


@pytest.mark.parametrize("kind", list(OVERLAYS))
def test_64_hosts_reach_each_other_once(lab: Lab, kind: str) -> None:
    if "dns" in OVERLAYS[kind] and shutil.which("dnsmasq") is None:
        pytest.skip("dnsmasq not installed (apt-get install dnsmasq-base)")
    start = time.monotonic()
    hosts = lab.lan(N, **OVERLAYS[kind])
    setup = time.monotonic() - start
    assert all(h.plugs["ov0"].poll() is None for h in hosts)
    # Reachability: a rotation by a random shift, so every host pings and is pinged.
    shift = random.randrange(1, N)
    peer = {h.name: hosts[(i + shift) % N].overlays["ov0"].split("/")[0] for i, h in enumerate(hosts)}
    start = time.monotonic()
    pings = lab.each(hosts, lambda h: ["ping", "-c1", "-i0.2", "-w20", peer[h.name]], timeout=30)
    converge = time.monotonic() - start
    missed = [f"{h.name}->{peer[h.name]}" for h, r in zip(hosts, pings) if r.returncode]
    assert not missed, f"shift {shift}: no answer for {missed}"
    assert converge < 20, f"converged after {converge:.1f} s"
    # Ten more rotations: each host then holds about 20 overlay neighbours,
    # 1300 in all, past the kernel's default table (1024, one for every
    # namespace), which lan() makes room beyond.
    for d in random.sample([d for d in range(1, N) if d != shift], 10):
        rs = lab.each(hosts, lambda h, d=d: ["ping", "-c1", "-i0.2", "-w10", hosts[(hosts.index(h) + d) % N].overlays["ov0"].split("/")[0]], timeout=20)
        missed = [h.name for h, r in zip(hosts, rs) if r.returncode]
        assert not missed, f"shift {d}: no answer from {len(missed)} hosts ({missed[:5]} …)"
    # Broadcast: every other host takes each frame once; the sender none back.
    sender = random.choice(hosts)
    copies = flood_copies(lab, hosts, sender)
    want = [0 if h is sender else K for h in hosts]
    assert copies == want, f"copies of {K} broadcasts from {sender.name}: {dict((h.name, c) for h, c, w in zip(hosts, copies, want) if c != w)}"
    rss = sorted(rss_kib(h.plugs["ov0"].pid) for h in hosts)
    assert rss[-1] < 80 * 1024, f"largest vde_plug: {rss[-1]} KiB"
    print(f"\n{kind}: {N} hosts up in {setup:.2f} s, converged in {converge:.2f} s, vde_plug RSS {rss[0]}..{rss[-1]} KiB")

"""tap://, vxlan:// and vxvde:// proven in network namespaces against the
Linux kernel's vxlan and the C vde_plug (root; namespaces made and removed
here)."""

from __future__ import annotations

import re
import shutil
import subprocess
import time

import pytest
from conftest import C_VDE_PLUG, VDE_PLUG, frame, mac, needs_c
from netns import Agent, needs_netns

pytestmark = needs_netns

BCAST = b"\xff" * 6


def plug(host, *urls: str, exe: str = VDE_PLUG):
    return host.popen(exe, *urls)


def test_vxlan_interop_with_kernel_and_wrong_vni(lan_factory):
    h1, h2, h3 = lan_factory(3).hosts
    # h1: the kernel's own VXLAN device, VNI 42.
    h1.run("ip", "link", "add", "vx0", "type", "vxlan", "id", "42", "group", "239.1.1.1", "dstport", "4789", "dev", "eth0")
    h1.addr("vx0", "192.168.77.1/24")
    # h2: ours, same VNI, bridged to a tap.
    plug(h2, "vxlan://239.1.1.1/vni=42", "tap://t0")
    h2.wait_link("t0")
    h2.addr("t0", "192.168.77.2/24")
    # h3: ours, wrong VNI.
    plug(h3, "vxlan://239.1.1.1/vni=43", "tap://t0")
    h3.wait_link("t0")
    h3.addr("t0", "192.168.77.3/24")
    assert h2.ping("192.168.77.1"), "ours -> kernel vxlan"
    assert h1.ping("192.168.77.2"), "kernel vxlan -> ours (unicast reply path)"
    assert not h1.ping("192.168.77.3", count=2), "wrong VNI must not get through"
    assert not h3.ping("192.168.77.1", count=2)


def test_vxlan_ipv6_group_with_kernel(lan_factory):
    h1, h2 = lan_factory(2).hosts
    h1.run("ip", "link", "add", "vx0", "type", "vxlan", "id", "7", "group", "ff05::4:7", "dstport", "4789", "dev", "eth0")
    h1.addr("vx0", "192.168.76.1/24")
    plug(h2, "vxlan://ff05::4:7/vni=7/if=eth0", "tap://t0")
    h2.wait_link("t0")
    h2.addr("t0", "192.168.76.2/24")
    assert h2.ping("192.168.76.1")
    assert h1.ping("192.168.76.2")


def count_udp(lines: list[str], dst: str, length: int) -> int:
    """Captured UDP datagrams to ``dst`` of ``length`` bytes of payload."""
    return sum(1 for ln in lines if re.search(rf"> {re.escape(dst)}\.\d+: UDP, length {length}$", ln))


@needs_c
@pytest.mark.skipif(shutil.which("tcpdump") is None, reason="tcpdump not installed (apt-get install tcpdump)")
def test_vxvde_c_and_ours_ping_all_ways_then_unicast(lan_factory):
    a, b, c = lan_factory(3).hosts
    plug(a, "vxvde://239.2.2.2", "tap://tA", exe=C_VDE_PLUG)
    plug(b, "vxvde://239.2.2.2", "tap://tB")
    plug(c, "vxvde://239.2.2.2", "tap://tC")
    for k, (h, t) in enumerate(((a, "tA"), (b, "tB"), (c, "tC")), 1):
        h.wait_link(t)
        h.addr(t, f"192.168.78.{k}/24")
    ips = {h.name: f"192.168.78.{k}" for k, h in enumerate((a, b, c), 1)}
    for src in (a, b, c):
        for dst in (a, b, c):
            if src is not dst:
                assert src.ping(ips[dst.name]), f"{src.name} -> {dst.name}"
    # MACs are learned now: a ping b <-> a must be unicast UDP between them.
    cap = b.popen("tcpdump", "-i", "eth0", "-nn", "-l", "udp", stdout=subprocess.PIPE, text=True)
    time.sleep(1.0)
    assert b.ping(ips[a.name], count=5)
    time.sleep(0.3)
    cap.terminate()
    lines = cap.communicate(timeout=5)[0].splitlines()
    # ICMP echo of 84 bytes in a 98-byte frame + 8 bytes of VXLAN header.
    echo = 106
    to_a, to_b, to_group = (count_udp(lines, ip, echo) for ip in (a.ip4, b.ip4, "239.2.2.2"))
    assert to_a >= 5 and to_b >= 5, lines
    assert to_group == 0, f"expected unicast after learning, saw {to_group} multicast: {lines}"


@pytest.mark.parametrize("v6", [False, True], ids=["ipv4", "ipv6"])
def test_vxvde_many_endpoints_per_host_no_echo_learning_leave(lan_factory, v6):
    h1, h2 = lan_factory(2).hosts
    url = "vxvde://ff05::56/if=eth0" if v6 else "vxvde://239.5.5.5"
    x, y = Agent(h1), Agent(h2)
    e1, e2 = x.open(url), x.open(url)  # two endpoints on the same host
    e3 = y.open(url)
    time.sleep(0.3)
    # Broadcast from e1 reaches e2 (same host) and e3 (other host), not e1.
    f1 = frame(100, src=1, dst=BCAST)
    x.send(e1, f1)
    assert x.recv(e2) == f1
    assert y.recv(e3) == f1
    assert x.recv(e1, timeout=0.5) is None, "a frame came back to its sender"
    # e3 now knows mac(1) is at e1: its reply is unicast and reaches only e1.
    f3 = frame(200, src=3, dst=mac(1))
    y.send(e3, f3)
    assert x.recv(e1) == f3
    assert x.recv(e2, timeout=0.5) is None, "known unicast must not be flooded"
    st = y.stats(e3)
    assert st["unicast_out"] == 1 and st["multicast_out"] == 0
    # e1 leaves: e3 forgets mac(1) and floods again.
    x.close(e1)
    assert y.recv(e3, timeout=0.5) is None  # consumes the leave datagram
    assert y.stats(e3)["leaves"] == 1
    y.send(e3, f3)
    assert x.recv(e2) == f3
    assert y.stats(e3)["multicast_out"] == 1


def test_tap_delivers_kernel_arp_byte_identical(lan_factory, tmp_path):
    import vdeplug

    (h,) = lan_factory(1).hosts
    link = str(tmp_path / "link")
    plug(h, "tap://t0", f"ptp://{link}")
    h.wait_link("t0")
    with vdeplug.open(f"ptp://{link}") as c:
        h.addr("t0", "192.168.79.1/24")
        tmac = h.mac("t0")
        h.popen("ping", "-c", "3", "-W", "1", "192.168.79.2")
        arp = bytes([0, 1, 8, 0, 6, 4, 0, 1]) + tmac + bytes([192, 168, 79, 1]) + bytes(6) + bytes([192, 168, 79, 2])
        expect = BCAST + tmac + b"\x08\x06" + arp
        deadline = time.monotonic() + 10
        while True:  # skip IPv6 router solicitations etc.
            got = c.recv(timeout=max(0.1, deadline - time.monotonic()))
            if got[12:14] == b"\x08\x06":
                break
        assert got == expect
        # Answer it: the kernel must accept our frame and learn the neighbour.
        ours = mac(0x55)
        reply = tmac + ours + b"\x08\x06" + bytes([0, 1, 8, 0, 6, 4, 0, 2]) + ours + bytes([192, 168, 79, 2]) + tmac + bytes([192, 168, 79, 1])
        c.send(reply)
        deadline = time.monotonic() + 5
        while "02:00:00:00:00:55" not in h.run("ip", "neigh", "show", "dev", "t0").stdout:
            assert time.monotonic() < deadline, "kernel did not learn our ARP reply"
            time.sleep(0.05)


@needs_c
def test_vxvde_c_and_ours_share_a_host(lan_factory):
    """Like several C endpoints, ours coexist with a C endpoint on one host."""
    from conftest import StreamPeer

    h1, h2 = lan_factory(2).hosts
    c_peer = StreamPeer(h1.command(C_VDE_PLUG, "vxvde://239.6.6.6"))
    try:
        x, y = Agent(h1), Agent(h2)
        ours1, ours2 = x.open("vxvde://239.6.6.6"), y.open("vxvde://239.6.6.6")
        time.sleep(0.5)
        f = frame(300, src=0x11, dst=BCAST)
        c_peer.send(f)
        assert x.recv(ours1) == f, "C -> ours, same host"
        assert y.recv(ours2) == f, "C -> ours, other host"
        g = frame(1514, src=0x12, dst=mac(0x11))
        x.send(ours1, g)  # unicast to the C endpoint's MAC, learned above
        assert c_peer.recv() == g
        assert x.stats(ours1)["unicast_out"] == 1
        h = frame(60, src=0x13, dst=BCAST)
        y.send(ours2, h)
        assert c_peer.recv() == h
        assert x.recv(ours1) == h
    finally:
        c_peer.close()


def _burst() -> list[bytes]:
    from test_interop_c import burst_frames

    return burst_frames()


@needs_c
def test_vxvde_bursts_from_ours_reach_c_intact(lan_factory, tmp_path):
    """Known-unicast bursts leave our relay as UDP GSO trains; the C endpoint
    in another namespace must get every frame, in order."""
    import os

    import vdeplug
    from conftest import StreamPeer, wait_for

    h1, h2 = lan_factory(2).hosts
    link = str(tmp_path / "l")
    plug(h1, f"ptp://{link}", "vxvde://239.7.7.7")
    wait_for(lambda: os.path.exists(link), what="relay")
    c_peer = StreamPeer(h2.command(C_VDE_PLUG, "vxvde://239.7.7.7"))
    try:
        with vdeplug.open(f"ptp://{link}") as src:
            time.sleep(0.5)
            hello = frame(60, src=0x41, dst=BCAST)
            c_peer.send(hello)  # our relay learns mac(0x41) -> the C endpoint
            assert src.recv(timeout=5) == hello
            frames = [f[:0] + mac(0x41) + f[6:] for f in _burst()]
            for f in frames:
                src.send(f)
            got = [c_peer.recv() for _ in frames]
            assert got == frames
    finally:
        c_peer.close()


def test_vxlan_bursts_from_ours_reach_kernel(lan_factory, tmp_path):
    """A burst of known-unicast frames (GSO trains) into a kernel vxlan device."""
    import os

    import vdeplug
    from conftest import wait_for

    h1, h2 = lan_factory(2).hosts
    h1.run("ip", "link", "add", "vx0", "type", "vxlan", "id", "9", "group", "239.1.1.9", "dstport", "4789", "dev", "eth0")
    h1.addr("vx0", "192.168.75.1/24")
    link = str(tmp_path / "l")
    plug(h2, f"ptp://{link}", "vxlan://239.1.1.9/vni=9")
    wait_for(lambda: os.path.exists(link), what="relay")
    vxmac = h1.mac("vx0")
    with vdeplug.open(f"ptp://{link}") as src:
        time.sleep(0.3)
        h1.run("ping", "-c", "1", "-W", "1", "192.168.75.2", check=False)  # vx0 ARPs: we learn its MAC
        deadline = time.monotonic() + 5
        while True:
            f = src.recv(timeout=max(0.1, deadline - time.monotonic()))
            if f[6:12] == vxmac:
                break
        rx0 = int(h1.run("cat", "/sys/class/net/vx0/statistics/rx_packets").stdout)
        frames = [vxmac + f[6:] for f in _burst()]
        for f in frames:
            src.send(f)
        deadline = time.monotonic() + 5
        while int(h1.run("cat", "/sys/class/net/vx0/statistics/rx_packets").stdout) - rx0 < len(frames):
            got = int(h1.run("cat", "/sys/class/net/vx0/statistics/rx_packets").stdout) - rx0
            assert time.monotonic() < deadline, f"kernel vxlan got {got} of {len(frames)} frames"
            time.sleep(0.05)


# ---------------------------------------------------------------- without multicast
# Three hosts on a bridge that floods no multicast, and no multicast route.

OVERLAY_IPS = ["192.168.78.1", "192.168.78.2", "192.168.78.3"]


def ping_all_pairs(hosts, order=None) -> None:
    """Every host pings every other's overlay address (``OVERLAY_IPS[k]`` is
    ``hosts[k]``'s), hosts in ``order`` (indices)."""
    for i in order or range(len(hosts)):
        for j, ip in enumerate(OVERLAY_IPS[: len(hosts)]):
            if i != j:
                assert hosts[i].ping(ip, count=5), f"{hosts[i].name} -> {ip}"


def overlay_host(h, vnl: str, k: int) -> None:
    plug(h, vnl, "tap://t0")
    h.wait_link("t0")
    h.addr("t0", f"{OVERLAY_IPS[k]}/24")


def test_vxlan_unicast_flood_list_with_kernel(lan_factory):
    h1, h2, h3 = lan_factory(3, multicast=False).hosts
    # h1: the kernel's vxlan with a unicast flood list (head-end replication).
    h1.run("ip", "link", "add", "vx0", "type", "vxlan", "id", "42", "dstport", "4789", "local", h1.ip4, "dev", "eth0")
    for peer in (h2, h3):
        h1.run("bridge", "fdb", "append", "00:00:00:00:00:00", "dev", "vx0", "dst", peer.ip4)
    h1.addr("vx0", f"{OVERLAY_IPS[0]}/24")
    # Ours: h2 is given the whole list (it leaves itself out), h3 the others.
    overlay_host(h2, f"vxlan://{h1.ip4},{h2.ip4},{h3.ip4}/vni=42", 1)
    overlay_host(h3, f"vxlan://{h1.ip4},{h2.ip4}/vni=42", 2)
    ping_all_pairs([h1, h2, h3])


@pytest.mark.parametrize("scheme", ["vxlan", "vxvde"])
def test_unicast_overlay_a_host_joins_by_naming_one_member(lan_factory, scheme):
    h1, h2, h3 = lan_factory(3, multicast=False).hosts
    allow = "allow='10.77.0.0/24'"
    overlay_host(h1, f"{scheme}://{h2.ip4}/{allow}", 0)
    overlay_host(h2, f"{scheme}://{h1.ip4}/{allow}", 1)
    # h3 names h1 only: h1 adds it and sends it a peer list with h2.
    overlay_host(h3, f"{scheme}://{h1.ip4}/{allow}", 2)
    ping_all_pairs([h1, h2, h3], order=[2, 0, 1])


def test_vxvde_unicast_ipv6_peers(lan_factory):
    h1, h2 = lan_factory(2).hosts  # IPv6 neighbour discovery needs multicast on the underlay
    overlay_host(h1, f"vxvde://{h2.ip6}/port=14790", 0)
    overlay_host(h2, f"vxvde://[{h1.ip6}]:14790/port=14790", 1)
    ping_all_pairs([h1, h2])

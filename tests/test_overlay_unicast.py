"""vxlan:// and vxvde:// without multicast: unicast peers, head-end
replication, joining members and peer lists. On loopback (endpoints told
apart by port); the netns tests against the kernel's vxlan are in
test_overlay_netns.py."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import ExitStack

import pytest
import vdeplug
from conftest import frame, free_udp_port, mac


def drain(c: vdeplug.Connection, wait: float = 0.3) -> list[bytes]:
    """Every frame that arrives within ``wait`` s."""
    got = []
    while True:
        try:
            got.append(c.recv(timeout=wait))
        except TimeoutError:
            return got


@pytest.fixture
def ends() -> Iterator[ExitStack]:
    with ExitStack() as stack:
        yield stack


@pytest.mark.parametrize("scheme", ["vxlan", "vxvde"])
def test_static_peers_flood_to_each_and_unicast_to_one(ends: ExitStack, scheme: str) -> None:
    ports = [free_udp_port() for _ in range(3)]
    # The same list everywhere: each endpoint leaves itself out.
    everyone = ",".join(f"127.0.0.1:{p}" for p in ports)
    a, b, c = (ends.enter_context(vdeplug.open(f"{scheme}://{everyone}/port={p}/vni=77")) for p in ports)
    bc = frame(100, src=1)
    a.send(bc)
    assert b.recv(timeout=2) == bc and c.recv(timeout=2) == bc
    assert drain(a) == [], "no copy back to ourselves"
    to_a = frame(200, src=2, dst=mac(1))
    b.send(to_a)  # a's MAC is known at b: unicast to a only
    assert a.recv(timeout=2) == to_a
    assert drain(c) == []
    extra = b.stats.extra
    assert (extra["unicast_out"], extra["multicast_out"], extra["flood_copies"]) == (1, 0, 0)
    assert a.stats.extra["flood_copies"] == 2
    assert (a.stats.extra["multicast_out"], a.stats.extra["peer_floods_out"]) == (0, 1), "a flood to peers is no multicast"


def test_hostnames_ipv6_and_wrong_vni(ends: ExitStack) -> None:
    pa, pb, pc = free_udp_port(), free_udp_port(), free_udp_port()
    a = ends.enter_context(vdeplug.open(f"vxlan://localhost:{pb}/port={pa}/vni=5"))
    b = ends.enter_context(vdeplug.open(f"vxlan://127.0.0.1:{pa}/port={pb}/vni=6"))
    a.send(frame(60))
    assert drain(b) == [], "another VNI"
    assert b.stats.extra["bad_in"] == 1
    # IPv6 peers: a bare address takes port=.
    v6a = ends.enter_context(vdeplug.open(f"vxvde://::1/port={pc}/vni=5/v6"))
    v6b = ends.enter_context(vdeplug.open(f"vxvde://[::1]:{pc}/port={pb + 1}/vni=5"))
    v6b.send(frame(64, src=9))
    assert v6a.recv(timeout=2) == frame(64, src=9)


@pytest.mark.parametrize(
    "vnl,part",
    [
        ("vxlan://10.0.0.1,fd00::1", "fd00::1"),
        ("vxlan://localhost,::1", "::1"),
        ("vxvde://239.1.1.1,10.0.0.1", "239.1.1.1"),
        ("vxlan://10.0.0.1:0", "10.0.0.1:0"),
        ("vxlan://no-such-host.invalid", "no-such-host.invalid"),
        ("vxlan://239.1.1.1/allow=10.0.0.0", "allow"),
        ("vxvde://10.0.0.1/allow='10.0.0.0/99'", "10.0.0.0/99"),
    ],
)
def test_bad_peer_lists_name_the_part(vnl: str, part: str) -> None:
    with pytest.raises(vdeplug.VNLError) as e:
        vdeplug.open(vnl)
    assert e.value.part == part, e.value


@pytest.mark.parametrize("scheme", ["vxvde"])  # vxlan peers share one port: see test_overlay_netns
def test_a_new_host_joins_by_naming_one_member(ends: ExitStack, scheme: str) -> None:
    pa, pb, pc, pd = (free_udp_port() for _ in range(4))
    allow = "allow='127.0.0.0/8'/expiretime=3"
    a = ends.enter_context(vdeplug.open(f"{scheme}://127.0.0.1:{pb}/port={pa}/{allow}"))
    b = ends.enter_context(vdeplug.open(f"{scheme}://127.0.0.1:{pa}/port={pb}/{allow}"))
    # c names only a; a adds it and tells it about b; then c floods to both.
    c = ends.enter_context(vdeplug.open(f"{scheme}://127.0.0.1:{pa}/port={pc}/{allow}"))
    first = frame(80, src=3)
    c.send(first)
    assert a.recv(timeout=2) == first  # a probes c: does c receive at its address?
    assert drain(b) == [], "b does not know c yet"
    assert drain(c) == [], "c answers the probe (not a frame)"
    assert drain(a) == [], "a verifies c and sends it a peer list"
    assert a.stats.extra["members_joined"] == 1 and a.stats.extra["members_verified"] == 1
    assert a.stats.extra["peer_lists_out"] == 1
    assert drain(c) == [], "the peer list is not a frame"
    assert c.stats.extra["peer_lists_in"] == 1 and c.stats.extra["members"] == 1
    # c probes b, the member it was told of, before it floods to it.
    assert drain(b) == [], "b answers c's probe"
    assert drain(c) == [], "c verifies b"
    assert c.stats.extra["members_verified"] == 1
    second = frame(81, src=3)
    c.send(second)
    assert a.recv(timeout=2) == second and b.recv(timeout=2) == second
    from_b = frame(90, src=2)
    b.send(from_b)  # b learned c: its flood reaches c too
    assert c.recv(timeout=2) == from_b and a.recv(timeout=2) == from_b
    # c falls silent: after expiretime it is no longer flooded to.
    c.close()
    d = ends.enter_context(vdeplug.open(f"{scheme}://127.0.0.1:{pa}/port={pd}/vni=99"))
    time.sleep(4.2)
    b.send(frame(95, src=2))
    assert a.recv(timeout=2) == frame(95, src=2)
    assert b.stats.extra["members"] == 0 and b.stats.extra["members_expired"] >= 1
    assert drain(d) == [], "another VNI never joins"


def test_members_only_from_allowed_prefixes(ends: ExitStack) -> None:
    pa, pb = free_udp_port(), free_udp_port()
    a = ends.enter_context(vdeplug.open(f"vxvde://127.0.0.1:{pb}/port={pa}/allow='10.0.0.0/8'"))
    b = ends.enter_context(vdeplug.open(f"vxvde://127.0.0.1:{pa}/port={pb}"))
    # a names b itself; a third endpoint on 127.0.0.1 is not in 10/8.
    pc = free_udp_port()
    c = ends.enter_context(vdeplug.open(f"vxvde://127.0.0.1:{pa}/port={pc}"))
    c.send(frame(70, src=3))
    assert a.recv(timeout=2) == frame(70, src=3), "traffic is accepted..."
    a.send(frame(71, src=1))
    assert b.recv(timeout=2) == frame(71, src=1)
    assert drain(c) == [], "...but the sender does not join the flood list"
    assert a.stats.extra["members"] == 0

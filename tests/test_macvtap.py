"""macvtap://IFACE (issue 25, item 4), as upstream vdeplug4's
libvdeplug_macvtap: frames through an existing macvtap interface's
/dev/tapN reach the NIC under it. Each test builds a namespace with a
veth pair, a macvtap over one end, and the far end (with an address) in
another namespace; a tap plugged into `macvtap://` by vde_plug, given the
macvtap's MAC as a VM would be, pings the far end both ways."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import vdeplug
from conftest import VDE_PLUG, wait_for

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or shutil.which("ip") is None, reason="needs root and iproute2 (namespaces, veth, macvtap)")


def ip(*args: str) -> str:
    return subprocess.run(["ip", *args], check=True, capture_output=True, text=True).stdout


class Net:
    """Namespaces (removed at the end) with a unique suffix."""

    def __init__(self) -> None:
        self.tag = uuid.uuid4().hex[:6]
        self.names: list[str] = []

    def ns(self, name: str) -> str:
        n = f"mvt{name}{self.tag}"
        ip("netns", "add", n)
        self.names.append(n)
        ip("-n", n, "link", "set", "lo", "up")
        return n

    def close(self) -> None:
        for n in self.names:
            subprocess.run(["ip", "netns", "del", n], capture_output=True)


@pytest.fixture
def net() -> Iterator[Net]:
    n = Net()
    try:
        yield n
    finally:
        n.close()


def macvtap_host(net: Net, far: str, subnet: int) -> tuple[str, str]:
    """A namespace with a veth whose peer (10.79.SUBNET.2) is in `far` and a
    macvtap `mvt` over it, all up: the namespace and the macvtap's MAC."""
    ns = net.ns(f"h{subnet}")
    peer = f"vp{subnet}"
    ip("-n", ns, "link", "add", "vm", "type", "veth", "peer", "name", peer, "netns", far)
    ip("-n", ns, "link", "add", "link", "vm", "name", "mvt", "type", "macvtap", "mode", "bridge")
    for dev in ("vm", "mvt"):
        ip("-n", ns, "link", "set", dev, "up")
    ip("-n", far, "addr", "add", f"10.79.{subnet}.2/24", "dev", peer)
    ip("-n", far, "link", "set", peer, "up")
    return ns, json.loads(ip("-n", ns, "-j", "link", "show", "mvt"))[0]["address"]


def plug_and_ping(ns: str, mac: str, far: str, subnet: int) -> None:
    """vde_plug macvtap://mvt tap://t0 in `ns`; t0 (the macvtap's MAC,
    10.79.SUBNET.1) and the far end ping each other."""
    p = subprocess.Popen(["ip", "netns", "exec", ns, VDE_PLUG, "macvtap://mvt", "tap://t0"], stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: "t0" in ip("-n", ns, "-o", "link") or p.poll() is not None, what="tap t0")
        assert p.poll() is None, p.communicate()[1]
        ip("-n", ns, "link", "set", "t0", "address", mac)
        ip("-n", ns, "addr", "add", f"10.79.{subnet}.1/24", "dev", "t0")
        ip("-n", ns, "link", "set", "t0", "up")
        for src, dst in ((ns, f"10.79.{subnet}.2"), (far, f"10.79.{subnet}.1")):
            r = subprocess.run(["ip", "netns", "exec", src, "ping", "-c", "2", "-i", "0.2", "-W", "3", dst], capture_output=True, text=True)
            assert r.returncode == 0, f"{src} -> {dst}: {r.stdout}{r.stderr}"
    finally:
        p.terminate()
        p.wait(5)


def test_a_tap_pings_the_far_end_of_the_nic_through_macvtap(net: Net) -> None:
    far = net.ns("far")
    ns, mac = macvtap_host(net, far, 1)
    plug_and_ping(ns, mac, far, 1)


def test_the_interface_of_this_namespace_is_opened_whatever_dev_tapN_is(net: Net) -> None:
    """/dev/tapN is named by ifindex, which each namespace counts from 1:
    two namespaces' macvtaps with the same index share one /dev node (the
    first one made). Each plug still reaches its own NIC."""
    far = net.ns("far")
    a, mac_a = macvtap_host(net, far, 2)
    b, mac_b = macvtap_host(net, far, 3)
    idx = {ns: ip("-n", ns, "-o", "link", "show", "mvt").split(":")[0] for ns in (a, b)}
    assert idx[a] == idx[b], idx
    plug_and_ping(a, mac_a, far, 2)
    plug_and_ping(b, mac_b, far, 3)


def test_errors_say_what_to_do(net: Net, tmp_path: Path) -> None:
    ns = net.ns("err")
    r = subprocess.run(["ip", "netns", "exec", ns, VDE_PLUG, "macvtap://nosuch", "null://"], capture_output=True, text=True, timeout=10)
    assert r.returncode != 0 and "no interface nosuch" in r.stderr and "type macvtap" in r.stderr, r.stderr
    r = subprocess.run(["ip", "netns", "exec", ns, VDE_PLUG, "macvtap://lo", "null://"], capture_output=True, text=True, timeout=10)
    assert r.returncode != 0 and "lo is not a macvtap interface" in r.stderr, r.stderr
    with pytest.raises(ValueError, match="interface name"):
        vdeplug.open("macvtap://a/b")


# As nobody (issue 25, item 2): an ordinary user's namespaces can make the
# macvtap but not open it. In a user namespace of its own (user mapped to
# root there), with a network namespace and a mount namespace whose /sys
# shows it, nobody creates the veth and the macvtap over it (CAP_NET_ADMIN
# over its own network namespace suffices), and the kernel's devtmpfs makes
# /dev/tapN, owned by the real root and mode 0600. root is not mapped in that
# user namespace, so its CAP_DAC_OVERRIDE does not apply: open() fails with
# EACCES (13). The private node vde_plug falls back to cannot be made either:
# mknod() of a device needs CAP_MKNOD in the initial user namespace (EPERM, 1).
# Only root's help opens it (chmod 0666 on the node, or a udev rule
# KERNEL=="tap*" MODE="0666"): then nobody's vde_plug runs as root's does.
MACVTAP_AS_NOBODY = """
mount -t sysfs sysfs /sys
ip link add vm type veth peer name vp
ip link add link vm name mvt type macvtap mode bridge
ip link set vm up && ip link set mvt up
exec "$0" macvtap://mvt null://
"""


def test_macvtap_as_nobody_in_a_user_namespace(nobody_env) -> None:
    from conftest import NOBODY

    vde_plug = str(nobody_env.bin / "vde_plug")
    cmd = [*NOBODY, "unshare", "--user", "--map-root-user", "--net", "--mount", "sh", "-ec", MACVTAP_AS_NOBODY, vde_plug]
    p = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, cwd="/")
    try:
        _, err = p.communicate(timeout=3)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()
        return  # the plug opened the macvtap and runs: an ordinary user's macvtap works here
    assert "cannot open /dev/tap" in err and "Permission denied" in err and "give your user access" in err, err
    pytest.skip(
        "as nobody, the macvtap is made in its user namespace but its /dev/tapN (devtmpfs, owned by the unmapped real root, 0600) "
        "cannot be opened (EACCES) nor a private node made (mknod: EPERM, needs CAP_MKNOD in the initial user namespace)"
    )

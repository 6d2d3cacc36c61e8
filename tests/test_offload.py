"""tap:// offloads (TSO super-frames in, coalesced super-frames out) over
real overlays in network namespaces: the wire still carries one checksummed
frame <= MTU per datagram (the kernel's vxlan and C vxvde accept them), and
TCP transfers arrive intact, in order, while other traffic shares the link."""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import C_VDE_PLUG, VDE_PLUG, needs_c
from netns import needs_netns
from vdeplug.lab import Host

pytestmark = [needs_netns, pytest.mark.slow]

XFER = str(Path(__file__).with_name("tcp_xfer.py"))


def tap_host(h: Host, url: str, ip: str, exe: str = VDE_PLUG, env: dict | None = None):
    p = h.popen(exe, url, "tap://t0", env=env)
    h.wait_link("t0")
    h.run("ip", "link", "set", "t0", "mtu", "1500")
    h.addr("t0", ip)
    return p


def kernel_vxlan(h: Host, ip: str, group: str = "239.1.4.1", vni: int = 42) -> None:
    """The kernel's vxlan on h. Its TCP leaves inner checksums to the NIC;
    a veth never computes them (kernel peers on veth accept them unchecked,
    a socket reader like us sees garbage), so make eth0 compute them as a
    real NIC would."""
    if shutil.which("ethtool") is None:
        pytest.skip("needs ethtool (apt-get install ethtool)")
    h.run("ethtool", "-K", "eth0", "tx", "off")
    h.run("ip", "link", "add", "t0", "type", "vxlan", "id", str(vni), "group", group, "dstport", "4789", "dev", "eth0")
    h.run("ip", "link", "set", "t0", "mtu", "1500")
    h.addr("t0", ip)


def transfer(src: Host, dst: Host, dst_ip: str, nbytes: int, port: int, seed: int) -> tuple[str, str]:
    """(sent, received) as "<bytes> <sha256>"."""
    server = dst.popen(sys.executable, XFER, "serve", dst_ip, str(port), stdout=subprocess.PIPE, text=True)
    time.sleep(0.3)
    sent = src.run(sys.executable, XFER, "send", dst_ip, str(port), str(nbytes), str(seed), timeout=120).stdout.strip()
    got, _ = server.communicate(timeout=60)
    return sent, got.strip()


def counters(h: Host) -> dict[str, int]:
    """The host's SNMP counters named as nstat names them (TcpInCsumErrors);
    read from /proc, as nstat's history file in /tmp may be another user's."""
    lines = h.run("cat", "/proc/net/snmp", "/proc/net/netstat").stdout.splitlines()
    found = {}
    for names, values in zip(lines[::2], lines[1::2]):  # "Tcp: RtoAlgorithm …" then "Tcp: 1 …"
        prefix, *keys = names.split()
        for key, value in zip(keys, values.split()[1:]):
            found[prefix.rstrip(":") + key] = int(value)
    return found


def plug_stats(p: subprocess.Popen) -> str:
    p.send_signal(__import__("signal").SIGUSR1)
    time.sleep(0.3)
    p.terminate()
    _, err = p.communicate(timeout=10)
    return err.decode() if isinstance(err, bytes) else err


def inner_tcp_checks(pcap: bytes, outer_src: bytes) -> tuple[int, int]:
    """(VXLAN datagrams from `outer_src` carrying TCP data, how many broke a
    rule): inner frame <= 1514 bytes, inner IPv4 header and TCP checksums
    valid. On veth a UDP GSO train is captured as one packet: it is cut into
    its datagrams (each 8 bytes of VXLAN and one frame) here."""

    def csum(b: bytes) -> int:
        if len(b) % 2:
            b += b"\0"
        s = sum(struct.unpack(f"!{len(b) // 2}H", b))
        while s >> 16:
            s = (s & 0xFFFF) + (s >> 16)
        return s

    off, seen, bad = 24, 0, 0
    while off + 16 <= len(pcap):
        incl = struct.unpack_from("<I", pcap, off + 8)[0]
        pkt = pcap[off + 16 : off + 16 + incl]
        off += 16 + incl
        if len(pkt) < 14 + 20 + 8 + 8 + 14 or pkt[12:14] != b"\x08\x00" or pkt[23] != 17 or pkt[26:30] != outer_src:
            continue
        ihl = (pkt[14] & 15) * 4
        train = pkt[14 + ihl + 8 :]
        seg = None
        while len(train) > 8 + 34:
            inner = train[8:]
            if inner[12:14] != b"\x08\x00":
                break
            total = struct.unpack_from("!H", inner, 16)[0]
            seg = seg or 8 + 14 + total  # the train's datagram size: the first one's
            frame, train = inner[: seg - 8], train[seg:]
            if frame[23] != 6:
                continue
            iihl = (frame[14] & 15) * 4
            ip, tcp = frame[14 : 14 + iihl], frame[14 + iihl : 14 + total]
            if len(tcp) <= (tcp[12] >> 4) * 4:
                continue  # no data
            seen += 1
            pseudo = ip[12:20] + struct.pack("!BBH", 0, 6, len(tcp))
            if 14 + total > 1514 or csum(ip) != 0xFFFF or csum(pseudo + tcp) != 0xFFFF:
                bad += 1
    return seen, bad


def test_kernel_vxlan_takes_our_segments_and_we_coalesce_its(lan_factory, tmp_path):
    lan = lan_factory(2, mtu=9000)  # room for a 1500-byte overlay MTU plus VXLAN
    h1, h2 = lan.hosts
    ours = tap_host(h1, "vxlan://239.1.4.1/vni=42", "192.168.44.1/24")
    kernel_vxlan(h2, "192.168.44.2/24")
    assert h1.ping("192.168.44.2"), "ours -> kernel vxlan"
    cap = tmp_path / "wire.pcap"
    dump = h2.popen("tcpdump", "-i", "eth0", "-s", "0", "-U", "-c", "2000", "-w", str(cap), "udp", stdout=subprocess.DEVNULL)
    time.sleep(0.5)
    c0 = [counters(h) for h in (h1, h2)]
    sent, got = transfer(h1, h2, "192.168.44.2", 40 << 20, 5001, 1)
    assert sent == got and sent.startswith(str(40 << 20)), (sent, got)
    sent, got = transfer(h2, h1, "192.168.44.1", 40 << 20, 5002, 2)
    assert sent == got, (sent, got)
    c1 = [counters(h) for h in (h1, h2)]
    for a, b in zip(c0, c1):
        assert b.get("TcpInCsumErrors", 0) == a.get("TcpInCsumErrors", 0)
    dump.terminate()
    dump.wait(20)
    seen, bad = inner_tcp_checks(cap.read_bytes(), bytes([10, 77, 0, 1]))
    assert seen > 500 and bad == 0, (seen, bad)
    err = plug_stats(ours)
    # Both offloads really ran: super-frames from our tap, and into it.
    assert "'superframes_in': 0," not in err and "'superframes_out': 0," not in err, err
    assert "'offload_errors': 0" in err, err


def test_ours_to_ours_in_order_with_other_flows_sharing_the_link(lan_factory):
    lan = lan_factory(2, mtu=9000)  # room for a 1500-byte overlay MTU plus VXLAN
    h1, h2 = lan.hosts
    a = tap_host(h1, "vxvde://239.1.4.2", "192.168.45.1/24")
    b = tap_host(h2, "vxvde://239.1.4.2", "192.168.45.2/24")
    assert h1.ping("192.168.45.2")
    c0 = [counters(h) for h in (h1, h2)]
    pinger = h1.popen("ping", "-i", "0.01", "-s", "1200", "-c", "400", "192.168.45.2", stdout=subprocess.PIPE, text=True)
    other = h2.popen(sys.executable, XFER, "serve", "192.168.45.2", "5004", stdout=subprocess.PIPE, text=True)
    time.sleep(0.3)
    side = h1.popen(sys.executable, XFER, "send", "192.168.45.2", "5004", str(30 << 20), "4", stdout=subprocess.PIPE, text=True)
    sent, got = transfer(h2, h1, "192.168.45.1", 150 << 20, 5003, 3)
    assert sent == got and sent.startswith(str(150 << 20)), (sent, got)
    s_out, _ = side.communicate(timeout=120)
    o_out, _ = other.communicate(timeout=60)
    assert s_out.strip() == o_out.strip() and s_out.startswith(str(30 << 20))
    p_out, _ = pinger.communicate(timeout=60)
    assert " 0% packet loss" in p_out, p_out
    c1 = [counters(h) for h in (h1, h2)]
    for x, y in zip(c0, c1):
        assert y.get("TcpInCsumErrors", 0) == x.get("TcpInCsumErrors", 0)
    # IPv6 (TSO6 in, TCPv6 super-frames out).
    for i, h in enumerate((h1, h2), 1):
        h.run("ip", "-6", "addr", "add", f"fd45::{i}/64", "dev", "t0", "nodad")
    sent, got = transfer(h1, h2, "fd45::2", 30 << 20, 5008, 8)
    assert sent == got and sent.startswith(str(30 << 20)), (sent, got)
    for p in (a, b):
        err = plug_stats(p)
        assert "'offload_errors': 0" in err and "'superframes_out': 0," not in err, err


@needs_c
def test_c_vxvde_takes_our_segments_and_we_coalesce_its(lan_factory):
    lan = lan_factory(2, mtu=9000)  # room for a 1500-byte overlay MTU plus VXLAN
    h1, h2 = lan.hosts
    tap_host(h1, "vxvde://239.1.4.3", "192.168.46.1/24")
    tap_host(h2, "vxvde://239.1.4.3", "192.168.46.2/24", exe=C_VDE_PLUG)
    assert h1.ping("192.168.46.2")
    sent, got = transfer(h1, h2, "192.168.46.2", 8 << 20, 5005, 5)
    assert sent == got, (sent, got)
    sent, got = transfer(h2, h1, "192.168.46.1", 8 << 20, 5006, 6)
    assert sent == got, (sent, got)


def test_without_offloads_frames_are_plain(lan_factory):
    lan = lan_factory(2, mtu=9000)  # room for a 1500-byte overlay MTU plus VXLAN
    h1, h2 = lan.hosts
    env = dict(os.environ, VDEPLUG_TAP_OFFLOAD="0")
    p = tap_host(h1, "vxlan://239.1.4.4/vni=42", "192.168.47.1/24", env=env)
    kernel_vxlan(h2, "192.168.47.2/24", group="239.1.4.4")
    sent, got = transfer(h1, h2, "192.168.47.2", 8 << 20, 5007, 7)
    assert sent == got, (sent, got)
    err = plug_stats(p)
    assert "superframes_in" not in err, err

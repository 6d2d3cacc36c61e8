"""Legacy VDE compatibility: our vde:// client against Debian's vde_switch,
our switch:// serving C vde_plug and qemu, hub/multi/bonding, seqpacket."""

from __future__ import annotations

import os
import queue
import shutil
import signal
import socket
import stat
import subprocess
import threading
import time

import pytest
import vdeplug
from conftest import (
    C_VDE_PLUG,
    SIZES,
    VDE_PLUG,
    StreamPeer,
    frame,
    mac,
    needs_c,
    wait_for,
)

BCAST = b"\xff" * 6
needs_vde_switch = pytest.mark.skipif(shutil.which("vde_switch") is None, reason="vde_switch not installed (apt-get install vde-switch)")
QEMU = shutil.which("qemu-system-x86_64")


def nothing(c: vdeplug.Connection, wait: float = 0.3) -> bool:
    try:
        c.recv(timeout=wait)
    except TimeoutError:
        return True
    return False


@pytest.fixture
def vde_switch(tmp_path):
    d = tmp_path / "vsw"
    p = subprocess.Popen(["vde_switch", "-s", str(d)], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
    wait_for(lambda: (d / "ctl").exists(), what="vde_switch ctl")
    yield str(d)
    p.terminate()
    p.wait(5)


@pytest.fixture
def our_switch(tmp_path):
    """A stand-alone switch: ``vde_plug null:// switch://DIR``."""
    d = tmp_path / "sw"
    procs = []

    def start(kind: str = "switch", opts: str = "") -> str:
        p = subprocess.Popen([VDE_PLUG, "null://", f"{kind}://{d}{opts}"], stderr=subprocess.PIPE, text=True)
        procs.append(p)
        wait_for(lambda: (d / "ctl").exists(), what="switch ctl")
        return str(d)

    yield start
    for p in procs:
        if p.poll() is None:
            p.terminate()
            p.wait(5)


@needs_vde_switch
@needs_c
def test_our_clients_and_c_client_through_vde_switch(vde_switch):
    with vdeplug.open(f"vde://{vde_switch}") as a, vdeplug.open(vde_switch) as b:
        c = StreamPeer([C_VDE_PLUG, f"vde://{vde_switch}"])
        try:
            time.sleep(0.3)
            for size in SIZES:  # vde_switch carries at most 1518 bytes
                f = frame(size, src=1)
                a.send(f)
                assert b.recv(timeout=5) == f
                assert c.recv() == f
                g = frame(size, src=2)
                c.send(g)
                assert a.recv(timeout=5) == g
                assert b.recv(timeout=5) == g
        finally:
            c.close()


@needs_vde_switch
def test_vde_port_selection(vde_switch):
    with vdeplug.open(f"vde://{vde_switch}[7]") as a, vdeplug.open(f"{vde_switch}[port=9]") as b:
        a.send(frame(100))
        assert b.recv(timeout=5) == frame(100)


def test_vde_missing_switch_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no switch at"):
        vdeplug.open(f"vde://{tmp_path}/nothing")
    r = subprocess.run([VDE_PLUG, f"{tmp_path}/nothing", "null://"], capture_output=True, text=True, timeout=10)
    assert r.returncode == 1 and "no switch at" in r.stderr and "Traceback" not in r.stderr


@needs_c
def test_our_switch_three_clients_learning(our_switch):
    d = our_switch()
    with vdeplug.open(f"vde://{d}") as a, vdeplug.open(f"vde://{d}") as b:
        c = StreamPeer([C_VDE_PLUG, f"vde://{d}"])
        try:
            time.sleep(0.3)
            # Broadcasts reach everybody but the sender, byte-identical.
            fa, fc = frame(1514, src=1, dst=BCAST), frame(60, src=3, dst=BCAST)
            a.send(fa)
            assert b.recv(timeout=5) == fa and c.recv() == fa
            assert nothing(a)
            c.send(fc)
            assert a.recv(timeout=5) == fc and b.recv(timeout=5) == fc
            # mac(1) (a) and mac(3) (c) are known: unicast reaches only its port.
            u = frame(500, src=3, dst=mac(1))
            c.send(u)
            assert a.recv(timeout=5) == u
            assert nothing(b), "known unicast was flooded"
            v = frame(400, src=1, dst=mac(3))
            a.send(v)
            assert c.recv() == v
            assert nothing(b)
            # Unknown unicast is flooded.
            w = frame(200, src=2, dst=mac(99))
            b.send(w)
            assert a.recv(timeout=5) == w and c.recv() == w
        finally:
            c.close()


def test_vlan_trunk_and_vlan_in_key(our_switch):
    d = our_switch()
    with vdeplug.open(f"vde://{d}") as a, vdeplug.open(f"vde://{d}") as b, vdeplug.open(f"vde://{d}") as c:

        def tagged(vid: int, src: int, dst: bytes) -> bytes:
            return dst + mac(src) + b"\x81\x00" + vid.to_bytes(2, "big") + b"\x08\x00" + bytes(46)

        t = tagged(10, 1, BCAST)
        a.send(t)
        assert b.recv(timeout=5) == t and c.recv(timeout=5) == t, "tags kept"
        # mac(1) known on VLAN 10 only: unicast to it on VLAN 20 is flooded.
        u20 = tagged(20, 2, mac(1))
        b.send(u20)
        assert a.recv(timeout=5) == u20 and c.recv(timeout=5) == u20
        u10 = tagged(10, 2, mac(1))
        b.send(u10)
        assert a.recv(timeout=5) == u10
        assert nothing(c)


def test_client_death_frees_port_and_switch_keeps_running(our_switch, tmp_path):
    d = our_switch()
    with vdeplug.open(f"vde://{d}") as a:
        p = StreamPeer([VDE_PLUG, f"vde://{d}"])
        time.sleep(0.3)
        n_sockets = len([f for f in os.listdir(d) if f != "ctl"])
        p.proc.kill()
        p.proc.wait()
        wait_for(lambda: len([f for f in os.listdir(d) if f != "ctl"]) == n_sockets - 1, what="port freed")
        with vdeplug.open(f"vde://{d}") as b:
            b.send(frame(77))
            assert a.recv(timeout=5) == frame(77)


def test_switch_modes_and_cleanup(tmp_path):
    d = tmp_path / "sw"
    p = subprocess.Popen([VDE_PLUG, "null://", f"switch://{d}[mode=0660]"])
    wait_for(lambda: (d / "ctl").exists(), what="ctl")
    assert stat.S_IMODE(os.stat(d / "ctl").st_mode) == 0o660
    assert stat.S_IMODE(os.stat(d).st_mode) == 0o3770  # vdeplug4: 02770; sticky since the group may write
    with vdeplug.open(f"vde://{d}"):
        ports = [f for f in os.listdir(d) if f != "ctl"]
        assert len(ports) == 1 and stat.S_IMODE(os.stat(d / ports[0]).st_mode) == 0o660
    p.send_signal(signal.SIGTERM)
    assert p.wait(5) == 0
    assert not d.exists(), "switch directory removed on clean exit"


def test_second_switch_on_same_path_refused(our_switch):
    d = our_switch()
    r = subprocess.run([VDE_PLUG, "null://", f"switch://{d}"], capture_output=True, text=True, timeout=10)
    assert r.returncode == 1 and "already running" in r.stderr


def test_switch_dies_vde_plug_reports(our_switch, tmp_path):
    """vde:// sees the switch hang up (control stream EOF) and says so."""
    d = our_switch()
    link = str(tmp_path / "l")
    p = subprocess.Popen([VDE_PLUG, f"vde://{d}", f"ptp://{link}"], stderr=subprocess.PIPE, text=True)
    wait_for(lambda: os.path.exists(link), what="ptp")
    time.sleep(0.3)
    subprocess.run(["pkill", "-f", f"switch://{d}"])
    assert p.wait(5) == 1
    assert "peer hung up" in (p.stderr.read() if p.stderr else "")


class HostPort:
    """The owner's side of an in-process switch/hub/multi/bonding."""

    def __init__(self, url: str) -> None:
        self.conn = vdeplug.open(url)
        self.q: queue.Queue[bytes] = queue.Queue()
        self.t = threading.Thread(target=self._pump, daemon=True)
        self.t.start()

    def _pump(self) -> None:
        while True:
            try:
                self.q.put(self.conn.recv(timeout=0.1))
            except TimeoutError:
                continue
            except (ValueError, OSError):
                return

    def get(self, timeout: float = 3) -> bytes | None:
        try:
            return self.q.get(timeout=timeout)
        except queue.Empty:
            return None

    def close(self) -> None:
        self.conn.close()
        self.t.join(2)


def test_hub_floods_known_unicast(tmp_path):
    host = HostPort(f"hub://{tmp_path}/hub")
    try:
        with vdeplug.open(f"vde://{tmp_path}/hub") as a, vdeplug.open(f"vde://{tmp_path}/hub") as b:
            a.send(frame(100, src=1))
            assert host.get() == frame(100, src=1) and b.recv(timeout=3) == frame(100, src=1)
            u = frame(60, src=2, dst=mac(1))
            b.send(u)
            assert a.recv(timeout=3) == u and host.get() == u, "hub floods even known unicast"
            host.conn.send(frame(70, src=9))
            assert a.recv(timeout=3) == frame(70, src=9) and b.recv(timeout=3) == frame(70, src=9)
    finally:
        host.close()


def test_multi_and_bonding(tmp_path):
    host = HostPort(f"multi://{tmp_path}/m")
    try:
        with vdeplug.open(f"vde://{tmp_path}/m") as a, vdeplug.open(f"vde://{tmp_path}/m") as b:
            a.send(frame(100, src=1))
            assert host.get() == frame(100, src=1)
            assert nothing(b), "multi: ports talk only to the host"
            host.conn.send(frame(90))
            assert a.recv(timeout=3) == frame(90) and b.recv(timeout=3) == frame(90)
    finally:
        host.close()
    host = HostPort(f"bonding://{tmp_path}/b")
    try:
        with vdeplug.open(f"vde://{tmp_path}/b") as a, vdeplug.open(f"vde://{tmp_path}/b") as b:
            for i in range(4):
                host.conn.send(frame(60 + i))
            got_a = [a.recv(timeout=3) for _ in range(2)]
            got_b = [b.recv(timeout=3) for _ in range(2)]
            assert sorted(got_a + got_b) == sorted(frame(60 + i) for i in range(4)), "round robin"
            b.send(frame(61, src=5))
            assert host.get() == frame(61, src=5)
    finally:
        host.close()


def test_seqpacket_fd():
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    with vdeplug.open(f"seqpacket://{theirs.fileno()}") as c:
        theirs.detach()  # the connection owns the fd now
        ours.send(frame(1514))
        assert c.recv(timeout=3) == frame(1514)
        c.send(frame(60))
        assert ours.recv(9000) == frame(60)
        ours.close()
        assert c.recv(timeout=3) == b""


def test_seqpacket_vde_plug_like_static_libvdeplug(tmp_path):
    """libvdeplug.a forks ``vde_plug seqpacket://FD URL`` with a socketpair end."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    link = str(tmp_path / "l")
    p = subprocess.Popen([VDE_PLUG, f"seqpacket://{theirs.fileno()}", f"ptp://{link}"], pass_fds=[theirs.fileno()])
    theirs.close()
    try:
        wait_for(lambda: os.path.exists(link), what="ptp")
        with vdeplug.open(f"ptp://{link}") as c:
            c.send(frame(300))
            ours.settimeout(5)
            assert ours.recv(9000) == frame(300)
            ours.send(frame(301))
            assert c.recv(timeout=5) == frame(301)
    finally:
        ours.close()
        assert p.wait(5) == 1  # the seqpacket peer hung up


@pytest.mark.slow
@pytest.mark.skipif(QEMU is None, reason="qemu-system-x86_64 not installed (apt-get install qemu-system-x86)")
def test_qemu_plugs_into_our_switch_and_dhcp_discover_arrives(our_switch):
    d = our_switch()
    qmac = bytes.fromhex("525400123456")
    with vdeplug.open(f"vde://{d}") as watch:
        q = subprocess.Popen(
            [QEMU, "-nic", f"vde,sock={d},model=e1000,mac=52:54:00:12:34:56", "-boot", "n", "-nographic", "-m", "64", "-display", "none", "-serial", "none", "-monitor", "none"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            deadline = time.monotonic() + 60
            found = False
            while time.monotonic() < deadline and not found:
                try:
                    f = watch.recv(timeout=1)
                except TimeoutError:
                    assert q.poll() is None, f"qemu exited: {q.stderr.read() if q.stderr else ''}"
                    continue
                is_udp_68_67 = f[12:14] == b"\x08\x00" and f[23] == 17 and f[34:38] == bytes([0, 68, 0, 67])
                # BOOTP op=1, magic cookie, option 53 (message type) = 1 (DISCOVER)
                if is_udp_68_67 and f[6:12] == qmac and f[42] == 1 and b"\x63\x82\x53\x63\x35\x01\x01" in f:
                    found = True
            assert found, "no DHCP DISCOVER from qemu's boot ROM"
        finally:
            q.terminate()
            q.wait(10)
    # qemu is gone; the switch still serves.
    with vdeplug.open(f"vde://{d}") as a, vdeplug.open(f"vde://{d}") as b:
        a.send(frame(100))
        assert b.recv(timeout=5) == frame(100)


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to another group needs root")
def test_switch_group_ownership(tmp_path):
    import grp as grp_mod

    gid = grp_mod.getgrnam("daemon").gr_gid
    d = tmp_path / "sw"
    p = subprocess.Popen([VDE_PLUG, "null://", f"switch://{d}[grp=daemon/mode=0660]"])
    try:
        wait_for(lambda: (d / "ctl").exists(), what="ctl")
        assert os.stat(d).st_gid == gid and os.stat(d / "ctl").st_gid == gid
        with vdeplug.open(f"vde://{d}"):
            ports = [f for f in os.listdir(d) if f != "ctl"]
            assert os.stat(d / ports[0]).st_gid == gid
    finally:
        p.terminate()
        p.wait(5)


def test_vde_bad_bracket_option_is_named(our_switch):
    d = our_switch()
    r = subprocess.run([VDE_PLUG, f"vde://{d}[bogus=1]", "null://"], capture_output=True, text=True, timeout=10)
    assert r.returncode == 2 and "bogus" in r.stderr and "known: port" in r.stderr


@needs_vde_switch
@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("runuser") is None, reason="needs root and runuser to start a switch as another user")
def test_vde_client_reaches_a_switch_of_another_user():
    """As vdeplug4: our data socket is shared with the switch owner's group,
    so a vde_switch run by another user can talk to us."""
    import tempfile
    from pathlib import Path

    base = Path(tempfile.mkdtemp(prefix="vdp-other-", dir="/tmp"))
    base.chmod(0o777)
    d = base / "sw"
    p = subprocess.Popen(["runuser", "-u", "nobody", "--", "vde_switch", "-s", str(d), "-m", "0666"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
    try:
        wait_for(lambda: (d / "ctl").exists(), what="vde_switch ctl")
        with vdeplug.open(f"vde://{d}") as a, vdeplug.open(f"vde://{d}") as b:
            a.send(frame(100))
            assert b.recv(timeout=5) == frame(100)
    finally:
        p.terminate()
        p.wait(5)
        shutil.rmtree(base, ignore_errors=True)

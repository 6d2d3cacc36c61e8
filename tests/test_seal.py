"""seal://KEYFILE{VNL}: authenticated encryption around any VNL. Two ends
over UDP on loopback with a man in the middle that forwards, tampers,
replays, truncates and forges; key files and their refusals; a key rolled
over while frames flow; C programs on our library."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
import vdeplug
from conftest import VDE_PLUG, frame, free_udp_port
from netns import needs_netns
from relay import Relay
from test_libvdeplug import finish, needs_cc, needs_lib, peer, vdepeer  # noqa: F401 (vdepeer: a fixture)

SEALED_TYPE = b"\x88\xb6"
ATTACKER = str(Path(__file__).with_name("seal_attacker.py"))
XFER = str(Path(__file__).with_name("tcp_xfer.py"))
OVERHEAD = 51


def keygen(path: Path) -> Path:
    r = subprocess.run([VDE_PLUG, "--keygen", str(path)], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    return path


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[tuple[vdeplug.Connection, vdeplug.Connection, Relay]]:
    """Two sealed ends a and b, whose datagrams all cross a Relay."""
    key = keygen(tmp_path / "k")
    mid = Relay()
    with ExitStack() as st:
        a = st.enter_context(vdeplug.open(f"seal://{key}{{{mid.vnl('a')}}}"))
        b = st.enter_context(vdeplug.open(f"seal://{key}{{{mid.vnl('b')}}}"))
        yield a, b, mid
        mid.close()


def test_frames_cross_sealed_with_the_macs_in_clear(pair):
    a, b, mid = pair
    for k, size in enumerate([60, 61, 500, 1400]):
        f = frame(size, src=3, seed=k)
        a.send(f)
        assert b.recv(timeout=2) == f
    wire = mid.seen[-1][1]
    f = frame(1400, src=3, seed=3)
    assert len(wire) == 1400 + OVERHEAD
    assert wire[:12] == f[:12] and wire[12:14] == SEALED_TYPE, "MACs in clear, then the sealed type"
    assert f[20:60] not in wire, "the payload is encrypted"
    assert b.stats.extra["seal_opened"] == 4 and a.stats.extra["seal_sealed"] == 4


def test_tampered_truncated_replayed_wrong_key_and_clear_frames_are_counted_and_dropped(pair, tmp_path):
    a, b, mid = pair
    mid.hold = True
    a.send(frame(100, src=3, seed=1))
    time.sleep(0.2)
    mid.hold = False
    good = mid.seen[-1][1]  # sealed, never delivered
    tampered = bytearray(good)
    tampered[60] ^= 0x40
    mid.inject(bytes(tampered), "b")  # tampered payload
    mac_changed = bytearray(good)
    mac_changed[5] ^= 1
    mid.inject(bytes(mac_changed), "b")  # the destination MAC is authenticated too
    mid.inject(good[:40], "b")  # truncated
    mid.inject(good, "b")  # the genuine frame: it gets through
    assert b.recv(timeout=2) == frame(100, src=3, seed=1)
    mid.inject(good, "b")  # replayed
    mid.inject(frame(80, src=9), "b")  # a frame in clear
    other = keygen(tmp_path / "other")
    po = free_udp_port()
    with vdeplug.open(f"seal://{other}{{udp://127.0.0.1:{po}->127.0.0.1:{mid.port}}}") as stranger:
        stranger.send(frame(90, src=8))
    time.sleep(0.2)
    mid.inject(mid.seen[-1][1], "b")  # sealed with another key
    a.send(frame(120, src=3, seed=2))
    assert b.recv(timeout=2) == frame(120, src=3, seed=2), "the next valid frame gets through"
    with pytest.raises(TimeoutError):
        b.recv(timeout=0.3)
    x = b.stats.extra
    counts = {k: x[f"seal_{k}"] for k in ("bad_tag", "truncated", "replayed", "not_sealed", "wrong_key", "opened")}
    assert counts == {"bad_tag": 2, "truncated": 1, "replayed": 1, "not_sealed": 1, "wrong_key": 1, "opened": 2}, x


def test_forged_senders_at_a_high_rate_cost_no_memory_and_block_nothing(pair):
    a, b, mid = pair
    a.send(frame(100, src=3, seed=1))
    b.recv(timeout=2)
    good = bytearray(mid.seen[-1][1])
    stop = threading.Event()

    def forge() -> None:
        n = 0
        while not stop.is_set():
            good[19:23] = n.to_bytes(4, "big")  # a new session id each time
            mid.inject(bytes(good), "b")
            n += 1

    t = threading.Thread(target=forge, daemon=True)
    t.start()
    try:
        got = 0
        for k in range(50):
            f = frame(200, src=3, seed=100 + k)
            a.send(f)
            while True:
                r = b.recv(timeout=2)
                if r == f:
                    got += 1
                    break
    finally:
        stop.set()
        t.join(2)
    assert got == 50
    x = b.stats.extra
    assert x["seal_bad_tag"] > 100 and x["seal_sessions"] == 1, x


def test_key_files_refused_with_the_fix(tmp_path):
    key = keygen(tmp_path / "k")
    assert os.stat(key).st_mode & 0o777 == 0o600
    assert len(key.read_text().strip()) == 64
    r = subprocess.run([VDE_PLUG, "--keygen", str(key)], capture_output=True, text=True, timeout=30)
    assert r.returncode != 0 and "exists" in r.stderr, "never over an existing file"
    os.chmod(key, 0o644)
    with pytest.raises(vdeplug.VNLError, match=r"readable by others \(mode 0644\): chmod 600"):
        vdeplug.open(f"seal://{key}{{null://}}")
    r = subprocess.run([VDE_PLUG, f"seal://{key}{{null://}}", "null://"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and "chmod 600" in r.stderr, r.stderr
    os.chmod(key, 0o600)
    link = tmp_path / "link"
    link.symlink_to(key)
    with pytest.raises(vdeplug.VNLError, match="cannot read key file"):
        vdeplug.open(f"seal://{link}{{null://}}")
    bad = tmp_path / "bad"
    bad.write_text("0123\n")
    os.chmod(bad, 0o600)
    with pytest.raises(vdeplug.VNLError, match="line 1: expected 64 hex digits"):
        vdeplug.open(f"seal://{bad}{{null://}}")
    with pytest.raises(vdeplug.VNLError, match="needs a key file"):
        vdeplug.open("seal://{null://}")
    with pytest.raises(vdeplug.VNLError, match="use aes or chacha"):
        vdeplug.open(f"seal://{key}[cipher=des]{{null://}}")
    if os.geteuid() == 0:
        os.chown(key, 65534, 65534)
        with pytest.raises(vdeplug.VNLError, match="belongs to uid 65534"):
            vdeplug.open(f"seal://{key}{{null://}}")


def _write_key(path: Path, *lines: str) -> None:
    tmp = path.with_suffix(".new")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.write(fd, "".join(f"{x}\n" for x in lines).encode())
    os.close(fd)
    os.replace(tmp, path)


def test_a_key_rolls_over_host_by_host_while_frames_flow(tmp_path):
    old, new = keygen(tmp_path / "old").read_text().strip(), keygen(tmp_path / "new").read_text().strip()
    ka, kb = tmp_path / "a.key", tmp_path / "b.key"
    _write_key(ka, old)
    _write_key(kb, old)
    pa, pb = free_udp_port(), free_udp_port()
    with vdeplug.open(f"seal://{ka}{{udp://{pa}->127.0.0.1:{pb}}}") as a, vdeplug.open(f"seal://{kb}{{udp://{pb}->127.0.0.1:{pa}}}") as b:
        n = 0

        def both_ways() -> None:
            nonlocal n
            for _ in range(3):
                n += 1
                a.send(frame(100, src=1, seed=n))
                assert b.recv(timeout=2) == frame(100, src=1, seed=n)
                b.send(frame(100, src=2, seed=n))
                assert a.recv(timeout=2) == frame(100, src=2, seed=n)

        def settle(c: vdeplug.Connection, reloads: int) -> None:
            deadline = time.monotonic() + 5
            while c.stats.extra["seal_key_reloads"] < reloads and time.monotonic() < deadline:
                try:
                    c.recv(timeout=0.1)
                except TimeoutError:
                    pass
            assert c.stats.extra["seal_key_reloads"] == reloads

        both_ways()
        for step, (la, lb) in enumerate([((old, new), (old, new)), ((new, old), (old, new)), ((new, old), (new, old)), ((new,), (new,))], 1):
            _write_key(ka, *la)
            settle(a, step)
            both_ways()
            _write_key(kb, *lb)
            settle(b, step)
            both_ways()
        assert a.stats.extra["seal_wrong_key"] == 0 and b.stats.extra["seal_wrong_key"] == 0
        _write_key(ka, old)  # a falls back alone: b no longer holds the old key
        settle(a, 5)
        a.send(frame(100, src=1, seed=999))
        with pytest.raises(TimeoutError):
            b.recv(timeout=0.5)
        assert b.stats.extra["seal_wrong_key"] == 1


def test_vde_plug_joins_sealed_links(tmp_path):
    """vde_plug A B with seal on one side: stdin/stdout framing to a sealed UDP link."""
    key = keygen(tmp_path / "k")
    pa, pb = free_udp_port(), free_udp_port()
    with vdeplug.open(f"seal://{key}{{udp://{pb}->127.0.0.1:{pa}}}") as b:
        p = subprocess.Popen([VDE_PLUG, f"seal://{key}{{udp://{pa}->127.0.0.1:{pb}}}"], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        try:
            time.sleep(0.5)
            f = frame(300, src=4)
            assert p.stdin is not None
            p.stdin.write(len(f).to_bytes(2, "big") + f)
            p.stdin.flush()
            assert b.recv(timeout=3) == f
        finally:
            p.terminate()
            p.wait(5)


@needs_lib
@needs_cc
def test_c_programs_on_our_library_talk_sealed(vdepeer, tmp_path):  # noqa: F811
    key = keygen(tmp_path / "k")
    pa, pb = free_udp_port(), free_udp_port()
    a = peer(vdepeer, f"seal://{key}{{udp://127.0.0.1:{pa}->127.0.0.1:{pb}}}", "pingpong", "1", "40", "20", ours=True)
    b = peer(vdepeer, f"seal://{key}{{udp://127.0.0.1:{pb}->127.0.0.1:{pa}}}", "pingpong", "2", "40", "20", ours=True)
    (rc1, out1), (rc2, out2) = finish(a), finish(b)
    assert rc1 == 0 and rc2 == 0, out1 + out2


@needs_netns
def test_tcp_over_sealed_vxvde_survives_an_attacker_on_the_segment(lan_factory, tmp_path):
    """Two hosts with taps on seal{vxvde}; a third joins the group and
    injects tampered, replayed, wrong-key and forged-sender datagrams as
    fast as it can while 50 MB of TCP cross: the transfer is intact, and
    the counters show each kind."""
    h1, h2, h3 = lan_factory(3, mtu=9000).hosts
    key = keygen(tmp_path / "k")
    vnl = f"seal://{key}{{vxvde://239.1.5.1}}"
    plugs = []
    for h, ip in ((h1, "192.168.55.1/24"), (h2, "192.168.55.2/24")):
        plugs.append(h.popen(VDE_PLUG, vnl, "tap://t0", stderr=subprocess.PIPE))
        h.wait_link("t0")
        h.run("ip", "link", "set", "t0", "mtu", "1400")
        h.addr("t0", ip)
    assert h1.ping("192.168.55.2")
    attacker = h3.popen(sys.executable, ATTACKER, "239.1.5.1", "14789", "8", stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    # Broadcasts go to the group, where the attacker records them.
    pinger = h1.popen("ping", "-b", "-i", "0.01", "-c", "300", "192.168.55.255", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1.5)  # the attacker has recorded traffic and is sending
    pinger.terminate()
    pinger.wait(5)
    server = h2.popen(sys.executable, XFER, "serve", "192.168.55.2", "5010", stdout=subprocess.PIPE, text=True)
    time.sleep(0.3)
    sent = h1.run(sys.executable, XFER, "send", "192.168.55.2", "5010", str(50 << 20), "5", timeout=120).stdout.strip()
    got, _ = server.communicate(timeout=60)
    assert sent == got.strip() and sent.startswith(str(50 << 20)), (sent, got)
    out, _ = attacker.communicate(timeout=30)
    assert "tampered=" in out and " forged=0" not in out, out
    assert "stolen=0" in out, f"an attacker's datagram moved a MAC to it: {out}"
    for p in plugs:
        p.send_signal(signal.SIGUSR1)
    time.sleep(0.3)
    stats = []
    for p in plugs:
        p.terminate()
        _, err = p.communicate(timeout=10)
        stats.append(err.decode())
    for kind in ("bad_tag", "replayed", "wrong_key"):
        assert all(re.search(rf"'seal_{kind}': [1-9]", s) for s in stats), (kind, stats)
    assert all(re.search(r"'seal_sessions': [12],", s) for s in stats), stats

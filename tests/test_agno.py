"""agno://KEYFILE{VNL} against Debian's libvdeplug_agno, the reference peer:
Debian's C vde_plug on one side of a UDP link on loopback (through a relay
that records and injects datagrams), ours on the other (vdeplug.open, our
vde_plug, a C program on our libvdeplug.so.2); taps in namespaces over
vxvde; key files, ethtype modes, the time window, and the frames the C
would mangle."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import vdeplug
from conftest import C_VDE_PLUG, VDE_PLUG, StreamPeer, frame, free_udp_port
from netns import needs_netns
from relay import Relay
from test_libvdeplug import OURS, finish, lib_of, needs_cc, needs_lib, peer, vdepeer  # noqa: F401 (vdepeer: a fixture)

AGNO_SO = Path("/usr/lib/x86_64-linux-gnu/vdeplug/libvdeplug_agno.so")
needs_agno = pytest.mark.skipif(
    not (AGNO_SO.exists() and os.path.exists(C_VDE_PLUG)),
    reason="Debian's agno plugin is not installed (apt-get install vdeplug libvdeplug-agno)",
)
KEY = "00112233445566778899aabbccddeeff"
SIZES = [60, 333, 1514]
OUTER = {"": 0xA6DE, "copy": 0x88B5, "ipv4": 0x0800, "ipv6": 0x86DD, "0x900": 0x0900, "04000": 0x0800}


def write_key(path: Path, text: str = KEY + "\n") -> Path:
    path.write_text(text)
    return path


def wire_len(n: int) -> int:
    return (n + 2 + 15) // 16 * 16 + 14


@pytest.fixture
def relay() -> Iterator[Relay]:
    r = Relay()
    yield r
    r.close()


def c_end(key: Path, relay: Relay, opts: str = "") -> StreamPeer:
    """Debian's vde_plug with Debian's agno plugin, as end "b" of the relay."""
    p = StreamPeer([C_VDE_PLUG, f"agno://{key}{opts}{{{relay.vnl('b')}}}"])
    time.sleep(0.3)  # its socket is bound
    return p


def our_stats(p: subprocess.Popen[bytes]) -> str:
    """Our vde_plug's counters (SIGUSR1), then it is ended."""
    p.send_signal(signal.SIGUSR1)
    time.sleep(0.3)
    p.terminate()
    _, err = p.communicate(timeout=10)
    return err.decode()


def drain(c: vdeplug.Connection) -> None:
    """Let the relay deliver what is in flight, so the counters are final."""
    time.sleep(0.2)
    with pytest.raises(TimeoutError):
        c.recv(timeout=0.1)


# ---------------------------------------------------------------- with Debian's plugin


@needs_agno
@pytest.mark.parametrize("ethtype", ["", "copy", "ipv4", "ipv6", "rand", "0x900", "04000"])
@pytest.mark.parametrize("ours", ["python", "vde_plug"])
def test_frames_cross_both_ways_with_debian_in_every_ethtype_mode(tmp_path, relay, ours, ethtype, stream_peers):
    key = write_key(tmp_path / "k")
    opts = f"[ethtype={ethtype}]" if ethtype else ""
    c = c_end(key, relay, opts)
    stream_peers.append(c)
    vnl = f"agno://{key}{opts}{{{relay.vnl('a')}}}"
    if ours == "python":
        end: vdeplug.Connection | StreamPeer = vdeplug.open(vnl)
    else:
        end = StreamPeer([VDE_PLUG, vnl])
        stream_peers.append(end)
        time.sleep(0.3)
    try:
        for size in SIZES:
            f = frame(size, src=1)
            end.send(f)
            assert c.recv() == f, f"ours -> Debian, {size} bytes"
            g = frame(size, src=2)
            c.send(g)
            assert end.recv(timeout=5) == g, f"Debian -> ours, {size} bytes"
        # Our agno did it (not Debian's plugin, which a C plugin search would find).
        if isinstance(end, vdeplug.Connection):
            x = end.stats.extra
            assert (x["agno_encoded"], x["agno_decoded"]) == (3, 3), x
        else:
            err = our_stats(end.proc)
            assert "'agno_encoded': 3," in err and "'agno_decoded': 3," in err, err
    finally:
        if isinstance(end, vdeplug.Connection):
            end.close()
    for side, src in (("a", 1), ("b", 2)):
        wires = relay.sent_by(side)
        assert [len(w) for w in wires] == [wire_len(n) for n in SIZES], side
        types = [int.from_bytes(w[12:14], "big") for w in wires]
        if ethtype == "rand":
            assert all(0x600 <= t <= 0xFFFE for t in types) and len(set(types)) > 1, (side, types)
        else:
            assert types == [OUTER[ethtype]] * len(SIZES), (side, [hex(t) for t in types])
        for w, n in zip(wires, SIZES):
            f = frame(n, src=src)
            assert w[:12] == f[:12], "MACs in clear"
            assert f[30:60] not in w, "the payload is encrypted"


@needs_agno
def test_a_wrong_key_delivers_nothing_either_way_and_is_counted(tmp_path, relay, stream_peers):
    c = c_end(write_key(tmp_path / "k"), relay)
    stream_peers.append(c)
    other = write_key(tmp_path / "other", "ffeeddccbbaa99887766554433221100\n")
    with vdeplug.open(f"agno://{other}{{{relay.vnl('a')}}}") as ours:
        for size in SIZES:
            ours.send(frame(size, src=1))
            c.send(frame(size, src=2))
        with pytest.raises(TimeoutError):
            ours.recv(timeout=0.5)
        with pytest.raises(TimeoutError):
            c.recv(timeout=0.3)
        x = ours.stats.extra
        assert x["agno_bad_magic"] == len(SIZES) and x["agno_decoded"] == 0, x
    assert len(relay.sent_by("a")) == len(SIZES) and len(relay.sent_by("b")) == len(SIZES), "both sent"


@needs_agno
@pytest.mark.parametrize(
    "text,key",
    [
        ("00112233445566778899AABBCCDDEEFF\n", "0011223344556677889911bbccddeeff"),  # uppercase A reads as 1
        ("0x12 34-56:zz 78\n9\n", "01234567890000000000000000000000"),  # only hex digits count, 0x's 0 too
        ("secret\n", "ece00000000000000000000000000000"),  # the rest is zeros
        ("123", "12300000000000000000000000000000"),  # an odd digit is a high nibble
        (KEY + "0123456789\n", KEY),  # digits after the 32nd are ignored
    ],
    ids=["uppercase", "separators", "word", "odd", "long"],
)
def test_key_files_give_the_key_debian_reads(tmp_path, relay, stream_peers, text, key):
    """Ours reads the odd key file; Debian reads the key it should give,
    written plainly: frames cross only if both derive the same key."""
    c = c_end(write_key(tmp_path / "plain", key + "\n"), relay)
    stream_peers.append(c)
    with vdeplug.open(f"agno://{write_key(tmp_path / 'odd', text)}{{{relay.vnl('a')}}}") as ours:
        f, g = frame(100, src=1), frame(100, src=2)
        ours.send(f)
        assert c.recv() == f
        c.send(g)
        assert ours.recv(timeout=5) == g
        assert ours.stats.extra["agno_decoded"] == 1


def test_uppercase_and_short_key_files_are_warned_about(tmp_path, capfd):
    upper = write_key(tmp_path / "upper", KEY.upper() + "\n")
    with vdeplug.open(f"agno://{upper}{{null://}}"):
        pass
    err = capfd.readouterr().err
    assert "uppercase hex digits" in err and "'A' as 1" in err and "not the bytes its hex says" in err, err
    with vdeplug.open(f"agno://{write_key(tmp_path / 'short', 'abcd')}{{null://}}"):
        pass
    assert "4 hex digits of 32" in capfd.readouterr().err
    with vdeplug.open(f"agno://{write_key(tmp_path / 'lower')}{{null://}}"):
        pass
    assert capfd.readouterr().err == ""


@needs_agno
def test_replays_pass_within_the_time_window_only(tmp_path, relay, stream_peers):
    """Debian's frame stamped at second t is taken at t-1 … t+2 of our
    clock: replayed meanwhile, it is delivered again (agno has no replay
    protection, as the C); at t+3 it is dropped and counted."""
    c = c_end(write_key(tmp_path / "k"), relay)
    stream_peers.append(c)
    with vdeplug.open(f"agno://{tmp_path / 'k'}{{{relay.vnl('a')}}}") as ours:
        g = frame(200, src=2)
        c.send(g)
        assert ours.recv(timeout=5) == g
        _, wire, seen = next(s for s in relay.seen if s[0] == relay.b)
        relay.inject(wire, "a")
        assert ours.recv(timeout=2) == g, "a replay within the window is delivered"
        time.sleep(max(0.0, int(seen) + 3.05 - time.time()))
        relay.inject(wire, "a")
        drain(ours)
        x = ours.stats.extra
        assert (x["agno_decoded"], x["agno_outside_window"]) == (2, 1), x


@needs_agno
def test_vnl_errors_name_the_part_and_debian_refuses_them_too(tmp_path):
    key = write_key(tmp_path / "k")
    write_key(tmp_path / "one", "1")
    cases = [
        (f"agno://{key}[ethtype=COPY]{{null://}}", vdeplug.VNLError, r"bad ethtype=\"COPY\".*use copy, ipv4, ipv6, rand"),
        (f"agno://{key}[ethtype=800]{{null://}}", vdeplug.VNLError, r"800 \(0x320\) is not an EtherType.*0x… is hex"),
        (f"agno://{key}[ethtype=0xffff]{{null://}}", vdeplug.VNLError, r"65535 \(0xffff\) is not an EtherType"),
        (f"agno://{key}[copy]{{null://}}", vdeplug.VNLError, r"unknown option \"copy\" for agno:// \(known: ethtype\)"),
        ("agno://k{null://}", vdeplug.VNLError, r"must be an absolute path or start with ~"),
        (f"agno://{tmp_path / 'one'}{{null://}}", vdeplug.VNLError, r"holds 1 hex digits; it needs at least 2"),
        (f"agno://{tmp_path / 'none'}{{null://}}", FileNotFoundError, r"cannot read key file .*none"),
    ]
    for vnl, exc, msg in cases:
        with pytest.raises(exc, match=msg):
            vdeplug.open(vnl)
        r = subprocess.run([C_VDE_PLUG, vnl, "null://"], capture_output=True, text=True, timeout=10)
        assert r.returncode == 1 and "vde_open" in r.stderr, (vnl, r.stderr)
    # What Debian accepts, we accept: prefixes, octal, trailing text, the default key file's ~.
    for opts in ("[e=ipv4]", "[ethtype=04000]", "[ethtype=0x800zz]", "[ethtype]", "[ethtype=rand]junk"):
        vdeplug.open(f"agno://{key}{opts}{{null://}}").close()


# ---------------------------------------------------------------- ours alone


def test_frames_debian_would_mangle_are_dropped_and_counted(tmp_path, relay):
    key = write_key(tmp_path / "k")
    with vdeplug.open(f"agno://{key}{{{relay.vnl('a')}}}") as a, vdeplug.open(f"agno://{key}{{{relay.vnl('b')}}}") as b:
        f = frame(60, src=1)
        a.send(f)
        assert b.recv(timeout=5) == f
        w = relay.sent_by("a")[0]
        assert len(w) == 78
        flipped = bytearray(w)
        flipped[-17] ^= 1  # the last plain byte, a pad byte, flips with it
        bad = {
            "too_short": [w[:14], w[:29]],  # 14 bytes after a valid frame crash Debian's plugin
            "bad_length": [w[:31], w[:-4], frame(60, src=9)],  # not whole blocks (a frame in clear too)
            "bad_magic": [frame(62, src=9)],
            "bad_padding": [bytes(flipped)],
        }
        for datagrams in bad.values():
            for d in datagrams:
                relay.inject(d, "b")
        time.sleep(0.2)
        g = frame(61, src=1)
        a.send(g)
        assert b.recv(timeout=5) == g, "the next valid frame gets through"
        drain(b)
        x = b.stats.extra
        assert {k: x[f"agno_{k}"] for k in bad} == {k: len(v) for k, v in bad.items()}, x
        assert x["agno_decoded"] == 2


def test_frames_too_big_for_a_buffer_are_dropped_and_counted(tmp_path, relay):
    key = write_key(tmp_path / "k")
    with vdeplug.open(f"agno://{key}{{{relay.vnl('a')}}}") as a, vdeplug.open(f"agno://{key}{{{relay.vnl('b')}}}") as b:
        big = frame(9214, src=1)
        assert a.send(big) == 9214
        assert b.recv(timeout=5) == big, "the largest frame that fits (9230 bytes on the wire)"
        assert a.send(frame(9215, src=1)) == 0
        x = a.stats
        assert x.extra["agno_too_big"] == 1 and x.drops_out == 1 and x.extra["agno_encoded"] == 1, x


# ---------------------------------------------------------------- C programs and namespaces


@needs_agno
@needs_lib
@needs_cc
def test_c_program_on_our_library_talks_to_debians_agno(vdepeer, tmp_path):  # noqa: F811
    """vdepeer on our libvdeplug.so.2 (our agno) against vdepeer on
    Debian's (its libvdeplug_agno.so): 40 frames of 60…1514 bytes each way.
    Ours reads an uppercase key file, Debian the key it gives: our warning
    shows our agno ran (a C plugin search would find Debian's)."""
    upper = write_key(tmp_path / "upper", KEY.upper() + "\n")
    plain = write_key(tmp_path / "plain", "0011223344556677889911bbccddeeff\n")
    pa, pb = free_udp_port(), free_udp_port()
    ours = peer(vdepeer, f"agno://{upper}{{udp://127.0.0.1:{pa}->127.0.0.1:{pb}}}", "pingpong", "1", "40", "20", ours=True)
    deb = peer(vdepeer, f"agno://{plain}{{udp://127.0.0.1:{pb}->127.0.0.1:{pa}}}", "pingpong", "2", "40", "20", ours=False)
    (rc1, out1), (rc2, out2) = finish(ours), finish(deb)
    assert rc1 == 0 and rc2 == 0, out1 + out2
    assert lib_of(out1) == os.path.realpath(OURS) and lib_of(out2) != lib_of(out1)
    assert "agno: key file" in out1 and "uppercase" in out1, out1


@needs_agno
@needs_netns
def test_taps_ping_over_agno_vxvde_debian_and_ours_in_namespaces(lan_factory, tmp_path):
    h1, h2 = lan_factory(2).hosts
    key = write_key(tmp_path / "k")
    vnl = f"agno://{key}{{vxvde://239.5.7.1}}"
    plugs = []
    for h, exe, ip in ((h1, C_VDE_PLUG, "192.168.57.1/24"), (h2, VDE_PLUG, "192.168.57.2/24")):
        plugs.append(h.popen(exe, vnl, "tap://t0", stderr=subprocess.PIPE))
        h.wait_link("t0")
        h.addr("t0", ip)
    assert h1.ping("192.168.57.2"), "Debian -> ours"
    assert h2.ping("192.168.57.1"), "ours -> Debian"
    err = our_stats(plugs[1])
    assert re.search(r"'agno_decoded': [1-9]", err) and re.search(r"'agno_encoded': [1-9]", err), err

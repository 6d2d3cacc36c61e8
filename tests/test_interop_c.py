"""Interop with Debian's C vdeplug4 (4.0.1): frames of 60..1514 bytes must
arrive byte-identical in both directions."""

from __future__ import annotations

import os
import subprocess
import time

import vdeplug
from conftest import (
    C_DPIPE,
    C_VDE_PLUG,
    DPIPE,
    SIZES,
    VDE_PLUG,
    StreamPeer,
    frame,
    free_udp_port,
    needs_c,
    wait_for,
)

pytestmark = needs_c


def exchange(ours: vdeplug.Connection, peer: StreamPeer) -> None:
    for size in SIZES:
        f = frame(size, src=1)
        assert ours.send(f) == size
        assert peer.recv() == f, f"ours->C {size}"
        g = frame(size, src=2)
        peer.send(g)
        assert ours.recv(timeout=5) == g, f"C->ours {size}"


def test_ptp_with_c_c_first(tmp_path, stream_peers):
    path = str(tmp_path / "link")
    peer = StreamPeer([C_VDE_PLUG, f"ptp://{path}"])
    stream_peers.append(peer)
    wait_for(lambda: os.path.exists(path), what="C ptp socket")
    with vdeplug.open(f"ptp://{path}") as c:
        exchange(c, peer)
    assert not os.path.exists(path + "+"), "our socket file is removed at close"


def test_ptp_with_c_ours_first(tmp_path, stream_peers):
    path = str(tmp_path / "link")
    with vdeplug.open(f"ptp://{path}") as c:
        assert os.path.exists(path)
        peer = StreamPeer([C_VDE_PLUG, f"ptp://{path}"])
        stream_peers.append(peer)
        wait_for(lambda: os.path.exists(path + "+"), what="C ptp socket")
        # We only learn the C side's address once it speaks (as C does).
        peer.send(frame(60, src=9))
        assert c.recv(timeout=5) == frame(60, src=9)
        exchange(c, peer)


def test_udp_with_c(stream_peers):
    p1, p2 = free_udp_port(), free_udp_port()
    peer = StreamPeer([C_VDE_PLUG, f"udp://127.0.0.1:{p2}->127.0.0.1:{p1}"])
    stream_peers.append(peer)
    time.sleep(0.3)
    with vdeplug.open(f'udp://"127.0.0.1:{p1}->localhost:{p2}"') as c:
        exchange(c, peer)


def test_our_stream_mode_with_c_stream_through_dpipe(tmp_path, stream_peers):
    """C ptp end in stream mode <-dpipe-> our stream mode <-> ... : our
    ``vde_plug ptp://A`` and C ``vde_plug ptp://B`` joined by dpipe, frames
    injected at both far ends."""
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    for tool in (C_DPIPE, DPIPE):
        proc = subprocess.Popen([tool, VDE_PLUG, f"ptp://{a}", "=", C_VDE_PLUG, f"ptp://{b}"])
        try:
            wait_for(lambda: os.path.exists(a) and os.path.exists(b), what="both ptp sockets")
            with vdeplug.open(f"ptp://{a}") as ca, vdeplug.open(f"ptp://{b}") as cb:
                # The far ends learn each other's sockets from a first frame.
                for size in SIZES:
                    f, g = frame(size, src=1), frame(size, src=2)
                    assert ca.send(f) == size
                    assert cb.recv(timeout=5) == f, f"{tool}: ours->C {size}"
                    assert cb.send(g) == size
                    assert ca.recv(timeout=5) == g, f"{tool}: C->ours {size}"
        finally:
            proc.terminate()
            proc.wait(5)
        wait_for(lambda: not os.path.exists(a) and not os.path.exists(b), what="socket cleanup")


def test_stream_framing_byte_identical_to_c(tmp_path, stream_peers):
    """Our stream mode and C's stream mode on the two ends of one ptp link:
    the bytes written to one stdin come out of the other stdout unchanged."""
    path = str(tmp_path / "link")
    c_side = StreamPeer([C_VDE_PLUG, f"ptp://{path}"])
    stream_peers.append(c_side)
    wait_for(lambda: os.path.exists(path), what="C ptp socket")
    our_side = StreamPeer([VDE_PLUG, f"ptp://{path}"])
    stream_peers.append(our_side)
    wait_for(lambda: os.path.exists(path + "+"), what="our ptp socket")
    for size in SIZES:
        f, g = frame(size, src=3), frame(size, src=4)
        our_side.send(f)
        assert c_side.recv() == f
        c_side.send(g)
        assert our_side.recv() == g


def test_vde_plug_equals_runs_c_vde_plug(tmp_path):
    """``vde_plug ptp://A = vde_plug ptp://B`` (ours running C as the command)."""
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    proc = subprocess.Popen([VDE_PLUG, f"ptp://{a}", "=", C_VDE_PLUG, f"ptp://{b}"], stderr=subprocess.PIPE)
    try:
        wait_for(lambda: os.path.exists(a) and os.path.exists(b), what="both ptp sockets")
        with vdeplug.open(f"ptp://{a}") as ca, vdeplug.open(f"ptp://{b}") as cb:
            for size in SIZES:
                f, g = frame(size, src=5), frame(size, src=6)
                ca.send(f)
                assert cb.recv(timeout=5) == f
                cb.send(g)
                assert ca.recv(timeout=5) == g
    finally:
        proc.terminate()
        assert proc.wait(5) == 0, proc.stderr.read() if proc.stderr else ""
    assert not os.path.exists(a) and not os.path.exists(b)


def test_c_vde_plug_in_cmd_url(tmp_path):
    """cmd:// running the C vde_plug, through the Python API."""
    b = str(tmp_path / "b")
    with vdeplug.open(f"cmd://{C_VDE_PLUG} ptp://{b}") as c:
        wait_for(lambda: os.path.exists(b), what="C ptp socket")
        with vdeplug.open(f"ptp://{b}") as cb:
            f = frame(1514, src=7)
            cb.send(f)
            assert c.recv(timeout=5) == f
            g = frame(60, src=8)
            c.send(g)
            assert cb.recv(timeout=5) == g
    wait_for(lambda: not os.path.exists(b), what="C vde_plug ended and removed its socket")


def burst_frames() -> list[bytes]:
    """Runs of equal sizes (which our relay sends with UDP GSO) and odd sizes."""
    sizes = [64] * 20 + [500] * 15 + [1514] * 10 + [60, 61, 1514, 62, 1000, 1000, 999, 64]
    return [frame(s, src=0x40, seed=i) for i, s in enumerate(sizes)]


def test_udp_bursts_reach_c_intact_and_in_order(tmp_path, stream_peers):
    """Our relay batches (sendmmsg + UDP GSO); C must still get every frame."""
    p_ours, p_c = free_udp_port(), free_udp_port()
    link = str(tmp_path / "l")
    c = StreamPeer([C_VDE_PLUG, f"udp://127.0.0.1:{p_c}->127.0.0.1:{p_ours}"])
    stream_peers.append(c)
    relay = subprocess.Popen([VDE_PLUG, f"ptp://{link}", f"udp://127.0.0.1:{p_ours}->127.0.0.1:{p_c}"])
    try:
        wait_for(lambda: os.path.exists(link), what="relay")
        with vdeplug.open(f"ptp://{link}") as src:
            frames = burst_frames()
            for f in frames:
                assert src.send(f) == len(f)
            got = [c.recv() for _ in frames]
            assert got == frames
    finally:
        relay.terminate()
        relay.wait(5)

"""The Python API over every plugin of the foundation: null, ptp, udp, cmd,
stream; fileno() with selectors and asyncio; counters; bad frames."""

from __future__ import annotations

import asyncio
import os
import selectors
import sys

import pytest
import vdeplug
from conftest import SIZES, VDE_PLUG, frame, free_udp_port, wait_for
from vdeplug import _core


def test_null():
    with vdeplug.open("null://") as c:
        assert c.send(frame(60)) == 60
        with pytest.raises(TimeoutError):
            c.recv(timeout=0.05)
        assert c.recv_nowait() is None
        assert c.stats.frames_out == 1
    assert c.closed


def test_ptp_pair(tmp_path):
    path = str(tmp_path / "l")
    with vdeplug.open(f"ptp://{path}") as a, vdeplug.open(f"ptp://{path}") as b:
        b.send(frame(60, src=2))  # the second end is connected at once
        assert a.recv(timeout=2) == frame(60, src=2)
        for size in SIZES:
            assert a.send(frame(size, src=1)) == size
            assert b.recv(timeout=2) == frame(size, src=1)
        assert a.stats.frames_out == len(SIZES) and b.stats.frames_in == len(SIZES)
        assert b.stats.bytes_in == sum(SIZES)
    assert not os.path.exists(path) and not os.path.exists(path + "+")


def test_ptp_stale_socket_replaced(tmp_path):
    import socket

    path = str(tmp_path / "l")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(path)
    s.close()  # leaves a file nobody listens on
    with vdeplug.open(f"ptp://{path}") as a, vdeplug.open(f"ptp://{path}") as b:
        b.send(frame(64))
        assert a.recv(timeout=2) == frame(64)


def test_ptp_third_end_refused(tmp_path):
    path = str(tmp_path / "l")
    with vdeplug.open(f"ptp://{path}"), vdeplug.open(f"ptp://{path}"), pytest.raises(OSError, match="both ends"):
        vdeplug.open(f"ptp://{path}")


def test_ptp_mode(tmp_path):
    path = str(tmp_path / "l")
    with vdeplug.open(f"ptp://{path}", mode=0o660):
        assert os.stat(path).st_mode & 0o777 == 0o660


def test_udp_pair_and_ipv6():
    for host in ("127.0.0.1", "::1"):
        p1, p2 = free_udp_port(), free_udp_port()
        h = f"[{host}]" if ":" in host else host
        with vdeplug.open(f"udp://{h}:{p1}->{h}:{p2}") as a, vdeplug.open(f"udp://{h}:{p2}->{h}:{p1}") as b:
            for size in SIZES:
                a.send(frame(size))
                assert b.recv(timeout=2) == frame(size)
                b.send(frame(size, src=5))
                assert a.recv(timeout=2) == frame(size, src=5)


def test_udp_bad_address():
    with pytest.raises(vdeplug.VNLError) as e:
        vdeplug.open("udp://5000-localhost:5001")
    assert "->" in str(e.value)
    with pytest.raises(vdeplug.VNLError) as e:
        vdeplug.open("udp://5000->localhost:http")
    assert e.value.part == "localhost:http"
    with pytest.raises(vdeplug.VNLError):
        vdeplug.open("udp://5000->no.such.host.invalid:5001")


def test_malformed_frames_counted_and_dropped():
    p1, p2 = free_udp_port(), free_udp_port()
    import socket

    with vdeplug.open(f"udp://127.0.0.1:{p1}->127.0.0.1:{p2}") as a:
        assert a.send(b"short") == 0
        assert a.send(b"\x00" * (vdeplug.ETH_BUFSIZE + 1)) == 0
        assert a.stats.drops_out == 2
        raw = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        raw.bind(("127.0.0.1", p2))
        raw.sendto(b"runt", ("127.0.0.1", p1))
        raw.sendto(b"\x01" * 9300, ("127.0.0.1", p1))  # oversized (jumbo max is 9234)
        raw.sendto(frame(60), ("127.0.0.1", p1))
        assert a.recv(timeout=2) == frame(60)
        assert a.stats.drops_in == 2 and a.stats.frames_in == 1
        raw.close()


def test_cmd_runs_our_vde_plug(tmp_path):
    link = str(tmp_path / "l")
    with vdeplug.open(f"cmd://{VDE_PLUG} ptp://{link}") as c:
        wait_for(lambda: os.path.exists(link), what="child ptp socket")
        with vdeplug.open(f"ptp://{link}") as p:
            for size in SIZES:
                p.send(frame(size))
                assert c.recv(timeout=5) == frame(size)
                c.send(frame(size, src=3))
                assert p.recv(timeout=5) == frame(size, src=3)
    wait_for(lambda: not os.path.exists(link), what="child exit")


def test_cmd_child_exit_is_hangup():
    with vdeplug.open("cmd://true") as c:
        assert c.recv(timeout=5) == b""
        assert c.endpoint.exit_status() == 0
    with vdeplug.open("cmd://sh -c 'exit 3'") as c:
        assert c.recv(timeout=5) == b""
        assert c.endpoint.exit_status() == 3


def test_cmd_missing_program():
    with pytest.raises(FileNotFoundError, match="no-such-program"):
        vdeplug.open("cmd://no-such-program-xyz")


def test_stream_endpoint_buffers_many_frames_and_wakes_selectors():
    """Several frames in one pipe write: fileno() stays readable until all
    of them were received (epoll + eventfd)."""
    r_in, w_in = os.pipe()
    r_out, w_out = os.pipe()
    ep = _core.open_stream(r_in, w_out)
    os.close(r_in)
    os.close(w_out)
    c = vdeplug.Connection(ep, "stream")
    blob = b"".join(len(frame(s)).to_bytes(2, "big") + frame(s) for s in SIZES)
    os.write(w_in, blob)
    got = []
    with selectors.DefaultSelector() as sel:
        sel.register(c.fileno(), selectors.EVENT_READ)
        while len(got) < len(SIZES):
            assert sel.select(2), "fileno() not readable while frames are buffered"
            got.append(c.recv(timeout=0))
    assert got == [frame(s) for s in SIZES]
    assert not sel_ready(c.fileno())
    c.send(frame(60))
    assert os.read(r_out, 100) == b"\x00\x3c" + frame(60)
    os.close(w_in)
    assert c.recv(timeout=2) == b""
    c.close()
    os.close(r_out)


def sel_ready(fd: int) -> bool:
    import select

    return bool(select.select([fd], [], [], 0)[0])


def test_asyncio_add_reader(tmp_path):
    path = str(tmp_path / "l")

    async def main() -> bytes:
        loop = asyncio.get_running_loop()
        with vdeplug.open(f"ptp://{path}") as a, vdeplug.open(f"ptp://{path}") as b:
            fut: asyncio.Future[bytes] = loop.create_future()

            def ready() -> None:
                f = a.recv_nowait()
                if f and not fut.done():
                    fut.set_result(f)

            loop.add_reader(a.fileno(), ready)
            b.send(frame(200))
            try:
                return await asyncio.wait_for(fut, 5)
            finally:
                loop.remove_reader(a.fileno())

    assert asyncio.run(main()) == frame(200)


def test_closed_connection_errors():
    c = vdeplug.open("null://")
    c.close()
    with pytest.raises(ValueError, match="closed"):
        c.send(frame(60))
    with pytest.raises(ValueError, match="closed"):
        c.fileno()


def test_join_in_python_api(tmp_path):
    """vdeplug.join runs the Rust loop; it ends when one side hangs up."""
    import threading

    a_path, b_path = str(tmp_path / "a"), str(tmp_path / "b")
    with vdeplug.open(f"ptp://{a_path}") as a, vdeplug.open(f"cmd://{sys.executable} -m vdeplug ptp://{b_path}") as b:
        result: list = []
        t = threading.Thread(target=lambda: result.append(vdeplug.join(a, b)))
        t.start()
        wait_for(lambda: os.path.exists(b_path), what="child")
        with vdeplug.open(f"ptp://{a_path}") as x, vdeplug.open(f"ptp://{b_path}") as y:
            x.send(frame(1000))
            assert y.recv(timeout=5) == frame(1000)
            y.send(frame(999, src=4))
            assert x.recv(timeout=5) == frame(999, src=4)
        b.endpoint.close()  # kills the child; join sees the hang-up
        t.join(5)
        assert result and result[0].closed
        assert a.stats.frames_in == 1 and a.stats.frames_out == 1


def test_ptp_new_second_end_after_the_old_one_died(tmp_path):
    """The first end stays associated with a dead second end (kernel EPERM
    for newcomers) until it sends; a new second end must still open and the
    link must recover as soon as the first end speaks."""
    path = str(tmp_path / "l")
    with vdeplug.open(f"ptp://{path}") as first:
        old = vdeplug.open(f"ptp://{path}")
        old.send(frame(60, src=1))
        assert first.recv(timeout=2) == frame(60, src=1)
        first.send(frame(61))  # first end now associated with `old`
        assert old.recv(timeout=2) == frame(61)
        old.close()
        with vdeplug.open(f"ptp://{path}") as new:
            first.send(frame(62))  # ECONNREFUSED inside: re-associates with `new`
            assert new.recv(timeout=2) == frame(62)
            new.send(frame(63, src=3))
            assert first.recv(timeout=2) == frame(63, src=3)


def test_recv_many_returns_up_to_n_beyond_one_batch(tmp_path):
    """recv_many(n) with n above the 64 of one recvmmsg: as many as are ready, up to n."""
    path = str(tmp_path / "l")
    with vdeplug.open(f"ptp://{path}") as a, vdeplug.open(f"ptp://{path}") as b:
        frames = [frame(60 + i % 40, src=1) for i in range(150)]
        assert a.send_many(frames) == 150
        got = b.recv_many(200, timeout=2)
        assert got == frames
        a.send_many(frames[:100])
        assert b.recv_many(70, timeout=2) == frames[:70]
        assert b.recv_many(70, timeout=2) == frames[70:100]
        with pytest.raises(TimeoutError):
            b.recv_many(10, timeout=0.05)

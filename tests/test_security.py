"""Security: each attack of the adversarial audit (issue 12), reproduced.
Another local user (``nobody``, via a forked child or ``setpriv``) attacks a
switch, a link or a plug run by root; garbage, silent clients, signals at
bad moments and Python API misuse must neither hijack, lock out, hang,
freeze nor crash anything."""

from __future__ import annotations

import errno
import math
import os
import shutil
import signal
import socket
import stat
import struct
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import vdeplug
from conftest import VDE_PLUG, frame, free_udp_port, needs_root, read_exact, wait_for
from test_overlay_unicast import drain
from test_reliability import Plug, rss_kb

NOBODY = 65534

needs_setpriv = pytest.mark.skipif(os.geteuid() != 0 or not os.path.exists("/usr/bin/setpriv"), reason="needs root and setpriv (util-linux)")


def as_user(*argv: str, **kw) -> subprocess.Popen:
    """A command run as nobody (the hostile local user)."""
    return subprocess.Popen(["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", *argv], **kw)


def vde_request(sock_path: str, port: int = 0, descr: bytes = b"attacker") -> bytes:
    """A vde_switch v3 request (wire/vde_ctl.rs): magic, version, type, sockaddr_un, descr."""
    sun = struct.pack("=H", socket.AF_UNIX) + sock_path.encode().ljust(108, b"\0")
    return struct.pack("=IIi", 0xFEEDFACE, 3, port << 8) + sun + descr


def private_dir(tmp_path: Path) -> Path:
    os.chmod(tmp_path, 0o755)  # others may look in, not write
    return tmp_path


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory under /tmp that the other user can reach (pytest's
    tmp_path sits in a 0700 directory of root's)."""
    d = Path(tempfile.mkdtemp(prefix="vdeplug-sec-", dir="/tmp"))
    os.chmod(d, 0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


# ---------------------------------------------------------------- 1, 2: the switch directory


@needs_root
def test_switch_refuses_a_directory_of_another_user(tmp_path):
    d = private_dir(tmp_path) / "sw"
    d.mkdir()
    os.chown(d, NOBODY, NOBODY)
    os.chmod(d, 0o777)
    r = subprocess.run([VDE_PLUG, "null://", f"switch://{d}"], capture_output=True, text=True, timeout=10)
    assert r.returncode == 1
    assert "belongs to uid 65534" in r.stderr and "File exists" in r.stderr, r.stderr
    assert os.listdir(d) == [], "nothing was created in the attacker's directory"


@needs_root
def test_default_switch_path_planted_by_another_user_is_refused(tmp_path):
    user = f"sectest{os.getpid()}"
    d = Path(f"/tmp/vdenode_{user}")
    d.mkdir(mode=0o777)
    try:
        os.chown(d, NOBODY, NOBODY)
        env = dict(os.environ, LOGNAME=user, USER=user)
        r = subprocess.run([VDE_PLUG, "null://", "switch://"], capture_output=True, text=True, timeout=10, env=env)
        assert r.returncode == 1 and "refusing to use it" in r.stderr, r.stderr
    finally:
        os.rmdir(d)


def test_switch_refuses_our_directory_when_others_can_replace_files(tmp_path):
    d = tmp_path / "sw"
    d.mkdir()
    os.chmod(d, 0o777)
    r = subprocess.run([VDE_PLUG, "null://", f"switch://{d}"], capture_output=True, text=True, timeout=10)
    assert r.returncode == 1 and "writable by others without the sticky bit" in r.stderr, r.stderr
    os.chmod(d, 0o1777)  # sticky: others may add, never replace ours
    plug = Plug(tmp_path, "null://", f"switch://{d}")
    try:
        wait_for(lambda: (d / "ctl").exists(), what="switch in a sticky directory")
    finally:
        assert plug.stop() == 0


@needs_root
def test_symlink_at_switch_path_is_never_followed(tmp_path):
    victim = private_dir(tmp_path) / "victim"
    victim.mkdir()
    (victim / "ctl").write_text("root's file\n")
    link = tmp_path / "sw"
    link.symlink_to(victim)
    r = subprocess.run([VDE_PLUG, "null://", f"switch://{link}"], capture_output=True, text=True, timeout=10)
    assert r.returncode == 1 and "is a symbolic link" in r.stderr, r.stderr
    assert (victim / "ctl").read_text() == "root's file\n", "the target's ctl was not deleted"
    assert sorted(os.listdir(victim)) == ["ctl"]


def test_world_writable_switch_gets_the_sticky_bit(tmp_path):
    d = tmp_path / "sw"
    with vdeplug.open(f"switch://{d}[mode=0666]"):
        m = d.stat().st_mode
        assert m & 0o777 == 0o777 and m & stat.S_ISVTX, oct(m)
        assert stat.S_IMODE((d / "ctl").stat().st_mode) == 0o666


# ---------------------------------------------------------------- 3, 4, 5: lockouts


def test_silent_clients_never_lock_the_switch_out(tmp_path):
    d = tmp_path / "sw"
    plug = Plug(tmp_path, "null://", f"switch://{d}")
    silent = []
    try:
        wait_for(lambda: (d / "ctl").exists(), what="switch")
        for _ in range(40):  # more than the 32 pending handshakes kept
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(str(d / "ctl"))
            silent.append(s)
        t0 = time.monotonic()
        with vdeplug.open(f"vde://{d}") as c:  # qemu's place in the queue
            assert c.send(frame(60)) == 60
        assert time.monotonic() - t0 < 2
        _, node = plug.counters()
        assert node["joins"] == 1 and node["pending"] <= 32
        # Handshakes have a deadline: the silent ones are closed within ~3 s.
        wait_for(lambda: plug.counters()[1]["pending"] == 0, timeout=6, what="pending handshakes expired")
        assert all(s.recv(1) == b"" for s in silent), "each silent client sees EOF"
    finally:
        for s in silent:
            s.close()
        assert plug.stop() == 0


def test_huge_port_numbers_are_refused_and_cost_nothing(tmp_path):
    d = tmp_path / "sw"
    plug = Plug(tmp_path, "null://", f"switch://{d}")
    try:
        wait_for(lambda: (d / "ctl").exists(), what="switch")
        before = rss_kb(plug.proc.pid)
        for port in (65535, 513, 1000):
            with pytest.raises(OSError, match="refused"):
                vdeplug.open(f"vde://{d}[{port}]")
        with vdeplug.open(f"vde://{d}[512]"):  # the highest port served
            pass
        assert rss_kb(plug.proc.pid) - before < 4096, "no 65 536-slot port table"
        _, node = plug.counters()
        assert node["rejected"] == 3 and node["joins"] == 1
    finally:
        assert plug.stop() == 0


def test_switch_accepts_again_after_fd_exhaustion(tmp_path):
    d = tmp_path / "sw"
    err = open(tmp_path / "err", "w")  # noqa: SIM115 (the child's stderr, read after it ends)
    proc = subprocess.Popen(
        ["prlimit", "--nofile=24", "--", VDE_PLUG, "null://", f"switch://{d}"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=err,
    )
    conns = []
    try:
        wait_for(lambda: (d / "ctl").exists(), what="switch")
        for _ in range(30):  # past the fd limit: the switch runs out of fds
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(str(d / "ctl"))
            conns.append(s)
        time.sleep(0.3)
        for s in conns:  # they hang up before ever sending
            s.close()
        conns.clear()

        def joins() -> bool:
            try:
                with vdeplug.open(f"vde://{d}"):
                    return True
            except OSError:
                return False

        wait_for(joins, timeout=5, what="a client served again")
    finally:
        for s in conns:
            s.close()
        proc.terminate()
        assert proc.wait(5) == 0
        err.close()


# ---------------------------------------------------------------- 6: signals while the output is stalled


def _stall_stdout(tmp_path: Path, *args: str) -> tuple[subprocess.Popen, socket.socket, int]:
    """vde_plug udp://… [args] with an output nobody reads, flooded until stalled."""
    a, b = free_udp_port(), free_udp_port()
    with open(tmp_path / "stall.err", "w") as err:  # the child's stderr, read after it ends
        proc = subprocess.Popen(
            [VDE_PLUG, f"udp://127.0.0.1:{a}->127.0.0.1:{b}", *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=err,
        )
    peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    peer.bind(("127.0.0.1", b))
    time.sleep(0.3)
    f = frame(1500)
    for _ in range(3000):  # ~4.5 MB: far beyond any pipe buffer
        peer.sendto(f, ("127.0.0.1", a))
    time.sleep(0.5)
    return proc, peer, a


@pytest.mark.parametrize("how", ["stdout", "command"])
def test_sigterm_ends_vde_plug_with_a_stalled_reader(tmp_path, how):
    args = ["=", "sleep", "1000"] if how == "command" else []
    proc, peer, _ = _stall_stdout(tmp_path, *args)
    try:
        assert proc.poll() is None
        proc.send_signal(signal.SIGUSR1)  # counters are printed even now
        wait_for(lambda: "Stats(" in (tmp_path / "stall.err").read_text(), timeout=2, what="SIGUSR1 report")
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(3) == 0
        assert time.monotonic() - t0 < 1.0
    finally:
        if proc.poll() is None:
            proc.kill()
        peer.close()


def test_sigterm_ends_a_stalled_switch_and_removes_its_files(tmp_path):
    d = tmp_path / "sw"
    proc = subprocess.Popen([VDE_PLUG, f"switch://{d}"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: (d / "ctl").exists(), what="switch")
        with vdeplug.open(f"vde://{d}") as c:
            f = frame(1500)
            for _ in range(3000):  # broadcasts reach the host port: stdout, unread
                c.send(f)
                if c.stats.drops_out >= 10:
                    break  # the switch stalled: its socket from us stays full
            assert c.stats.drops_out >= 10, "the switch never stalled"
            time.sleep(0.3)
            t0 = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(3) == 0 and time.monotonic() - t0 < 1.0
        assert not d.exists(), "ctl and port sockets removed"
    finally:
        if proc.poll() is None:
            proc.kill()


# ---------------------------------------------------------------- 7: the interpreter never freezes


def test_blocked_send_never_freezes_other_threads(tmp_path):
    c = vdeplug.open("cmd://sleep 1000")  # never reads: every send stalls
    stop = threading.Event()

    def sender() -> None:
        f = frame(1500)
        while not stop.is_set():
            c.send(f)

    t = threading.Thread(target=sender, daemon=True)
    t.start()
    try:
        time.sleep(0.5)  # the pipe is full by now
        for probe in (lambda: c.stats, lambda: c.closed, lambda: repr(c), c.fileno, c.recv_nowait):
            t0 = time.monotonic()
            probe()
            assert time.monotonic() - t0 < 0.5, probe
        assert c.stats.drops_out > 0, "a stalled reader costs frames, not the interpreter"
    finally:
        stop.set()
        t.join(2)
        c.close()


def test_concurrent_joins_of_the_same_endpoints_are_refused(tmp_path):
    a = vdeplug.open(f"ptp://{tmp_path / 'a'}")
    b = vdeplug.open(f"ptp://{tmp_path / 'b'}")
    t = threading.Thread(target=lambda: vdeplug.join(a, b), daemon=True)
    t.start()
    try:
        time.sleep(0.3)
        t0 = time.monotonic()
        with pytest.raises(ValueError, match="already being joined"):
            vdeplug.join(b, a)
        assert time.monotonic() - t0 < 0.5
        assert repr(a) and a.stats is not None
    finally:
        a.close()  # ends the first join
        t.join(2)
        assert not t.is_alive()
        b.close()


# ---------------------------------------------------------------- 8: no panic reaches Python


def test_timeouts_forever_big_nan_negative(tmp_path):
    port_a, port_b = free_udp_port(), free_udp_port()
    a = vdeplug.open(f"udp://127.0.0.1:{port_a}->127.0.0.1:{port_b}")
    b = vdeplug.open(f"udp://127.0.0.1:{port_b}->127.0.0.1:{port_a}")
    with a, b:
        for timeout in (math.inf, 1e30, 1e300):
            threading.Timer(0.1, lambda: a.send(frame(60))).start()
            assert b.recv(timeout=timeout) == frame(60)
            threading.Timer(0.1, lambda: a.send(frame(61))).start()
            assert b.recv_many(8, timeout=timeout) == [frame(61)]
        for bad in (math.nan, -1.0, -math.inf):
            with pytest.raises(ValueError, match="timeout"):
                b.recv(timeout=bad)
            with pytest.raises(ValueError, match="timeout"):
                b.recv_many(8, timeout=bad)
        with pytest.raises(TimeoutError):
            b.recv(timeout=0)


# ---------------------------------------------------------------- 9: smaller holes


def test_seqpacket_leaves_the_callers_fd_alone():
    x, y = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    fd = x.fileno()
    with vdeplug.open(f"seqpacket://{fd}") as c:
        y.send(frame(60))
        assert c.recv(timeout=2) == frame(60)
    x.close()  # no EBADF: our fd is still ours
    y.close()


def test_send_wants_bytes_and_recv_max_zero_keeps_the_frame(tmp_path):
    with vdeplug.open(f"ptp://{tmp_path / 'l'}") as a, vdeplug.open(f"ptp://{tmp_path / 'l'}") as b:
        for bad in (1500, "x" * 60, 3.5):
            with pytest.raises(TypeError):
                a.send(bad)  # type: ignore[arg-type]
            with pytest.raises(TypeError):
                a.send_many([bad])  # type: ignore[list-item]
        assert b.recv_nowait() is None, "nothing was sent"
        assert a.send(bytearray(frame(60))) == 60 and a.send(memoryview(frame(61))) == 61
        with pytest.raises(ValueError, match="max"):
            b.recv(max=0)
        assert b.recv(timeout=2) == frame(60), "the frame was not eaten"
        assert b.recv(timeout=2) == frame(61)


def test_forked_child_close_leaves_the_parents_files(tmp_path):
    link, sw = tmp_path / "link", tmp_path / "sw"
    script = textwrap.dedent(f"""
        import os, vdeplug
        c = vdeplug.open("ptp://{link}")
        s = vdeplug.open("switch://{sw}")
        if os.fork() == 0:
            c.close()
            s.close()
            os._exit(0)
        os.wait()
        print(os.path.exists("{link}"), os.path.exists("{sw}/ctl"))
        c.close()
        s.close()
        print(os.path.exists("{link}"), os.path.exists("{sw}"))
    """)
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=20)
    assert r.stdout.split() == ["True", "True", "False", "False"], r.stderr


def test_daemon_thread_blocked_in_recv_does_not_abort_at_exit(tmp_path):
    script = textwrap.dedent(f"""
        import threading, time, vdeplug
        c = vdeplug.open("ptp://{tmp_path / "l"}")
        s = vdeplug.open("switch://{tmp_path / "sw"}")
        threading.Thread(target=c.recv, daemon=True).start()
        threading.Thread(target=lambda: c.recv_many(8), daemon=True).start()
        threading.Thread(target=lambda: vdeplug.join(s, vdeplug.open("null://")), daemon=True).start()
        time.sleep(0.3)
        print("exiting", flush=True)
    """)
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=20)
    assert r.returncode == 0, r.stderr
    assert "exiting" in r.stdout and "FATAL" not in r.stderr and "Abort" not in r.stderr, r.stderr


def test_command_grandchildren_are_stopped(tmp_path):
    pidfile = tmp_path / "grandchild"
    script = f"sleep 1000 & echo $! > {pidfile}; wait"
    proc = subprocess.Popen([VDE_PLUG, "null://", "=", "sh", "-c", script], stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: pidfile.exists() and pidfile.read_text().strip(), what="grandchild started")
        gpid = int(pidfile.read_text())
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(5) == 0

        def gone() -> bool:
            try:
                return Path(f"/proc/{gpid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
            except FileNotFoundError:
                return True

        wait_for(gone, timeout=3, what="grandchild stopped")
    finally:
        if proc.poll() is None:
            proc.kill()
    c = vdeplug.open(f"cmd://sh -c '{script.replace(str(pidfile), str(pidfile) + '2')}'")
    wait_for(lambda: Path(f"{pidfile}2").exists() and Path(f"{pidfile}2").read_text().strip(), what="grandchild 2")
    gpid = int(Path(f"{pidfile}2").read_text())
    c.close()
    wait_for(gone, timeout=3, what="cmd:// grandchild stopped")


def test_pcap_and_pidfile_never_follow_symlinks(tmp_path):
    target = tmp_path / "target"
    target.write_text("precious\n")
    (tmp_path / "x.pcap").symlink_to(target)
    r = subprocess.run([VDE_PLUG, "--pcap", str(tmp_path / "x.pcap"), "null://", "null://"], capture_output=True, text=True, timeout=10)
    assert r.returncode == 1 and "symbolic link" in r.stderr, r.stderr
    assert target.read_text() == "precious\n"
    from vdeplug.cli import write_pidfile

    pid = tmp_path / "pid"
    Path(f"{pid}.{os.getpid()}.tmp").symlink_to(target)
    with pytest.raises(FileExistsError):
        write_pidfile(str(pid), 42)
    assert target.read_text() == "precious\n" and not pid.exists()


@needs_root
def test_pcap_into_another_users_file_is_refused(tmp_path):
    planted = private_dir(tmp_path) / "x.pcap"
    planted.write_text("")
    os.chown(planted, NOBODY, NOBODY)
    os.chmod(planted, 0o666)
    r = subprocess.run([VDE_PLUG, "--pcap", str(planted), "null://", "null://"], capture_output=True, text=True, timeout=10)
    assert r.returncode == 1 and "another user" in r.stderr, r.stderr
    assert planted.read_bytes() == b""


# ---------------------------------------------------------------- shared with C: going beyond it


def test_vde_client_data_socket_lives_in_a_private_directory(tmp_path):
    d = tmp_path / "fake"
    d.mkdir()
    seen: dict[str, object] = {}
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(str(d / "ctl"))
    srv.listen(1)

    def fake_switch() -> None:
        conn, _ = srv.accept()
        req = conn.recv(256)
        path = req[14:122].split(b"\0", 1)[0].decode()
        parent = Path(path).parent
        st = parent.lstat()
        seen.update(path=path, uid=st.st_uid, mode=stat.S_IMODE(st.st_mode), isdir=stat.S_ISDIR(st.st_mode))
        conn.close()  # refuse: the client cleans up

    t = threading.Thread(target=fake_switch)
    t.start()
    with pytest.raises(OSError, match="refused"):
        vdeplug.open(f"vde://{d}")
    t.join(5)
    srv.close()
    assert not str(seen["path"]).startswith(str(d)), "not in the (shared) switch directory"
    assert seen["isdir"] and seen["uid"] == os.geteuid() and seen["mode"] == 0o711, seen
    assert not Path(str(seen["path"])).parent.exists(), "removed after use"


@needs_setpriv
def test_switch_never_connects_to_a_socket_the_client_does_not_own(shared_dir):
    base = shared_dir
    victim = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    victim.bind(str(base / "rootonly"))
    os.chmod(base / "rootonly", 0o600)
    victim.setblocking(False)
    d = base / "sw"
    with vdeplug.open(f"switch://{d}[mode=0666]") as sw:
        attack = textwrap.dedent(f"""
            import socket, struct, sys
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect("{d / "ctl"}")
            sun = struct.pack("=H", socket.AF_UNIX) + b"{base / "rootonly"}".ljust(108, b"\\0")
            s.send(struct.pack("=IIi", 0xFEEDFACE, 3, 0) + sun + b"x")
            s.settimeout(3)
            print("reply" if s.recv(200) else "refused")
        """)
        p = as_user(sys.executable, "-c", attack, stdout=subprocess.PIPE, text=True)
        out = ""
        deadline = time.monotonic() + 5
        while p.poll() is None and time.monotonic() < deadline:
            sw.recv_nowait()  # the owner drives the switch
            time.sleep(0.01)
        out = p.stdout.read() if p.stdout else ""
        assert out.strip() == "refused", out
        sw.send(frame(60))  # a broadcast: must not reach root's socket
        assert sw.stats.extra["joins"] == 0
    with pytest.raises(BlockingIOError):
        victim.recv(100)
    victim.close()


def test_udp_hears_only_its_configured_peer():
    a, b = free_udp_port(), free_udp_port()
    with vdeplug.open(f"udp://127.0.0.1:{a}->127.0.0.1:{b}") as c:
        peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        peer.bind(("127.0.0.1", b))
        stranger = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        stranger.sendto(frame(60, src=9), ("127.0.0.1", a))  # before we ever sent
        with pytest.raises(TimeoutError):
            c.recv(timeout=0.3)
        peer.sendto(b"", ("127.0.0.1", a))  # vdeplug4's "disconnect"
        stranger.sendto(frame(61, src=9), ("127.0.0.1", a))
        peer.sendto(frame(62), ("127.0.0.1", a))
        assert c.recv(timeout=2) == frame(62), "only the peer's frame"
        with pytest.raises(TimeoutError):
            c.recv(timeout=0.3)
        peer.close()
        stranger.close()


@needs_setpriv
def test_ptp_refuses_a_peer_socket_of_another_user(shared_dir):
    base = shared_dir
    os.chmod(base, 0o1777)  # a shared directory, like /tmp (sticky or not)
    link = base / "link"
    grab = textwrap.dedent(f"""
        import socket, sys, time
        s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        s.bind("{link}+")
        print("bound", flush=True)
        sys.stdin.readline()  # the plug has run: what it sent is queued here
        s.settimeout(0.5)
        try:
            print("GOT" if s.recv(2000) else "empty", flush=True)
        except socket.timeout:
            print("nothing", flush=True)
    """)
    spy = as_user(sys.executable, "-c", grab, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert spy.stdin and spy.stdout and spy.stdout.readline().strip() == "bound"
    one_frame = "printf '\\000\\074'; head -c 60 /dev/zero | tr '\\000' '\\377'; sleep 2"
    r = subprocess.run([VDE_PLUG, f"ptp://{link}", "=", "sh", "-c", one_frame], capture_output=True, text=True, timeout=10)
    assert r.returncode == 1 and "belongs to uid 65534" in r.stderr, r.stderr
    spy.stdin.write("go\n")
    spy.stdin.flush()
    assert spy.stdout.readline().strip() == "nothing"
    spy.wait(5)
    os.unlink(f"{link}+")
    # With a mode that invites other users, the same peer is accepted.
    spy = as_user(sys.executable, "-c", grab, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert spy.stdin and spy.stdout and spy.stdout.readline().strip() == "bound"
    with vdeplug.open(f"ptp://{link}", mode=0o666) as c:
        assert c.send(frame(60)) == 60
    spy.stdin.write("go\n")
    spy.stdin.flush()
    assert spy.stdout.readline().strip() == "GOT"
    spy.wait(5)


# ---------------------------------------------------------------- issue 28, items 1-3: overlay members


def vx_header(vni: int = 1, kind: int = 0) -> bytes:
    """A VXLAN header; ``kind`` is the last reserved byte of our control
    messages (0x50 peer list, 0x51 probe, 0x52 probe answer)."""
    return bytes([0x08, 0, 0, 0]) + vni.to_bytes(3, "big") + bytes([kind])


def peer_entry(ip: str, port: int) -> bytes:
    """One ``family · port · address`` entry of a peer list."""
    if ":" in ip:
        return b"\x06" + port.to_bytes(2, "big") + socket.inet_pton(socket.AF_INET6, ip)
    return b"\x04" + port.to_bytes(2, "big") + socket.inet_aton(ip)


def udp_at(ip: str, port: int = 0) -> socket.socket:
    """A UDP socket at ip:port (SO_REUSEADDR: vxlan's port may be bound on ANY)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((ip, port))
    s.settimeout(0.3)
    return s


def answer_probes(s: socket.socket, wait: float = 0.3) -> int:
    """Echo every probe that reaches ``s`` (an insider that really receives
    our traffic); returns the bytes received."""
    got = 0
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        try:
            data, src = s.recvfrom(65536)
        except TimeoutError:
            break
        got += len(data)
        if len(data) == 16 and data[7] == 0x51:
            s.sendto(data[:7] + b"\x52" + data[8:], src)
    return got


def recv_all(s: socket.socket, wait: float = 0.2) -> int:
    """Bytes of every datagram that reaches ``s`` within ``wait`` s of the last."""
    got = 0
    s.settimeout(wait)
    while True:
        try:
            got += len(s.recv(65536))
        except TimeoutError:
            return got


@pytest.mark.parametrize("scheme", ["vxvde", "vxlan"])
def test_a_peer_list_of_bad_addresses_never_ends_vde_plug(tmp_path, scheme):
    """A member (here one that even answers our probes) lists an IPv4-mapped
    IPv6 address and loopback's broadcast: the floods that follow used to
    fail with EAFNOSUPPORT/EACCES and end vde_plug."""
    pa, pf, pi, pj = (free_udp_port() for _ in range(4))
    # The attacker sits at 127.0.0.9; vxlan answers members on port=.
    attacker = udp_at("127.0.0.9", pa if scheme == "vxlan" else 0)
    local = udp_at("127.0.0.1", pj)  # the plug's other side: injects local frames
    vnl = f"{scheme}://127.0.0.1:{pf}/port={pa}/allow='127.0.0.0/8'"
    p = subprocess.Popen([VDE_PLUG, vnl, f"udp://{pi}->127.0.0.1:{pj}"], stderr=subprocess.PIPE)
    try:
        time.sleep(0.5)
        attacker.sendto(vx_header() + frame(60, src=9), ("127.0.0.1", pa))
        answer_probes(attacker)
        bad = peer_entry("::ffff:10.9.1.4", 4789) + peer_entry("127.255.255.255", 4789) + peer_entry("255.255.255.255", 4789)
        attacker.sendto(vx_header(kind=0x50) + bad, ("127.0.0.1", pa))
        time.sleep(0.2)
        for k in range(3):
            local.sendto(frame(80, src=1, seed=k), ("127.0.0.1", pi))
            time.sleep(0.1)
        assert p.poll() is None, p.stderr.read().decode() if p.stderr else ""
        got = recv_all(attacker, 0.5)
        assert got > 0, "the member still gets the floods"
    finally:
        p.terminate()
        p.wait(5)
        attacker.close()
        local.close()


def test_an_unverified_source_gets_at_most_three_times_what_it_sent():
    """A spoofed allowed source that joins and leaves again and again, with
    200 members in the table and local broadcasts flowing, used to get 56x
    its bytes back (a peer list per join, every broadcast)."""
    pa, pf = free_udp_port(), free_udp_port()
    with vdeplug.open(f"vxvde://127.0.0.1:{pf}/port={pa}/allow='127.0.0.0/8'") as a:
        for k in range(200):
            with udp_at(f"127.0.1.{k + 1}") as m:
                m.sendto(vx_header() + frame(60, src=50 + k), ("127.0.0.1", pa))
            if k % 50 == 49:
                drain(a)
        drain(a)
        victim = udp_at("127.0.0.5")
        sent = received = 0
        for k in range(30):
            join = vx_header() + frame(60, src=5, seed=k)
            victim.sendto(join, ("127.0.0.1", pa))
            drain(a, 0.05)
            for j in range(3):
                a.send(frame(100, src=1, seed=j))
            leave = vx_header()
            victim.sendto(leave, ("127.0.0.1", pa))
            drain(a, 0.05)
            sent += len(join) + len(leave)
            received += recv_all(victim, 0.02)
        received += recv_all(victim, 0.3)
        victim.close()
        assert a.stats.extra["members"] >= 200
        assert received <= 3 * sent, f"{received} bytes back for {sent} sent ({received / sent:.1f}x)"


def test_spoofed_sources_never_lock_a_real_host_out():
    """2000 spoofed sources fill the 1024-member table; a real host that
    keeps talking still gets in (and stays) and receives our floods."""
    pa, pc, pf = free_udp_port(), free_udp_port(), free_udp_port()
    allow = "allow='127.0.0.0/8'"

    def spoof(a: vdeplug.Connection, rounds: int = 2000, base: int = 0) -> None:
        for k in range(rounds):
            n = base + k
            with udp_at(f"127.0.{2 + n // 250}.{1 + n % 250}") as s:
                s.sendto(vx_header() + frame(60, src=7, seed=n), ("127.0.0.1", pa))
            if k % 100 == 99:
                drain(a, 0.01)
        drain(a, 0.05)

    with vdeplug.open(f"vxvde://127.0.0.1:{pf}/port={pa}/{allow}") as a, vdeplug.open(f"vxvde://127.0.0.1:{pa}/port={pc}/{allow}") as c:
        spoof(a)
        assert a.stats.extra["members"] == 1024
        for k in range(3):  # c keeps talking (and answers a's probe)
            c.send(frame(70, src=3, seed=k))
            drain(a, 0.05)
            drain(c, 0.05)
        spoof(a, 2000, base=2000)
        a.send(frame(90, src=1))
        assert frame(90, src=1) in drain(c, 0.5), f"the real host was locked out: {a.stats.extra}"
        assert a.stats.extra["members_verified"] >= 1


# ---------------------------------------------------------------- issue 28, item 5: deep nesting does not crash

LIBDIR = vdeplug.libdir()
C_DIR = Path(__file__).parent / "c"
NESTING_LIMIT = 32


def nest(levels: int, inner: str = "null://") -> str:
    return "vlan://5{" * levels + inner + "}" * levels


def build_c(out: Path, source: str, *, plugin: bool = False) -> Path:
    """tests/c/<source> built with our headers on our libraries (rpath: a
    setuid or setgid program ignores LD_LIBRARY_PATH)."""
    lib = "-l:libvdeplug_mod.so.2" if plugin else "-l:libvdeplug.so.2"
    shared = ["-shared", "-fPIC"] if plugin else []
    subprocess.run(["gcc", *shared, "-O2", "-Wall", "-I", LIBDIR, "-o", str(out), str(C_DIR / source), "-L", LIBDIR, lib, f"-Wl,-rpath,{LIBDIR}"], check=True)
    return out


@pytest.fixture(scope="module")
def vdeopen(tmp_path_factory) -> str:
    """tests/c/vdeopen.c: vde_open each VNL of its arguments, say ok or the errno."""
    if shutil.which("gcc") is None or not os.path.exists(os.path.join(LIBDIR, "libvdeplug.so.2")):
        pytest.skip("needs gcc and our libvdeplug.so.2")
    return str(build_c(tmp_path_factory.mktemp("c") / "vdeopen", "vdeopen.c"))


def test_nesting_to_the_limit_opens_and_deeper_is_a_vnl_error():
    vdeplug.open(nest(NESTING_LIMIT)).close()
    with pytest.raises(vdeplug.VNLError, match=f"limit of {NESTING_LIMIT} levels"):
        vdeplug.open(nest(NESTING_LIMIT + 1))
    # 8000 levels overflowed the stack: in a child, so that a crash is a failure, not the end of the run.
    code = f"import vdeplug\ntry:\n    vdeplug.open({nest(8000)!r})\nexcept vdeplug.VNLError as e:\n    print(str(e)[:80])"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and f"limit of {NESTING_LIMIT} levels" in r.stdout, (r.returncode, r.stdout[:300], r.stderr[-300:])


def test_vde_plug_refuses_deep_nesting_with_status_2():
    r = subprocess.run([VDE_PLUG, nest(8000), "null://"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and f"limit of {NESTING_LIMIT} levels" in r.stderr, (r.returncode, r.stderr[:300])


def test_c_program_on_our_library_gets_einval_for_deep_nesting(vdeopen):
    r = subprocess.run([vdeopen, nest(NESTING_LIMIT), nest(NESTING_LIMIT + 1), nest(8000)], capture_output=True, text=True, timeout=30)
    assert r.returncode == 2, (r.returncode, r.stdout[:300], r.stderr[-300:])
    assert [line for line in r.stdout.splitlines() if not line.startswith("map=")] == ["ok", f"fail errno={errno.EINVAL}", f"fail errno={errno.EINVAL}"]
    assert f"limit of {NESTING_LIMIT} levels" in r.stderr


def test_nesting_a_plugin_builds_itself_is_limited_at_run_time(vdeopen, tmp_path):
    """again://N opens again://N-1 (no braces: the grammar sees one level):
    level 32 is the last that opens."""
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    build_c(plugins / "libvdeplug_again.so", "libvdeplug_again.c", plugin=True)
    env = dict(os.environ, VDEPLUGIN_PATH=str(plugins))
    r = subprocess.run([vdeopen, f"again://{NESTING_LIMIT - 1}", f"again://{NESTING_LIMIT}", "again://8000"], capture_output=True, text=True, env=env, timeout=30)
    assert r.returncode == 2, (r.returncode, r.stdout[:300], r.stderr[-300:])
    assert [line for line in r.stdout.splitlines() if not line.startswith("map=")] == ["ok", f"fail errno={errno.EINVAL}", f"fail errno={errno.EINVAL}"]


# ---------------------------------------------------------------- issue 28, item 4: C plugin search order no weaker than vdeplug4's

SYSTEM_SLIRP = Path("/usr/lib/x86_64-linux-gnu/vdeplug/libvdeplug_slirp.so")
EPROTONOSUPPORT = 93  # errno of C callers for a scheme no plugin has
PY_OPEN = textwrap.dedent("""
    import sys, vdeplug
    try:
        c = vdeplug.open(sys.argv[1])
    except Exception as e:
        print("fail", type(e).__name__, e)
    else:
        print("ok")
        print(open("/proc/self/maps").read())
        c.close()
""")


@pytest.fixture(scope="module")
def planted_so(tmp_path_factory) -> Path:
    """tests/c/libvdeplug_planted.c: its constructor leaves a mark at $PLANTED_MARK."""
    if shutil.which("gcc") is None:
        pytest.skip("needs gcc")
    return build_c(tmp_path_factory.mktemp("planted") / "libvdeplug_planted.so", "libvdeplug_planted.c", plugin=True)


def plant(planted_so: Path, where: Path) -> Path:
    where.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(planted_so, where)
    return where


def open_as(face: str, vnl: str, vdeopen: str, mark: Path, cwd: Path, **env: str) -> tuple[int, str]:
    """Open `vnl` from `face` (python: vdeplug.open; vde_plug: stream mode to
    EOF; c: tests/c/vdeopen.c on our library), in `cwd`, with `env` added."""
    argv = {"python": [sys.executable, "-c", PY_OPEN, vnl], "vde_plug": [VDE_PLUG, vnl], "c": [vdeopen, vnl]}[face]
    full = dict(os.environ, PLANTED_MARK=str(mark), **env)
    for name in ("VDEPLUGIN_PATH", "LD_LIBRARY_PATH"):
        if name not in env:
            full.pop(name, None)
    r = subprocess.run(argv, cwd=cwd, env=full, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30)
    return r.returncode, r.stdout + r.stderr


@pytest.mark.skipif(not SYSTEM_SLIRP.exists(), reason="Debian's slirp plugin missing (apt-get install libvdeplug-slirp)")
@pytest.mark.parametrize("face", ["python", "vde_plug", "c"])
def test_plugin_planted_on_ld_library_path_loses_to_the_systems(planted_so, vdeopen, shared_dir, tmp_path, face):
    """Another user's directory on LD_LIBRARY_PATH holds vdeplug/libvdeplug_slirp.so:
    Debian's plugin is found first, the planted one is never loaded."""
    plant(planted_so, shared_dir / "vdeplug" / "libvdeplug_slirp.so")
    mark = tmp_path / "mark"
    rc, out = open_as(face, "slirp://", vdeopen, mark, tmp_path, LD_LIBRARY_PATH=str(shared_dir))
    assert not mark.exists(), "the planted plugin was loaded"
    assert rc == 0, out
    if face != "vde_plug":
        assert str(SYSTEM_SLIRP) in out, out


def test_empty_ld_library_path_entry_never_loads_from_the_current_directory(planted_so, vdeopen, tmp_path):
    """The loader reads an empty LD_LIBRARY_PATH entry as the current
    directory: no bare name is left to it (C library; Python and vde_plug
    look a scheme up in the directories before opening it)."""
    plant(planted_so, tmp_path / "libvdeplug_x.so")
    mark = tmp_path / "mark"
    rc, out = open_as("c", "x://", vdeopen, mark, tmp_path, LD_LIBRARY_PATH=":")
    assert not mark.exists(), "./libvdeplug_x.so was loaded"
    assert rc == 1 and f"fail errno={EPROTONOSUPPORT}" in out, out


@pytest.mark.parametrize("face", ["python", "c"])
@pytest.mark.parametrize("var", ["LD_LIBRARY_PATH", "VDEPLUGIN_PATH"])
def test_relative_search_entries_are_ignored(planted_so, vdeopen, tmp_path, face, var):
    sub = "rel/vdeplug" if var == "LD_LIBRARY_PATH" else "rel"
    plant(planted_so, tmp_path / sub / "libvdeplug_x.so")
    mark = tmp_path / "mark"
    rc, out = open_as(face, "x://", vdeopen, mark, tmp_path, **{var: "rel:./rel"})
    assert not mark.exists(), f"a plugin under {var}=rel was loaded"
    failed = "fail UnknownScheme" in out if face == "python" else rc == 1 and f"fail errno={EPROTONOSUPPORT}" in out
    assert failed, out


@needs_root
def test_setgid_program_ignores_vdeplugin_path(planted_so, vdeopen, tmp_path):
    """secure_getenv's rule: a setgid program on our library takes no
    plugin directory from its environment (glibc itself drops
    LD_LIBRARY_PATH there). The same program without the bit does."""
    plugins = tmp_path / "plugins"
    plant(planted_so, plugins / "libvdeplug_x.so")
    sgid = tmp_path / "vdeopen-sgid"
    shutil.copyfile(vdeopen, sgid)
    os.chown(sgid, 0, NOBODY)
    os.chmod(sgid, 0o2755)  # root runs it: egid nobody, real gid root → AT_SECURE
    mark = tmp_path / "mark"
    rc, out = open_as("c", "x://", str(sgid), mark, tmp_path, VDEPLUGIN_PATH=str(plugins))
    assert not mark.exists(), "a setgid program loaded a plugin from VDEPLUGIN_PATH"
    assert rc == 1 and f"fail errno={EPROTONOSUPPORT}" in out, out
    open_as("c", "x://", vdeopen, mark, tmp_path, VDEPLUGIN_PATH=str(plugins))
    assert mark.exists(), "without the bit, VDEPLUGIN_PATH is read"


# ---------------------------------------------------------------- issue 28, item 6: SIGTERM within a second, as the README says


def _gone(pid: int) -> bool:
    """The process has exited (a zombie not yet reaped counts as gone)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def test_sigterm_ends_vde_plug_within_a_second_when_the_command_ignores_it(tmp_path):
    pidfile = tmp_path / "cmd.pid"
    stubborn = f"trap '' TERM; echo $$ > {pidfile}; while :; do sleep 0.05; done"
    proc = subprocess.Popen([VDE_PLUG, "null://", "=", "sh", "-c", stubborn], stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: pidfile.exists() and pidfile.read_text().strip(), what="command started")
        pid = int(pidfile.read_text())
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(5) == 0
        took = time.monotonic() - t0
        assert took < 1.0, f"vde_plug took {took:.2f} s"
        assert _gone(pid), "the command was killed"
    finally:
        if proc.poll() is None:
            proc.kill()


# ---------------------------------------------------------------- issue 28, item 7: signals work while input is garbage


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signals_and_the_other_direction_work_while_stdin_is_garbage(tmp_path, sig):
    """``vde_plug ptp://… </dev/zero`` (length-0 records forever): frames
    from the ptp peer still come out, SIGUSR1 reports, ``sig`` ends it
    within a second. (A command's pipe is the same Stream, but a writer
    cannot keep it readable all the time as /dev/zero is.)"""
    link, err_path = tmp_path / "link", tmp_path / "err"
    with open(err_path, "w") as err, open("/dev/zero", "rb") as zero:
        proc = subprocess.Popen([VDE_PLUG, f"ptp://{link}"], stdin=zero, stdout=subprocess.PIPE, stderr=err)
    try:
        wait_for(link.exists, what="ptp socket")
        f = frame(60)
        with vdeplug.open(f"ptp://{link}") as peer:
            peer.send(f)
            assert proc.stdout
            assert read_exact(proc.stdout, 62, timeout=2) == struct.pack(">H", 60) + f, "the other direction"
        proc.send_signal(signal.SIGUSR1)
        wait_for(lambda: "stdio: Stats(" in err_path.read_text(), timeout=1, what="SIGUSR1 report")
        assert proc.poll() is None
        t0 = time.monotonic()
        proc.send_signal(sig)
        assert proc.wait(3) == 0
        assert time.monotonic() - t0 < 1.0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_python_recv_from_a_garbage_stream_times_out_and_sees_signals():
    """``recv``/``recv_many``/``recv_nowait`` on a connection that only
    yields garbage return on time and let signal handlers run (in a child
    interpreter: a recv that never returns would hold this one)."""
    script = textwrap.dedent("""
        import signal, time, vdeplug

        class Alarm(Exception):
            pass

        def ring(sig, frame):
            raise Alarm

        with vdeplug.open("cmd://cat /dev/zero") as c:
            for recv in (c.recv, c.recv_many):
                t0 = time.monotonic()
                try:
                    recv(timeout=0.3)
                except TimeoutError:
                    pass
                assert time.monotonic() - t0 < 1.0, recv
            assert c.recv_nowait() is None
            signal.signal(signal.SIGALRM, ring)
            signal.setitimer(signal.ITIMER_REAL, 0.3)
            t0 = time.monotonic()
            try:
                c.recv()
            except Alarm:
                print("alarm", round(time.monotonic() - t0, 2))
    """)
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=10)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("alarm") and float(r.stdout.split()[1]) < 1.0, r.stdout


# ---------------------------------------------------------------- issue 28, item 8: two ptp ends starting together
# ptp as vdeplug4 4.0.1: the first end binds PATH, the second PATH+. Ends
# that start at the same moment race for PATH; the loser must become the
# second end, and a peer's file that changes or is still being bound must
# not be taken for a dead or replaced peer.

PTP_END = textwrap.dedent("""
    import os, select, sys, time, vdeplug
    me = int(sys.argv[1])
    f = bytes([255] * 6 + [2, 0, 0, 0, 0, me]) + b"\\x88\\xb5" + bytes(46)
    print("ready", flush=True)
    while (cmd := os.read(0, 4096).decode().split()):  # "go PATH", later "close"
        try:
            e = vdeplug.open("ptp://" + cmd[1])
        except OSError as x:
            print("open failed:", x, flush=True)
            os.read(0, 4096)
            print("closed", flush=True)
            continue
        said, deadline = False, time.monotonic() + 5
        while not select.select([0], [], [], 0)[0]:  # until "close": frames both ways
            e.send(f)
            try:
                got = e.recv(timeout=0.01)[11] != me
            except TimeoutError:
                got = False
            if not said and (got or time.monotonic() > deadline):
                print("linked" if got else "no link", flush=True)
                said = True
        os.read(0, 4096)
        e.close()
        print("closed", flush=True)
""")


def test_two_ptp_ends_opened_at_the_same_moment_always_link(tmp_path):
    """50 rounds: two ends released together open the same link. The one
    that loses the bind of PATH used to fail (EADDRINUSE, about one round in
    eight); it must become the second end, and the link must carry frames."""
    ends = [subprocess.Popen([sys.executable, "-c", PTP_END, str(i)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) for i in (1, 2)]
    try:

        def line(p: subprocess.Popen) -> str:
            assert p.stdout
            return p.stdout.readline().strip()

        assert [line(p) for p in ends] == ["ready", "ready"]
        fds = [p.stdin.fileno() for p in ends if p.stdin]
        for r in range(50):
            go = f"go {tmp_path / f'l{r}'}\n".encode()
            for fd in fds:
                os.write(fd, go)
            said = [line(p) for p in ends]
            assert said == ["linked", "linked"], f"round {r}: {said}"
            for fd in fds:
                os.write(fd, b"close\n")
            assert [line(p) for p in ends] == ["closed", "closed"]
    finally:
        for p in ends:
            p.kill()
            p.wait()


def test_ptp_peer_changing_its_mode_after_we_linked_stays_our_peer(tmp_path):
    """vdeplug4 4.0.1 binds its file, then chmods it. An end of ours that
    linked in between took the new change time for a new peer: it dropped
    the association, the frames queued for it, and the peer's next send
    failed with ECONNRESET (the flaky C-program test, ours first)."""
    import ctypes

    lib = ctypes.CDLL(os.path.join(vdeplug.libdir(), "libvdeplug.so.2"), use_errno=True)
    lib.vde_open_real.restype = ctypes.c_void_p
    lib.vde_open_real.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_int, ctypes.c_void_p]
    for fn in ("vde_recv", "vde_send"):
        getattr(lib, fn).restype = ctypes.c_ssize_t
        getattr(lib, fn).argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    lib.vde_close.argtypes = [ctypes.c_void_p]
    link = tmp_path / "link"
    conn = lib.vde_open_real(f"ptp://{link}".encode(), b"test", 1, None)
    assert conn, os.strerror(ctypes.get_errno())
    c_end = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)  # the second end, as vdeplug4 4.0.1 opens it
    try:
        c_end.bind(f"{link}+")
        c_end.connect(str(link))
        c_end.settimeout(2)
        assert lib.vde_send(conn, frame(60), 60, 0) == 60  # we link to PATH+ now
        assert c_end.recv(9000) == frame(60)
        os.chmod(f"{link}+", 0o700)  # ... and vdeplug4 chmods it
        buf = ctypes.create_string_buffer(9234)
        for i in range(3):
            c_end.send(frame(61 + i, src=3))  # ECONNRESET here once the link was dropped
            time.sleep(0.3)  # our end's housekeeping (every 200 ms) runs with the frame queued
            n = lib.vde_recv(conn, buf, len(buf), 0)
            assert buf.raw[: max(n, 0)] == frame(61 + i, src=3), (n, os.strerror(ctypes.get_errno()))
    finally:
        c_end.close()
        lib.vde_close(conn)


def test_ptp_young_file_not_answering_yet_is_not_taken_for_stale(tmp_path):
    """A peer inside bind(2) has its file a moment before its socket
    answers. An end starting at that moment took the file for stale,
    removed it and bound PATH too: two first ends, each talking to nobody.
    It must give a young file a moment and become the second end."""
    link = tmp_path / "link"
    early = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    early.bind(str(link))
    early.close()  # the file is there, nobody answers yet...
    peer = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    peer.bind(str(tmp_path / "binding"))
    answering = threading.Timer(0.02, os.rename, (tmp_path / "binding", link))  # ... now it does
    answering.start()
    try:
        with vdeplug.open(f"ptp://{link}") as ours:
            answering.join()
            assert os.path.exists(f"{link}+"), "we are the second end"
            assert ours.send(frame(60)) == 60
            peer.settimeout(2)
            assert peer.recv(9000) == frame(60)
    finally:
        answering.join()
        peer.close()

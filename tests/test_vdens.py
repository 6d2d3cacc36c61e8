"""vdens (issue 25): an ordinary user's namespace plugged into VNLs.

Every vdens here runs as ``nobody`` (setpriv), as a user without
privileges would; two namespaces ping each other over vxvde, one reaches a
service in the host through Debian's slirp plugin, and when the command
(and what it left running) exits, nothing of vdens is left.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import BIN, NOBODY, NobodyEnv, wait_for
from vdeplug import _userns

VDENS = shutil.which("vdens", path=str(BIN)) or str(BIN / "vdens")
SLIRP = Path("/usr/lib/x86_64-linux-gnu/vdeplug/libvdeplug_slirp.so")


def _tun_for_everyone() -> str | None:
    """Distributions ship /dev/net/tun mode 0666; a root test run sets it so."""
    try:
        mode = os.stat("/dev/net/tun").st_mode
    except OSError:
        return "no /dev/net/tun"
    if mode & 0o006 != 0o006:
        if os.geteuid() != 0:
            return "/dev/net/tun is not 0666 (distributions ship it so)"
        os.chmod("/dev/net/tun", stat.S_IMODE(mode) | 0o666)
    return None


def _skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "runs vdens as nobody through setpriv (needs root)"
    if shutil.which("setpriv") is None:
        return "needs setpriv (util-linux)"
    return _userns.unavailable() or _tun_for_everyone()


pytestmark = pytest.mark.skipif(_skip_reason() is not None, reason=_skip_reason() or "")


@pytest.fixture(autouse=True)
def _vdens_nobody_can_run(nobody_env: NobodyEnv) -> None:
    """The vdens beside this Python may be out of nobody's reach (under /root)."""
    global VDENS
    VDENS = str(nobody_env.bin / "vdens")


def vdens(*args: str, **kw) -> subprocess.CompletedProcess[str]:
    kw.setdefault("timeout", 30)
    return subprocess.run([*NOBODY, VDENS, *args], capture_output=True, text=True, cwd="/tmp", **kw)


def vxvde() -> str:
    """A multicast group and port of this run alone."""
    return f"vxvde://239.{random.randrange(64, 250)}.{random.randrange(256)}.{random.randrange(1, 255)}/port={random.randrange(20000, 60000)}"


def udp_sockets(port: int) -> str:
    return subprocess.run(["ss", "-Huan", f"sport = :{port}"], capture_output=True, text=True).stdout.strip()


def procs_with(marker: str) -> list[str]:
    return [line for line in subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout.splitlines() if marker in line]


def test_two_namespaces_ping_over_vxvde_and_leave_nothing() -> None:
    net = vxvde()
    port = int(net.rsplit("=", 1)[1])
    marker = f"0.8{random.randrange(1000, 9999)}"  # a sleep of this length marks a left-over process
    a = subprocess.Popen(
        [*NOBODY, VDENS, net, "sh", "-c", f"ip addr add 10.9.0.1/24 dev vde0 && ip link set vde0 up && echo up; read x; sleep {marker} & exit 0"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd="/tmp",
    )
    assert a.stdout is not None and a.stdin is not None
    try:
        assert a.stdout.readline() == "up\n", a.stderr.read() if a.stderr else ""
        b = vdens(net, "sh", "-c", "ip addr add 10.9.0.2/24 dev vde0 && ip link set vde0 up && ping -c 2 -i 0.2 -W 2 10.9.0.1")
        assert b.returncode == 0 and "2 received" in b.stdout, b.stdout + b.stderr
        if os.path.exists("/usr/bin/vde_plug"):  # '=command': a stream command as the VNL (Debian's vde_plug here)
            c = vdens(f"=/usr/bin/vde_plug {net}", "sh", "-c", "ip addr add 10.9.0.3/24 dev vde0 && ip link set vde0 up && ping -c 1 -W 2 10.9.0.1")
            assert c.returncode == 0 and "1 received" in c.stdout, c.stdout + c.stderr
        assert udp_sockets(port), "vdens A's VNL is open while its namespace lives"
        # A's command ends, but a process it started then is still in the
        # namespace: the plug waits for it, then goes with everything.
        t0 = time.monotonic()
        a.stdin.close()
        assert a.wait(10) == 0, a.stderr.read() if a.stderr else ""
        assert time.monotonic() - t0 > 0.5, "vdens ended before the namespace's last process"
        assert not procs_with(f"sleep {marker}")
        assert not udp_sockets(port)
    finally:
        a.kill()
        a.wait()


@pytest.mark.skipif(not SLIRP.exists(), reason="needs Debian's libvdeplug-slirp")
def test_slirp_namespace_reaches_a_service_in_the_host() -> None:
    srv = socket.create_server(("127.0.0.1", 0))
    port = srv.getsockname()[1]
    got: list[bytes] = []

    def serve() -> None:
        srv.settimeout(15)
        try:
            c, _ = srv.accept()
        except OSError:
            return
        with c:
            got.append(c.recv(100))
            c.sendall(b"hello from the host")

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        script = f"import socket; s = socket.create_connection(('10.0.2.2', {port}), 5); s.sendall(b'ns'); print(s.recv(100).decode())"
        r = vdens("slirp://", "sh", "-c", f'ip addr add 10.0.2.15/24 dev vde0 && ip link set vde0 up && ip route add default via 10.0.2.2 && /usr/bin/python3 -c "{script}"')
        assert r.returncode == 0 and "hello from the host" in r.stdout, r.stdout + r.stderr
        assert got == [b"ns"]
    finally:
        srv.close()
        t.join(5)


def test_options_as_vdens_has_them(tmp_path: Path) -> None:
    # No VNL: no tap, lo up, the caller mapped to itself, the capabilities granted (and exit status passed on).
    r = vdens("-", "sh", "-c", "id -u; ip -o link; grep CapAmb /proc/self/status; exit 7")
    assert r.returncode == 7, r.stderr
    out = r.stdout
    assert out.splitlines()[0] == "65534" and "lo:" in out and "UP" in out and "vde0" not in out
    caps = int(out.split("CapAmb:")[1].split()[0], 16)
    assert caps == sum(1 << c for c in _userns.VDENS_CAPS)
    r = vdens("-s", "no", "sh", "-c", "grep CapAmb /proc/self/status; mount -t tmpfs none /mnt && echo mounted")
    assert int(r.stdout.split("CapAmb:")[1].split()[0], 16) == sum(1 << c for c in (*_userns.VDENS_CAPS, _userns.CAP_SYS_ADMIN)) and "mounted" in r.stdout, r.stderr
    # -H, -R (wins over -r and $VDE_RESOLVCONF), -i.
    net = vxvde()
    r = vdens("-H", "inside", "-R", "9.9.9.9,2620:fe::fe", "-r", "/etc/hosts", "-i", "eth", net, "sh", "-c", "hostname; cat /etc/resolv.conf; ip -o link")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[:3] == ["inside", "nameserver 9.9.9.9", "nameserver 2620:fe::fe"] and "eth0" in r.stdout
    conf = Path(f"/tmp/vdens-test-resolv-{os.getpid()}")  # where nobody can read it
    conf.write_text("nameserver 192.0.2.53\n")
    conf.chmod(0o644)
    try:
        r = vdens("-", "cat", "/etc/resolv.conf", env={**os.environ, "VDE_RESOLVCONF": str(conf)})
    finally:
        conf.unlink()
    assert r.stdout == "nameserver 192.0.2.53\n", r.stderr
    r = vdens("-", "cat", "/etc/resolv.conf", env={**os.environ, "VDE_RESOLVADDR": "192.0.2.54"})
    assert r.stdout == "nameserver 192.0.2.54\n", r.stderr
    assert socket.gethostname() != "inside" and "192.0.2.5" not in Path("/etc/resolv.conf").read_text()
    # -m: one interface per VNL up to '--'; $SHELL when no command.
    r = vdens("-m", net, vxvde(), "--", "ip", "-o", "link")
    assert "vde0" in r.stdout and "vde1" in r.stdout and "vde2" not in r.stdout, r.stderr
    r = vdens(net, input="echo $0; exit 4\n", env={**os.environ, "SHELL": "/bin/sh"})
    assert r.returncode == 4 and r.stdout == "/bin/sh\n", r.stderr
    # Errors: a bad VNL (the command never runs), a missing command.
    r = vdens("nosuch://x", "touch", str(tmp_path / "ran"))
    assert r.returncode == 2 and "unknown scheme 'nosuch'" in r.stderr and not (tmp_path / "ran").exists()
    r = vdens("-H", "x" * 70, net, "touch", str(tmp_path / "ran"))  # longer than a hostname may be
    assert r.returncode == 1 and r.stderr == f"vdens: sethostname {'x' * 70}: Invalid argument\n" and not (tmp_path / "ran").exists()
    r = vdens("-", "/nonexistent/cmd")
    assert r.returncode == 127 and "/nonexistent/cmd" in r.stderr
    # Root may use it too (root mapped to itself).
    r = subprocess.run([VDENS, net, "sh", "-c", "id -u; ip -o link"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and r.stdout.startswith("0\n") and "vde0" in r.stdout, r.stderr


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_killed_vdens_takes_its_namespace_along(sig: int) -> None:
    net = vxvde()
    port = int(net.rsplit("=", 1)[1])
    marker = f"{random.randrange(100, 200)}.{random.randrange(1000, 9999)}"
    p = subprocess.Popen([*NOBODY, VDENS, net, "sleep", marker], cwd="/tmp", stderr=subprocess.PIPE)
    wait_for(lambda: bool(procs_with(f"sleep {marker}")), what="the command")
    p.send_signal(sig)
    rc = p.wait(10)
    assert rc == (128 + signal.SIGTERM if sig == signal.SIGTERM else -signal.SIGKILL)
    # vdens forwards TERM; killed outright, its namespace's side hears TERM (parent-death signal).
    wait_for(lambda: not procs_with(f"sleep {marker}"), what="the command to end")
    wait_for(lambda: not udp_sockets(port), what="the VNL to close")


def test_says_why_when_user_namespaces_are_off() -> None:
    # A user namespace of our own where no more may be made (as a kernel with them off).
    r = subprocess.run(["unshare", "-r", "sh", "-c", f"echo 0 > /proc/sys/user/max_user_namespaces && exec {VDENS} - true"], capture_output=True, text=True, timeout=30, cwd="/tmp")
    assert r.returncode == 1
    assert "unprivileged user namespaces are disabled" in r.stderr and "user.max_user_namespaces" in r.stderr, r.stderr


def test_help_lists_every_option() -> None:
    r = subprocess.run([sys.executable, "-m", "vdeplug.vdens", "--help"], capture_output=True, text=True)
    assert r.returncode == 0
    for opt in ("--multi", "--iface", "--resolvconf", "--resolvaddr", "--hostname", "--sysadm", "--clone", "--unshare", "VDE_RESOLVCONF", "VDE_RESOLVADDR"):
        assert opt in r.stdout

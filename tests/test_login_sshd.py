"""vde_plug as the login shell of an ssh-only user, through a real sshd
(issue 25, item 3): Debian's openssh-server runs in a network namespace on
127.0.0.1 with a throwaway host key and config in a temp dir (nothing in
/etc/ssh changes); a user made for the test (removed after it) has our
native login entry point as shell, a key, and a switch as default network.
`ssh vdeuser@host vde_plug` carries frames to that switch, and
`vde_plug VNL = ssh … vde_plug` joins two switches, as vdeplug4's
documentation does it; START and STOP reach the client's stderr (no syslog
daemon here)."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import vdeplug
from conftest import VDE_PLUG, NobodyEnv, frame, read_exact, wait_for

SSHD = "/usr/sbin/sshd"

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (sshd, useradd, a network namespace)"),
    pytest.mark.skipif(not os.path.exists(SSHD) or shutil.which("ssh") is None, reason="needs openssh-server and openssh-client (apt-get install openssh-server)"),
    pytest.mark.skipif(shutil.which("useradd") is None or shutil.which("ip") is None, reason="needs useradd and iproute2"),
    pytest.mark.skipif(os.path.exists("/dev/log"), reason="a syslog daemon listens: START/STOP go there, not to ssh's stderr"),
]


@dataclass
class Site:
    ns: str
    user: str
    home: Path
    key: Path
    port: int
    switch: Path

    def ssh(self, *extra: str) -> list[str]:
        return ["ssh", "-i", str(self.key), "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes", "-p", str(self.port), f"{self.user}@127.0.0.1", *extra]

    def in_ns(self, *argv: str) -> list[str]:
        return ["ip", "netns", "exec", self.ns, *argv]


def run(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True)


@pytest.fixture
def site(nobody_env: NobodyEnv) -> Iterator[Site]:
    # The user runs a copy of vdeplug it can reach (ours may be under /root, 0700).
    login = Path(subprocess.run([nobody_env.python, "-c", "import vdeplug; print(vdeplug.__file__)"], capture_output=True, text=True, check=True).stdout.strip()).parent / "lib" / "vde_plug"
    user_vde_plug = str(nobody_env.bin / "vde_plug")
    tag = uuid.uuid4().hex[:6]
    ns, user, port = f"sshf{tag}", f"vdeu{tag}", 2200 + int(tag, 16) % 700
    conf = Path(tempfile.mkdtemp(prefix="vdeplug-sshd."))
    home = Path(tempfile.mkdtemp(prefix="vdeplug-home."))
    made_run = not os.path.exists("/run/sshd")
    procs: list[subprocess.Popen[bytes]] = []
    run("ip", "netns", "add", ns)
    try:
        run("ip", "-n", ns, "link", "set", "lo", "up")
        run("useradd", "-M", "-p", "*", "-d", str(home), "-s", str(login), user)  # "*": no password, not locked (sshd refuses locked accounts)
        pw = pwd.getpwnam(user)
        run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(conf / "host_key"))
        run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(conf / "user_key"))
        (conf / "authorized_keys").write_text((conf / "user_key.pub").read_text())
        (conf / "sshd_config").write_text(
            f"Port {port}\nListenAddress 127.0.0.1\nHostKey {conf}/host_key\nPidFile {conf}/sshd.pid\n"
            f"AuthorizedKeysFile {conf}/authorized_keys\nAllowUsers {user}\nUsePAM no\nPasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\nStrictModes no\nPermitRootLogin no\nSubsystem sftp internal-sftp\n"
        )
        conf.chmod(0o755)
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
        sw = home / "sw"
        (home / ".vdeplug").mkdir()
        (home / ".vdeplug" / "default").write_text(f"vde://{sw}\n")
        for p in (home, home / ".vdeplug", home / ".vdeplug" / "default"):
            os.chown(p, pw.pw_uid, pw.pw_gid)
        home.chmod(0o755)
        # The user's own switch, run as the user.
        procs.append(subprocess.Popen(["setpriv", f"--reuid={pw.pw_uid}", f"--regid={pw.pw_gid}", "--clear-groups", user_vde_plug, "null://", f"switch://{sw}"], stderr=subprocess.PIPE))
        wait_for(lambda: (sw / "ctl").exists(), what="the user's switch")
        check = subprocess.run(["ip", "netns", "exec", ns, SSHD, "-t", "-f", str(conf / "sshd_config")], capture_output=True, text=True)
        if check.returncode != 0:
            pytest.skip(f"sshd cannot start here: {check.stderr.strip()}")
        sshd = subprocess.Popen(["ip", "netns", "exec", ns, SSHD, "-D", "-e", "-f", str(conf / "sshd_config")], stderr=subprocess.PIPE)
        procs.append(sshd)
        end = time.monotonic() + 10
        while time.monotonic() < end and sshd.poll() is None:
            if subprocess.run(["ip", "netns", "exec", ns, "ss", "-ltnH", f"sport = :{port}"], capture_output=True, text=True).stdout.strip():
                break
            time.sleep(0.1)
        else:
            err = sshd.stderr.read().decode() if sshd.poll() is not None and sshd.stderr else "not listening"
            pytest.skip(f"sshd cannot start here: {err}")
        yield Site(ns, user, home, conf / "user_key", port, sw)
    finally:
        for p in reversed(procs):
            p.terminate()
            p.wait(5)
        subprocess.run(["userdel", user], capture_output=True)
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        shutil.rmtree(conf, ignore_errors=True)
        shutil.rmtree(home, ignore_errors=True)
        if made_run:
            shutil.rmtree("/run/sshd", ignore_errors=True)


def test_ssh_vde_plug_reaches_the_users_default_network(site: Site) -> None:
    with vdeplug.open(f"vde://{site.switch}") as spy:
        p = subprocess.Popen(site.in_ns(*site.ssh("vde_plug")), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert p.stdin and p.stdout and p.stderr
        try:
            f, g = frame(100, src=7), frame(80, src=8)
            deadline = time.monotonic() + 15
            while True:  # until the session is up: frames sent earlier are lost
                p.stdin.write(len(f).to_bytes(2, "big") + f)
                p.stdin.flush()
                try:
                    if spy.recv(timeout=0.5) == f:
                        break
                except TimeoutError:
                    pass
                assert p.poll() is None and time.monotonic() < deadline, p.stderr.read().decode() if p.poll() is not None else "no frame"
            spy.send(g)
            n = int.from_bytes(read_exact(p.stdout, 2, timeout=10), "big")
            assert read_exact(p.stdout, n, timeout=10) == g
            p.stdin.close()
            assert p.wait(15) == 0
        finally:
            if p.poll() is None:
                p.kill()
                p.wait(5)
        err = p.stderr.read().decode()
    assert f"START: user {site.user} IP 127.0.0.1\n" in err and f"STOP: user {site.user} IP 127.0.0.1\n" in err, err


def test_vde_plug_equals_ssh_joins_two_switches(site: Site, tmp_path: Path) -> None:
    local = tmp_path / "local"
    sw = subprocess.Popen([VDE_PLUG, "null://", f"switch://{local}"], stderr=subprocess.PIPE)
    try:
        wait_for(lambda: (local / "ctl").exists(), what="local switch")
        cable = subprocess.Popen(site.in_ns(VDE_PLUG, f"vde://{local}", "=", *site.ssh("vde_plug")), stderr=subprocess.PIPE)
        try:
            with vdeplug.open(f"vde://{local}") as here, vdeplug.open(f"vde://{site.switch}") as there:
                f = frame(120, src=9)
                deadline = time.monotonic() + 15
                while True:
                    here.send(f)
                    try:
                        if there.recv(timeout=0.5) == f:
                            break
                    except TimeoutError:
                        pass
                    assert cable.poll() is None and time.monotonic() < deadline, cable.stderr.read().decode() if cable.stderr and cable.poll() is not None else "no frame"
                g = frame(70, src=10)
                there.send(g)
                while here.recv(timeout=10) != g:
                    pass
        finally:
            cable.terminate()
            _, err = cable.communicate(timeout=10)
        assert f"START: user {site.user} IP 127.0.0.1\n" in err.decode(), err  # our login shell, not a shell running some vde_plug
    finally:
        sw.terminate()
        sw.wait(5)

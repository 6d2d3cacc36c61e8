"""vde_plug as a login shell (issue 25, item 3), as vdeplug4's vde_plug.c:
argv[0] starting with '-' is refused, `-c vde_plug` only, START/STOP/FAILED
with the user and $SSH_CLIENT's address, the user's default network.

No sshd here: the native entry point (vdeplug/lib/vde_plug, the path to
put in /etc/passwd) is exec'd with the argv a login gives its shell
(``-vde_plug`` for an interactive one, ``vde_plug -c CMD`` for ``ssh
user@host CMD``). Without a syslog daemon (/dev/log) the lines go to
stderr, where these tests read them.
"""

from __future__ import annotations

import os
import pwd
import subprocess
from pathlib import Path

import pytest
import vdeplug
from conftest import VDE_PLUG, frame, wait_for

LOGIN = Path(vdeplug.__file__).parent / "lib" / "vde_plug"
NOT_A_SHELL = "This is a Virtual Distributed Ethernet (vde) tunnel broker. \nThis is not a login shell, only vde_plug can be executed\n"
ME = pwd.getpwuid(os.getuid()).pw_name

pytestmark = pytest.mark.skipif(os.path.exists("/dev/log"), reason="a syslog daemon listens: the log lines are not on stderr")


def login(argv: list[str], home: Path, exe: str = str(LOGIN), **kw) -> subprocess.CompletedProcess[bytes]:
    env = {"HOME": str(home), "PATH": "/usr/bin:/bin", "SSH_CLIENT": "192.0.2.7 40022 22", **kw.pop("env", {})}
    kw.setdefault("stdin", subprocess.DEVNULL)
    return subprocess.run(argv, executable=exe, capture_output=True, env=env, timeout=30, **kw)


def test_an_interactive_login_is_refused(tmp_path: Path) -> None:
    for argv0 in ("-vde_plug", "-sh"):
        r = login([argv0], tmp_path)
        assert r.returncode == 255
        lines = r.stderr.decode()
        assert f"FAILED: user {ME} IP 192.0.2.7\n" in lines and lines.endswith(NOT_A_SHELL), lines


@pytest.mark.parametrize("command", ["vde_plug vxvde://239.1.2.3", "sh", "vde_plug ", ""])
def test_only_the_command_vde_plug_is_run(tmp_path: Path, command: str) -> None:
    r = login(["vde_plug", "-c", command], tmp_path)
    assert r.returncode == 255 and r.stderr.decode().endswith(NOT_A_SHELL), r.stderr
    assert b"FAILED: user" in r.stderr and b"START" not in r.stderr


def test_ssh_vde_plug_plugs_stdio_into_the_users_default_network(tmp_path: Path) -> None:
    sw = tmp_path / "sw"
    switch = subprocess.Popen([VDE_PLUG, "null://", f"switch://{sw}"], stderr=subprocess.PIPE)
    try:
        wait_for(lambda: (sw / "ctl").exists(), what="switch")
        (tmp_path / ".vdeplug").mkdir()
        (tmp_path / ".vdeplug" / "default").write_text(f"vde://{sw}\n")
        with vdeplug.open(f"vde://{sw}") as spy:
            f = frame(100, src=7)
            p = subprocess.Popen(
                ["vde_plug", "-c", "vde_plug"], executable=str(LOGIN), stdin=subprocess.PIPE, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, env={"HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}
            )
            assert p.stdin is not None and p.stderr is not None
            p.stdin.write(len(f).to_bytes(2, "big") + f)
            p.stdin.flush()
            assert spy.recv(timeout=10) == f
            p.stdin.close()
            assert p.wait(10) == 0
            err = p.stderr.read().decode()
            assert f"START: user {ME} IP UNKNOWN_IP_ADDRESS\n" in err and f"STOP: user {ME} IP UNKNOWN_IP_ADDRESS\n" in err, err
    finally:
        switch.terminate()
        switch.wait(5)


def test_the_login_shell_runs_our_package_whatever_the_environment(tmp_path: Path) -> None:
    evil = tmp_path / "evil" / "vdeplug"
    evil.mkdir(parents=True)
    (evil / "__init__.py").write_text("raise SystemExit('evil vdeplug imported')\n")
    r = login(["-vde_plug"], tmp_path, env={"PYTHONPATH": str(evil.parent), "PYTHONSTARTUP": str(evil / "__init__.py")}, cwd=str(evil.parent))
    assert r.returncode == 255 and r.stderr.decode().endswith(NOT_A_SHELL), r.stderr


def test_the_console_script_takes_c_vde_plug_too(tmp_path: Path) -> None:
    # vdeplug4 parses -c as an option wherever it runs (only argv[0] needs the native entry point).
    (tmp_path / ".vdeplug").mkdir()
    (tmp_path / ".vdeplug" / "default").write_text("null://\n")
    r = login([VDE_PLUG, "-c", "vde_plug"], tmp_path, exe=VDE_PLUG)
    assert r.returncode == 0 and b"START: user" in r.stderr and b"STOP: user" in r.stderr, r.stderr
    r = login([VDE_PLUG, "-c", "bash"], tmp_path, exe=VDE_PLUG)
    assert r.returncode == 255


@pytest.mark.parametrize("member", [True, False])
def test_group_vdeplug_iplog_turns_on_ip_logging(monkeypatch: pytest.MonkeyPatch, member: bool) -> None:
    import grp

    from vdeplug import cli

    gid = 4242
    monkeypatch.setattr(grp, "getgrnam", lambda name: grp.struct_group(("vdeplug_iplog", "x", gid, [])) if name == "vdeplug_iplog" else None)
    monkeypatch.setattr(cli.os, "getgrouplist", lambda user, group: [group, gid] if member else [group])
    logged: list[str] = []
    monkeypatch.setattr(cli, "login_log", logged.append)
    monkeypatch.setattr(cli.atexit, "register", lambda fn, *args: logged.append(f"at exit: {args[0]}"))
    monkeypatch.setenv("SSH_CLIENT", "2001:db8::7 40022 22")
    args = cli.parse_args(["-c", "vde_plug"])
    assert args.iplog is member and args.urls == [] and args.command is None
    assert logged == [f"START: user {ME} IP 2001:db8::7", f"at exit: STOP: user {ME} IP 2001:db8::7"]

"""Errors a new user meets first: each says what went wrong and the fix."""

from __future__ import annotations

import os
import stat
import subprocess

import pytest
import vdeplug
from conftest import DPIPE, VDE_PLUG
from vdeplug.lab import Lab, LabError

root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")


def run(*args: str, cwd: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([VDE_PLUG, *args], capture_output=True, text=True, timeout=10, stdin=subprocess.DEVNULL, cwd=cwd)


def test_an_unquoted_prefix_says_to_quote_it():
    r = run("vxlan://10.0.0.1/allow=10.0.0.0/8", "null://")
    assert r.returncode == 2, r.stderr
    assert "prefix length of allow=10.0.0.0; quote the value, allow='10.0.0.0/8'" in r.stderr, r.stderr
    r = run("vxlan://10.0.0.1/allow=10.0.0.0/8,fd00::/16", "null://")
    assert "allow='10.0.0.0/8,…'" in r.stderr, r.stderr


def test_a_udp_url_cut_by_the_shell_says_to_quote_it(tmp_path):
    # What `vde_plug udp://5000->127.0.0.1:5001 null://` does in a shell.
    r = subprocess.run(f"{VDE_PLUG} udp://5000->127.0.0.1:5001 null://", shell=True, capture_output=True, text=True, timeout=10, cwd=tmp_path)
    assert (tmp_path / "127.0.0.1:5001").exists(), "the shell redirected"
    assert r.returncode == 2 and "quote the URL: 'udp://5000->HOST:PORT'" in r.stderr, r.stderr


def test_a_nested_scheme_without_braces_shows_its_own_example():
    r = run("capture:///tmp/x.pcap", "null://")
    assert r.returncode == 2 and "e.g. capture:///tmp/x.pcap{vxvde://}" in r.stderr, r.stderr
    assert "vlan://" not in r.stderr


def test_an_unknown_long_option_names_the_near_one():
    r = run("--stat", "5")
    assert r.returncode == 2
    assert r.stderr.strip() == "vde_plug: unknown option --stat: did you mean --stats? (`vde_plug --help` shows the usage)", r.stderr
    r = run("--zzzz")
    assert r.returncode == 2 and "unknown option --zzzz (`vde_plug --help`" in r.stderr, r.stderr


@pytest.mark.parametrize("closed", ["stdin", "stdout"])
def test_a_closed_stdin_or_stdout_is_named(tmp_path, closed):
    sock = tmp_path / "q"
    redirect = "<&-" if closed == "stdin" else ">&-"
    r = subprocess.run(f"exec {VDE_PLUG} ptp://{sock} {redirect}", shell=True, capture_output=True, text=True, timeout=10)
    assert r.returncode == 2 and f"{closed} is closed" in r.stderr and "URL = cmd" in r.stderr, r.stderr
    assert not sock.exists(), "nothing opened"


def test_usage_errors_exit_2_in_both_tools():
    assert run("null://", "null://", "null://").returncode == 2
    for args in ([], ["--bogus"], ["a", "="], ["="]):
        r = subprocess.run([DPIPE, *args], capture_output=True, text=True, timeout=10)
        assert r.returncode == 2 and r.stderr.startswith("dpipe: "), (args, r.returncode, r.stderr)
    r = subprocess.run([DPIPE, "--nowrap", "a", "=", "b"], capture_output=True, text=True, timeout=10)
    assert r.returncode == 2 and "did you mean --nowrapproc?" in r.stderr, r.stderr


def test_a_lab_reference_that_is_no_switch_is_not_taken_as_a_path():
    with Lab() as lab, pytest.raises(LabError, match=r"'sw' is neither a declared switch \(declared: none yet\) nor a VNL"):
        lab.cable("sw", "null://")
    assert not os.path.exists("sw")


@root
def test_tap_on_an_interface_that_is_not_a_tap():
    r = run("tap://lo", "null://")
    assert r.returncode == 1
    assert "lo exists and is an interface that is not a tap: choose another name" in r.stderr, r.stderr


def _open_as_nobody(url: str) -> str:
    """The message of opening ``url`` in a forked child running as nobody
    (this Python may live where nobody cannot run it), with vde_plug's hint."""
    import pwd

    from vdeplug.cli import _hint

    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        try:
            os.close(r)
            nobody = pwd.getpwnam("nobody")
            os.setgroups([])
            os.setresgid(nobody.pw_gid, nobody.pw_gid, nobody.pw_gid)
            os.setresuid(nobody.pw_uid, nobody.pw_uid, nobody.pw_uid)
            try:
                vdeplug.open(url).close()
                msg = "opened"
            except OSError as e:
                msg = str(e) + _hint(e, [url])
            os.write(w, msg.encode())
        finally:
            os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        out = f.read().decode()
    os.waitpid(pid, 0)
    return out


@root
def test_tap_when_dev_net_tun_is_closed_to_the_user():
    mode = stat.S_IMODE(os.stat("/dev/net/tun").st_mode)
    os.chmod("/dev/net/tun", 0o600)  # as here; distributions ship 0666
    try:
        msg = _open_as_nobody("tap://t0")
    finally:
        os.chmod("/dev/net/tun", mode)
    assert "cannot open /dev/net/tun (Permission denied): most distributions make it mode 0666" in msg, msg
    assert msg.count("CAP_NET_ADMIN") == 1, "one hint, not two"

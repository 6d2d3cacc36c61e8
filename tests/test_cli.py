"""The installed console scripts, run as subprocesses."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable

import pytest
import vdeplug
from conftest import C_VDE_PLUG, DPIPE, VDE_PLUG, StreamPeer, frame, needs_c, wait_for


def run(*args: str, timeout: float = 10) -> subprocess.CompletedProcess[str]:
    return subprocess.run([VDE_PLUG, *args], capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def test_help():
    r = run("--help")
    assert r.returncode == 0 and "vde_plug [OPTIONS]" in r.stdout


def test_python_dash_m_is_vde_plug():
    r = subprocess.run([sys.executable, "-m", "vdeplug", "-h"], capture_output=True, text=True, timeout=10)
    assert r.returncode == 0 and "URL URL" in r.stdout


@pytest.mark.parametrize(
    "url,part",
    [
        ("vxvde2://x", "vxvde2"),
        ("udp://1->", "->"),
        ('ptp://"/tmp/x', "unterminated"),
        ("udp://5000->h:99999", "99999"),
    ],
)
def test_bad_url_clear_error_no_traceback(url, part):
    r = run(url, "null://")
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    assert r.stderr.startswith("vde_plug: ") and part in r.stderr


def test_too_many_urls():
    r = run("null://", "null://", "null://")
    assert r.returncode == 2 and "too many" in r.stderr


def test_open_error_is_reported():
    r = run("ptp:///nonexistent-dir/x", "null://")
    assert r.returncode == 1 and "Traceback" not in r.stderr and "nonexistent-dir" in r.stderr


def test_sigterm_sigint_sighup_stop_cleanly(tmp_path):
    for sig, code in ((signal.SIGTERM, 0), (signal.SIGINT, 0), (signal.SIGHUP, 0)):
        a, b = str(tmp_path / "a"), str(tmp_path / "b")
        p = subprocess.Popen([VDE_PLUG, f"ptp://{a}", f"ptp://{b}"], stderr=subprocess.PIPE, text=True)
        wait_for(lambda a=a, b=b: os.path.exists(a) and os.path.exists(b), what="sockets")
        time.sleep(0.2)
        p.send_signal(sig)
        assert p.wait(5) == code, p.stderr.read() if p.stderr else ""
        assert not os.path.exists(a) and not os.path.exists(b), "socket files removed"


def test_cable_between_two_ptp(tmp_path):
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    p = subprocess.Popen([VDE_PLUG, f"ptp://{a}", f"ptp://{b}"])
    try:
        wait_for(lambda: os.path.exists(a) and os.path.exists(b), what="sockets")
        with vdeplug.open(f"ptp://{a}") as x, vdeplug.open(f"ptp://{b}") as y:
            for i in range(50):
                x.send(frame(60 + i * 29))
                assert y.recv(timeout=5) == frame(60 + i * 29)
            y.send(frame(1514, src=9))
            assert x.recv(timeout=5) == frame(1514, src=9)
    finally:
        p.terminate()
        p.wait(5)


def test_stream_mode_stdin_eof_exits_zero(tmp_path):
    a = str(tmp_path / "a")
    peer = StreamPeer([VDE_PLUG, f"ptp://{a}"])
    wait_for(lambda: os.path.exists(a), what="socket")
    with vdeplug.open(f"ptp://{a}") as x:
        x.send(frame(100))
        assert peer.recv() == frame(100)
        peer.send(frame(101))
        assert x.recv(timeout=5) == frame(101)
    assert peer.close() == 0


def test_version_usage_broken_pipe_and_did_you_mean():
    r = run("--version")
    assert r.returncode == 0 and r.stdout.startswith("vde_plug (vdeplug) ") and vdeplug.__version__ in r.stdout
    r = run("--no-such-option")
    assert r.returncode == 2 and r.stderr.startswith("vde_plug: unknown option --no-such-option") and "--help" in r.stderr, r.stderr
    r = subprocess.run(f"'{VDE_PLUG}' --help | head -1", shell=True, capture_output=True, text=True, timeout=10)
    assert r.stdout.startswith("usage:") and "Traceback" not in r.stderr and "BrokenPipe" not in r.stderr, r.stderr
    r = run("ptpp:///tmp/x", "null://")
    assert r.returncode == 2 and "did you mean ptp://?" in r.stderr, r.stderr
    r = run("ptp:/tmp/nonexistent-x", "null://")
    assert r.returncode == 1 and "did you mean ptp:///tmp/nonexistent-x?" in r.stderr, r.stderr


def test_stdin_from_dev_null_or_a_file(tmp_path):
    """cron, systemd, nohup: stdin from /dev/null is an immediate EOF (exit
    0, as C); a regular file is a recorded stream, replayed."""
    link = tmp_path / "l"
    with vdeplug.open(f"ptp://{link}"):
        r = subprocess.run([VDE_PLUG, f"ptp://{link}"], stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=10)
        assert r.returncode == 0, r.stderr
    recording = tmp_path / "rec"
    recording.write_bytes(b"".join(len(f).to_bytes(2, "big") + f for f in (frame(60), frame(1514), frame(61))))
    with vdeplug.open(f"ptp://{link}") as sink, open(recording, "rb") as rec:
        p = subprocess.Popen([VDE_PLUG, f"ptp://{link}"], stdin=rec, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        assert [sink.recv(timeout=5) for _ in range(3)] == [frame(60), frame(1514), frame(61)]
        assert p.wait(10) == 0


def test_command_exit_status_propagates(tmp_path):
    r = run(f"ptp://{tmp_path}/a", "=", "sh", "-c", "exit 7")
    assert r.returncode == 7


def test_peer_going_away_is_reported(tmp_path):
    """A cmd:// peer that dies ends vde_plug with a message and status 1."""
    r = run(f"ptp://{tmp_path}/a", "cmd://sh -c 'exit 0'")
    assert r.returncode == 1
    assert "peer hung up" in r.stderr and "cmd://" in r.stderr


def test_pidfile_and_daemon(tmp_path):
    pidfile = tmp_path / "pid"
    a = tmp_path / "a"
    r = subprocess.run([VDE_PLUG, "-d", "-p", "pid", "ptp://a", "null://"], cwd=tmp_path, timeout=10, capture_output=True)
    assert r.returncode == 0, r.stderr
    wait_for(pidfile.exists, what="pidfile")
    pid = int(pidfile.read_text())
    assert a.exists(), "relative path opened before chdir('/')"
    os.kill(pid, signal.SIGTERM)
    wait_for(lambda: not pidfile.exists(), what="pidfile removed")
    assert not a.exists()


def test_dpipe_ours_joins_two_vde_plugs(tmp_path):
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    p = subprocess.Popen([DPIPE, VDE_PLUG, f"ptp://{a}", "=", VDE_PLUG, f"ptp://{b}"])
    try:
        wait_for(lambda: os.path.exists(a) and os.path.exists(b), what="sockets")
        with vdeplug.open(f"ptp://{a}") as x, vdeplug.open(f"ptp://{b}") as y:
            x.send(frame(300))
            assert y.recv(timeout=5) == frame(300)
            y.send(frame(301))
            assert x.recv(timeout=5) == frame(301)
    finally:
        os.killpg(p.pid, signal.SIGTERM) if p.poll() is None else None
        p.wait(5)


@pytest.mark.parametrize("flag", ["", "-n", "-N"])
def test_dpipe_no_wrapper_becomes_the_first_command(tmp_path, flag):
    """-n/-N, as vdeplug4's dpipe: the first command runs in dpipe's own
    process (the pid file names it) and still talks to the second."""
    pid, got, pidfile = tmp_path / "pid", tmp_path / "got", tmp_path / "dpipe.pid"
    first = f"echo $$ > {pid}; echo hello; sleep 0.3"
    argv = [DPIPE, *([flag] if flag else []), "-p", str(pidfile), "sh", "-c", first, "=", "sh", "-c", f"cat > {got}"]
    p = subprocess.Popen(argv)
    wait_for(lambda: pid.exists() and pid.read_text().strip(), what="first command")
    assert (int(pid.read_text()) == p.pid) == bool(flag)
    assert p.wait(10) == 0
    wait_for(lambda: got.exists() and got.read_text() == "hello\n", what="data through the pipe")
    assert pidfile.exists() == bool(flag), "only the wrapper removes its pid file"


def test_dpipe_three_commands_alternate_fds(tmp_path):
    """The middle command sees ALTERNATE_STDIN/OUT towards the third one."""
    out = tmp_path / "out"
    script = f'echo "$ALTERNATE_STDIN $ALTERNATE_STDOUT" > {out}; echo hi >&$ALTERNATE_STDOUT'
    r = subprocess.run(
        [DPIPE, "true", "=", "sh", "-c", script, "=", "sh", "-c", f"cat > {tmp_path}/third"],
        timeout=10,
    )
    assert r.returncode == 0
    fds = out.read_text().split()
    assert len(fds) == 2 and all(f.isdigit() for f in fds)
    assert (tmp_path / "third").read_text() == "hi\n"


@needs_c
def test_c_dpipe_runs_our_vde_plug(tmp_path):
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    p = subprocess.Popen(["/usr/bin/dpipe", VDE_PLUG, f"ptp://{a}", "=", C_VDE_PLUG, f"ptp://{b}"])
    try:
        wait_for(lambda: os.path.exists(a) and os.path.exists(b), what="sockets")
        with vdeplug.open(f"ptp://{a}") as x, vdeplug.open(f"ptp://{b}") as y:
            x.send(frame(1514))
            assert y.recv(timeout=5) == frame(1514)
    finally:
        p.terminate()
        p.wait(5)


@pytest.mark.parametrize(
    "middle,expect",
    [
        (["=}", "sed", "-u", "s/go/F/", "}="], "F-C"),  # a -> f -> c -> a
        (["={", "sed", "-u", "s/go/B/", "{="], "B-C"),  # a -> c -> b -> a ... b filters c's reply
        (["=}", "sed", "-u", "s/go/F/", "}={", "sed", "-u", "s/F/FB/", "{="], "FB-C"),
    ],
    ids=["forward", "backward", "both"],
)
def test_dpipe_one_directional_filters(tmp_path, middle, expect):
    out = tmp_path / "a_got"
    a = ["sh", "-c", f'echo go; read x; echo "$x" > {out}']
    c = ["sh", "-c", 'read x; echo "$x-C"']
    r = subprocess.run([DPIPE, *a, *middle, *c], timeout=10)
    assert r.returncode == 0
    assert out.read_text().strip() == expect


def cable_stderr(tmp_path, *opts: str, frames: int, then: Callable[[subprocess.Popen[str]], None]) -> tuple[str, str, str]:
    """Run `vde_plug OPTS ptp://a ptp://b`, send `frames` 100-byte frames
    from a to b through it, call `then(process)`, stop it; (a, b, stderr)."""
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    p = subprocess.Popen([VDE_PLUG, *opts, f"ptp://{a}", f"ptp://{b}"], stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: os.path.exists(a) and os.path.exists(b), what="sockets")
        with vdeplug.open(f"ptp://{a}") as x, vdeplug.open(f"ptp://{b}") as y:
            for _ in range(frames):
                x.send(frame(100))
                assert y.recv(timeout=5) == frame(100)
            then(p)
    finally:
        p.terminate()
        p.wait(5)
    return a, b, p.stderr.read() if p.stderr else ""


def test_sigusr1_prints_counters(tmp_path):
    def report(p: subprocess.Popen[str]) -> None:
        p.send_signal(signal.SIGUSR1)
        time.sleep(0.5)

    a, b, err = cable_stderr(tmp_path, frames=3, then=report)
    assert f"ptp://{a}: Stats(frames_in=3, bytes_in=300" in err, err
    assert f"ptp://{b}: Stats(frames_in=0, bytes_in=0, frames_out=3, bytes_out=300" in err, err


def test_stats_prints_periodic_counter_lines(tmp_path):
    """--stats S: one line per interval (appended: stderr is a pipe), with
    totals and rates that follow the traffic."""
    a, b, err = cable_stderr(tmp_path, "--stats", "0.3", frames=5, then=lambda _: time.sleep(1.2))
    lines = err.splitlines()
    assert len(lines) >= 3, lines
    assert all(ln.startswith("vde_plug: ") and "\r" not in ln for ln in lines), lines
    assert f"ptp://{a}: in 5 (" in lines[-1] and f"ptp://{b}: in 0 (0/s, 0.0 Mbit/s) out 5 (" in lines[-1], lines
    assert " drops 0/0" in lines[-1]
    assert run("--stats", "0", "null://").returncode == 2


def test_first_end_cleaned_up_when_second_fails(tmp_path):
    a = tmp_path / "a"
    r = run(f"ptp://{a}", f"vde://{tmp_path}/no-switch")
    assert r.returncode == 1 and "no switch" in r.stderr
    assert not a.exists(), "the ptp socket of the first end was left behind"


def test_open_errors_suggest_the_fix(tmp_path):
    r = run(str(tmp_path / "no-switch"))
    assert r.returncode == 1 and "no switch at" in r.stderr and "switch://" in r.stderr and "vde_switch -s" in r.stderr, r.stderr
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("0.0.0.0", 0))
        port = s.getsockname()[1]
        r = run(f"udp://{port}->127.0.0.1:9", "null://")
    assert r.returncode == 1 and "Address already in use" in r.stderr and "choose another port" in r.stderr, r.stderr

"""restart://[SECONDS]{VNL} (issue 25, item 4), as upstream's
libvdeplug_restart: the nested VNL is reopened when it fails, the plug
never ends because of it, frames sent while it is down are dropped and
counted, and the counters show the restarts."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import pytest
import vdeplug
from conftest import VDE_PLUG, frame, wait_for


def switch(path: Path) -> subprocess.Popen[bytes]:
    p = subprocess.Popen([VDE_PLUG, "null://", f"switch://{path}"], stderr=subprocess.PIPE)
    wait_for(lambda: (path / "ctl").exists(), what=f"switch {path}")
    return p


def stop(p: subprocess.Popen[bytes]) -> None:
    p.terminate()
    p.wait(5)


def flows(sender: vdeplug.Connection, spy: vdeplug.Connection, f: bytes, timeout: float = 5.0) -> bool:
    """Send `f` until `spy` sees it (the restart may still be on its way)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        sender.send(f)
        try:
            while spy.recv(timeout=0.2) != f:
                pass
            return True
        except TimeoutError:
            continue
    return False


def test_vde_plug_reconnects_to_a_restarted_switch(tmp_path: Path) -> None:
    sw1, sw2 = tmp_path / "sw1", tmp_path / "sw2"
    s1, s2 = switch(sw1), switch(sw2)
    plug = subprocess.Popen([VDE_PLUG, f"restart://1{{vde://{sw1}}}", f"vde://{sw2}"], stderr=subprocess.PIPE, text=True)
    try:
        f = frame(100, src=5)
        with vdeplug.open(f"vde://{sw1}") as a, vdeplug.open(f"vde://{sw2}") as b:
            assert flows(a, b, f) and flows(b, a, frame(90, src=6))
        stop(s1)
        time.sleep(0.5)
        assert plug.poll() is None, "the plug outlives its nested VNL"
        s1 = switch(sw1)
        with vdeplug.open(f"vde://{sw1}") as a, vdeplug.open(f"vde://{sw2}") as b:
            assert flows(a, b, f), "frames flow again after the switch came back"
            assert flows(b, a, frame(90, src=6))
        plug.send_signal(signal.SIGUSR1)
        time.sleep(0.5)  # the report is written by the plug's SIGUSR1 handler
    finally:
        plug.terminate()
        _, err = plug.communicate(timeout=5)
        stop(s1)
        stop(s2)
    assert "restart: vde://" in err and "failed" in err and "reopened" in err, err
    assert "'restarts': 1" in err and "'restart_failures': 1" in err and "'restart_down': 0" in err, err


def test_frames_sent_while_down_are_dropped_and_counted(tmp_path: Path) -> None:
    sw = tmp_path / "sw"
    s = switch(sw)
    try:
        with vdeplug.open(f"restart://1{{vde://{sw}}}") as c:
            stop(s)
            f = frame(60)
            # The failure shows at the next receive (the switch's hang-up).
            with pytest.raises(TimeoutError):
                c.recv(timeout=0.3)
            assert c.stats.extra["restart_down"] == 1 and c.stats.extra["restart_failures"] == 1
            assert c.send(f) == 0 and c.send(f) == 0
            assert c.stats.drops_out == 2 and c.stats.extra["restart_dropped"] == 2
            s = switch(sw)
            with vdeplug.open(f"vde://{sw}") as spy:
                assert flows(c, spy, f)
            st = c.stats.extra
            assert st["restarts"] == 1 and st["restart_down"] == 0 and st["restart_errors"] >= 0, st
    finally:
        stop(s)


def test_a_wrong_vnl_fails_at_once_and_a_bad_period_is_refused(tmp_path: Path) -> None:
    with pytest.raises(OSError):
        vdeplug.open(f"restart://{{vde://{tmp_path}/nosuch}}")
    with pytest.raises(ValueError, match="invalid polling period"):
        vdeplug.open("restart://3s{null://}")

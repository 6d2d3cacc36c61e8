"""``vde_plug --demo``, as README.md's first command runs it."""

from __future__ import annotations

import glob
import os
import re
import stat
import subprocess
from pathlib import Path

from conftest import NOBODY, VDE_PLUG, NobodyEnv

README = Path(__file__).resolve().parent.parent / "README.md"


def first_command() -> str:
    block = re.search(r"^```sh\n(.*?)^```", README.read_text(), flags=re.S | re.M)
    assert block, "README starts with a sh block"
    return block.group(1).splitlines()[0].split("#")[0].strip()


def leftovers(pid: int) -> list[str]:
    """The demo's directories, and namespaces of a lab made by process pid."""
    netns = os.listdir("/run/netns") if os.path.isdir("/run/netns") else []
    return glob.glob("/tmp/vdeplug-demo-*") + [n for n in netns if n.startswith(f"vdl{pid % 100000}")]


def test_the_readme_first_command_installs_then_runs_the_demo():
    cmd = first_command()
    assert cmd == "pip install . && vde_plug --demo", cmd
    assert not glob.glob("/tmp/vdeplug-demo-*")
    p = subprocess.Popen([VDE_PLUG, "--demo"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
    out, err = p.communicate(timeout=60)
    r = subprocess.CompletedProcess(p.args, p.returncode, out, err)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "b got it: yes, c got it: yes" in r.stdout and "4000/4000 reached b, 4000/4000 reached a" in r.stdout, r.stdout
    assert "all crossed" in r.stdout
    if os.geteuid() == 0:
        assert re.search(r"a pings b +[1-3]/3 replies", r.stdout), r.stdout
    assert leftovers(p.pid) == [], "nothing left behind"


def test_the_demo_works_for_an_ordinary_user_and_says_what_it_skipped(nobody_env: NobodyEnv):
    mode = stat.S_IMODE(os.stat("/dev/net/tun").st_mode)
    os.chmod("/dev/net/tun", 0o600)  # as here: no namespaces for nobody
    try:
        r = subprocess.run([*NOBODY, str(nobody_env.bin / "vde_plug"), "--demo"], capture_output=True, text=True, timeout=60, cwd="/", stdin=subprocess.DEVNULL)
    finally:
        os.chmod("/dev/net/tun", mode)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "all crossed" in r.stdout and "skipped: two hosts pinging over a vxvde:// overlay, as this needs root: /dev/net/tun is not open" in r.stdout, r.stdout

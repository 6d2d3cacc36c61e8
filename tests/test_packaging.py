"""What a user installs: one abi3 manylinux wheel that runs on every CPython
from 3.9 (each one found on this machine is tried), code that lints for the
oldest of them, man pages and bash completion under the prefix."""

from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
import vdeplug

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(sysconfig.get_path("data"))
BIN = Path(sys.executable).parent
OLDEST = (3, 9)


def interpreters() -> dict[tuple[int, int], str]:
    """One CPython per minor version >= 3.9 found here (pyenv, /usr/bin, ...)."""
    found: dict[tuple[int, int], str] = {}
    paths = [sys.executable, *sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.*/bin/python3")))]
    paths += sorted(glob.glob("/usr/bin/python3.[0-9]*")) + sorted(glob.glob("/usr/local/bin/python3.[0-9]*"))
    for p in paths:
        if not re.search(r"python3(\.\d+)?$", p):
            continue
        r = subprocess.run([p, "-c", "import sys; print(*sys.version_info[:2]); import venv"], capture_output=True, text=True)
        if r.returncode == 0:
            v = tuple(int(x) for x in r.stdout.split())
            if v >= OLDEST:
                found.setdefault((v[0], v[1]), p)
    return found


SMOKE = r"""
import asyncio, sys
import vdeplug, vdeplug.aio, vdeplug.cli, vdeplug.dpipe, vdeplug.lab, vdeplug.vnl
p1, p2 = int(sys.argv[1]), int(sys.argv[2])
frame = bytes([255] * 6 + [2] * 6 + [0x88, 0xB5]) + bytes(range(46))
with vdeplug.open(f"udp://127.0.0.1:{p1}->127.0.0.1:{p2}") as a, vdeplug.open(f"udp://127.0.0.1:{p2}->127.0.0.1:{p1}") as b:
    assert a.send(frame) == 60 and b.recv(timeout=2) == frame
    assert a.send(memoryview(bytearray(frame))) == 60 and b.recv(timeout=2) == frame
    assert a.send_many([frame] * 3) == 3 and len(b.recv_many(10, timeout=2)) == 3

async def idle():
    async with await vdeplug.aopen("null://") as c:
        try:
            await c.recv(timeout=0.1)
        except TimeoutError:
            return "timeout"

assert asyncio.run(idle()) == "timeout"
assert vdeplug.vnl.split_scheme("vxvde://239.1.2.3") == ("vxvde", "239.1.2.3")
print("ok", vdeplug.__version__, *sys.version_info[:2])
"""


@pytest.fixture(scope="module")
def manylinux_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The release wheel, built as the backend's docstring says (zig from PyPI);
    or the one ``VDEPLUG_RELEASE_WHEEL`` names, built so from this tree
    already (.ci/run builds it once, installs it and tests it here)."""
    given = os.environ.get("VDEPLUG_RELEASE_WHEEL")
    if given:
        wheel = Path(given)
        assert wheel.is_file(), f"VDEPLUG_RELEASE_WHEEL={given}: no such file"
        assert wheel.name.startswith(f"vdeplug-{vdeplug.__version__}-"), f"{wheel.name} is not this vdeplug ({vdeplug.__version__})"
        return wheel
    out = tmp_path_factory.mktemp("wheel")
    env = dict(os.environ, VDEPLUG_MANYLINUX="2_28")
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out), str(ROOT)], env=env, capture_output=True, text=True, timeout=900)
    if r.returncode and ("Could not find a version" in r.stderr or "No matching distribution" in r.stderr or "connection" in r.stderr.lower()):
        pytest.skip(f"no package index for ziglang/cargo-zigbuild: {r.stderr.strip()[-300:]}")
    assert r.returncode == 0, r.stderr[-3000:]
    (wheel,) = out.glob("*.whl")
    return wheel


def glibc_versions(so: Path) -> list[tuple[int, ...]]:
    r = subprocess.run(["objdump", "-T", str(so)], capture_output=True, text=True, check=True)
    return sorted({tuple(int(x) for x in v.split(".")) for v in re.findall(r"GLIBC_([0-9.]+)", r.stdout)})


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("objdump") is None, reason="needs objdump (binutils)")
@pytest.mark.timeout(600)  # builds the release wheel from nothing (ring's C and assembly with zig cc)
def test_release_wheel_is_abi3_manylinux_2_28_and_every_library_in_it(manylinux_wheel: Path, tmp_path: Path) -> None:
    assert manylinux_wheel.name.endswith("-cp39-abi3-manylinux_2_28_x86_64.whl"), manylinux_wheel.name
    with zipfile.ZipFile(manylinux_wheel) as z:
        names = z.namelist()
        z.extractall(tmp_path)
    for so in ("vdeplug/_core.abi3.so", "vdeplug/lib/libvdeplug.so.2", "vdeplug/lib/libvdeplug_mod.so.2"):
        assert so in names
        assert max(glibc_versions(tmp_path / so)) <= (2, 28), so
    assert any(n.endswith("share/man/man1/vde_plug.1") for n in names)
    assert any(n.endswith("share/bash-completion/completions/vde_plug") for n in names)
    meta = next(n for n in names if n.endswith(".dist-info/METADATA"))
    text = (tmp_path / meta).read_text()
    assert "Requires-Python: >=3.9" in text and "Project-URL:" in text and "Classifier: Programming Language :: Python :: 3.9" in text
    assert "# vdeplug" in text  # the README is the long description


@pytest.mark.slow
def test_wheel_runs_on_every_python_found(manylinux_wheel: Path, tmp_path: Path) -> None:
    found = interpreters()
    if len(found) < 2:
        pytest.skip(f"only {sorted(found)} here: install more CPythons (e.g. pyenv) to try the abi3 wheel on them")
    assert OLDEST in found or pytest.skip("no CPython 3.9 here")
    ports = iter(range(47300, 47400, 2))
    for version, python in sorted(found.items()):
        venv = tmp_path / f"py{version[0]}{version[1]}"
        subprocess.run([python, "-m", "venv", "--without-pip", str(venv)], check=True)
        vpy = venv / "bin" / "python"
        r = subprocess.run([sys.executable, "-m", "pip", "--python", str(vpy), "install", "-q", "--no-index", "--no-deps", str(manylinux_wheel)], capture_output=True, text=True)
        assert r.returncode == 0, (version, r.stderr)
        p = next(ports)
        r = subprocess.run([str(vpy), "-c", SMOKE, str(p), str(p + 1)], capture_output=True, text=True, timeout=60)
        assert r.returncode == 0 and r.stdout.startswith("ok "), (version, r.stdout, r.stderr)
        assert r.stdout.split()[1:] == [vdeplug.__version__, str(version[0]), str(version[1])]
        r = subprocess.run([str(venv / "bin" / "vde_plug"), "--version"], capture_output=True, text=True, timeout=30)
        assert r.returncode == 0 and vdeplug.__version__ in r.stdout, (version, r.stderr)


def test_code_lints_for_the_oldest_python() -> None:
    """vermin: no syntax, module or member newer than requires-python."""
    vermin = shutil.which("vermin", path=str(BIN)) or shutil.which("vermin")
    if vermin is None:
        pytest.skip("vermin not installed (it is in the test extra)")
    r = subprocess.run([vermin, "-t=3.9-", "--violations", "--no-tips", "--no-parse-comments", str(ROOT / "python")], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.skipif(shutil.which("man") is None, reason="needs man (man-db)")
@pytest.mark.parametrize("page", ["vde_plug", "dpipe", "vdens"])
def test_man_pages_installed_render_and_win_over_the_c_ones(page: str) -> None:
    path = DATA / "share" / "man" / "man1" / f"{page}.1"
    assert path.is_file(), f"{path} not installed"
    env = dict(os.environ, MANWIDTH="80", LC_ALL="C.UTF-8")
    r = subprocess.run(["man", "--warnings", "-l", str(path)], capture_output=True, text=True, env=env)
    assert r.returncode == 0 and not r.stderr.strip(), r.stderr
    assert "vdeplug" in r.stdout and "--version" in r.stdout
    # man finds share/man beside each PATH entry: ours first with our bin first.
    env.pop("MANPATH", None)
    env["PATH"] = f"{BIN}:{env.get('PATH', '')}"
    r = subprocess.run(["man", "-w", page], capture_output=True, text=True, env=env)
    assert r.stdout.strip() == str(path)


@pytest.mark.parametrize(
    "line, expect",
    [
        ("vde_plug vx", ["vxlan://", "vxvde://"]),
        ("vde_plug --sta", ["--stats"]),
        ("vde_plug null:// = ech", ["echo"]),
        ("dpipe vde_plug = vde_pl", ["vde_plug"]),
        ("dpipe -", ["--daemon"]),
    ],
)
def test_bash_completion(line: str, expect: list[str]) -> None:
    comp = DATA / "share" / "bash-completion" / "completions"
    script = f"""
. {comp}/dpipe
COMP_LINE="$1"; COMP_POINT=${{#COMP_LINE}}; read -ra COMP_WORDS <<< "$1"
[[ $1 == *" " ]] && COMP_WORDS+=("")
COMP_CWORD=$((${{#COMP_WORDS[@]}} - 1))
case ${{COMP_WORDS[0]}} in vde_plug) _vde_plug ;; dpipe) _dpipe ;; esac
printf '%s\\n' "${{COMPREPLY[@]}}"
"""
    env = dict(os.environ, PATH=f"{BIN}:{os.environ.get('PATH', '')}")
    r = subprocess.run(["bash", "-c", script, "bash", line], capture_output=True, text=True, env=env, timeout=30)
    got = r.stdout.split()
    assert all(e in got for e in expect), (line, got, r.stderr)


def test_path_completion_after_a_path_scheme(tmp_path: Path) -> None:
    (tmp_path / "sw1").mkdir()
    comp = DATA / "share" / "bash-completion" / "completions" / "vde_plug"
    line = f"vde_plug vde://{tmp_path}/s"
    script = f""". {comp}
COMP_LINE="$1"; COMP_POINT=${{#COMP_LINE}}; COMP_WORDS=(vde_plug "${{1#vde_plug }}"); COMP_CWORD=1
_vde_plug; printf '%s\\n' "${{COMPREPLY[@]}}"
"""
    r = subprocess.run(["bash", "-c", script, "bash", line], capture_output=True, text=True, timeout=30)
    # bash completes only after the last ':' of the word (COMP_WORDBREAKS).
    assert r.stdout.split() == [f"//{tmp_path}/sw1/"], r.stdout + r.stderr

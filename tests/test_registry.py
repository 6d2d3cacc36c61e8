"""Third-party plugins are found through the ``vdeplug.plugins`` entry point
group: install the tiny package in tests/myplugin and open its scheme."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

HERE = Path(__file__).parent


@pytest.fixture(scope="module")
def plugin_path(tmp_path_factory) -> str:
    target = tmp_path_factory.mktemp("site")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--target", str(target), str(HERE / "myplugin")],
        check=True,
    )
    return str(target)


def run_py(code: str, plugin_path: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=plugin_path)
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env, capture_output=True, text=True, timeout=60)


def test_open_third_party_plugin(plugin_path):
    r = run_py(
        """
        import vdeplug
        assert "myplugin" in vdeplug.available()
        with vdeplug.open("myplugin://my.syntax/myarg=myvalue") as c:
            assert c.endpoint.address == "my.syntax"
            f = bytes(6) + bytes([2,0,0,0,0,1]) + b"\\x88\\xb5" + b"hello" * 10
            assert c.send(f) == len(f)
            assert c.recv(timeout=1) == f + b"myvalue"
        print("ok")
        """,
        plugin_path,
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "ok"


def test_third_party_options_are_checked(plugin_path):
    r = run_py(
        """
        import vdeplug
        try:
            vdeplug.open("myplugin://x/nosuch=1")
        except vdeplug.VNLError as e:
            print(e.part)
        """,
        plugin_path,
    )
    assert r.stdout.strip() == "nosuch", r.stderr


def test_vde_plug_joins_python_plugin_with_builtin(plugin_path, tmp_path):
    """vde_plug myplugin://... ptp://... goes through the Python join loop."""
    link = str(tmp_path / "link")
    env = dict(os.environ, PYTHONPATH=plugin_path)
    proc = subprocess.Popen([sys.executable, "-m", "vdeplug", "myplugin://h/myarg=XY", f"ptp://{link}"], env=env)
    try:
        import vdeplug
        from conftest import frame, wait_for

        wait_for(lambda: os.path.exists(link), what="ptp socket")
        with vdeplug.open(f"ptp://{link}") as c:
            f = frame(100)
            c.send(f)
            assert c.recv(timeout=5) == f + b"XY"
    finally:
        proc.terminate()
        assert proc.wait(5) == 0


def test_help_lists_third_party_plugins(plugin_path):
    env = dict(os.environ, PYTHONPATH=plugin_path)
    r = subprocess.run([sys.executable, "-m", "vdeplug", "--help"], env=env, capture_output=True, text=True, timeout=30)
    assert r.returncode == 0
    line = next(x for x in r.stdout.splitlines() if x.strip().startswith("myplugin://"))
    assert "[" in line  # marked with the module it comes from

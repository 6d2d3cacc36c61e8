"""The hand-written stubs of the Rust module match what it exports."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest


@pytest.mark.skipif(importlib.util.find_spec("mypy") is None, reason="mypy not installed (pip install mypy)")
def test_core_stubs_match_runtime():
    r = subprocess.run([sys.executable, "-m", "mypy.stubtest", "vdeplug._core"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr

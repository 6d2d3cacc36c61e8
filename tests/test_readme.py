"""Every ``python`` example in README.md runs as written (in a fresh
interpreter, from a scratch directory) and ends by itself."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"


def python_examples() -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", README.read_text(), flags=re.S | re.M)


EXAMPLES = python_examples()


def test_readme_has_python_examples() -> None:
    assert len(EXAMPLES) >= 3


@pytest.mark.parametrize("code", EXAMPLES, ids=[f"example{i}" for i in range(len(EXAMPLES))])
def test_readme_example_runs(code: str, tmp_path: Path) -> None:
    if "vdeplug.lab" in code and os.geteuid() != 0:
        pytest.skip("the vdeplug.lab example needs root (network namespaces)")
    for stale in ("/tmp/link",):
        # A socket left by an earlier run would be a foreign peer.
        if os.path.exists(stale) and not os.path.isdir(stale):
            os.unlink(stale)
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    if "udp://47011" in code:
        assert "b'hello' Stats(frames_in=1, bytes_in=60" in r.stdout
    if "async def echo" in code:
        assert "idle for 1.0 s" in r.stdout

"""Rootless labs (issue 25, item 2): ``vdeplug.lab`` for an ordinary user,
through a user namespace of the lab's own; run here as ``nobody``.

The suite's lab-based tests run as nobody (conftest's AS_NOBODY: a
selection that uses the lab in every way the suite does, in one pytest run;
as root, those that only repeat the root lab's uses run as nobody only),
and a representative lab shows that nothing is left behind: no process, no
/run/netns entry, no work directory.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import textwrap
from pathlib import Path

import pytest
from conftest import AS_NOBODY, NOBODY, NobodyEnv, nobody_labs_unavailable

HERE = Path(__file__).parent

pytestmark = pytest.mark.skipif(nobody_labs_unavailable() is not None, reason=nobody_labs_unavailable() or "")


@pytest.fixture(scope="module")
def python(nobody_env: NobodyEnv) -> str:
    return nobody_env.python


def as_nobody(python: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    cwd = Path(f"/tmp/vdeplug-nobody-cwd-{os.getpid()}")
    cwd.mkdir(exist_ok=True)
    shutil.chown(cwd, "nobody", "nogroup")
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "VIRTUAL_ENV"))}
        env.update(HOME=str(cwd), PATH=f"{Path(python).parent}:/usr/sbin:/usr/bin:/sbin:/bin")
        return subprocess.run([*NOBODY, python, *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=timeout)
    finally:
        shutil.rmtree(cwd, ignore_errors=True)


LAB = textwrap.dedent(
    """
    import json, os, sys
    from vdeplug.lab import Lab, can_build

    assert os.geteuid() != 0 and can_build() is None, can_build()
    spec = {
        "switches": ["sw"],
        "hosts": {
            "a": {"plug": "sw", "ip": ["10.0.0.1/24", "fd00::1/64"]},
            "b": {"plug": "vxvde://239.1.2.3", "ip": ["10.0.0.2/24", "fd00::2/64"]},
            "c": {"plug": "sw", "vlan": 5, "ip": "10.5.0.3/24"},
            "d": {"plug": "vxvde://239.1.2.3", "vlan": 5, "ip": "10.5.0.4/24"},
        },
        "cables": [["sw", "vxvde://239.1.2.3"]],
    }
    out = {}
    with Lab(spec) as lab:
        out["a-b"] = lab.hosts["a"].ping("10.0.0.2")
        out["b-a6"] = lab.hosts["b"].ping("fd00::1")
        out["c-d"] = lab.hosts["c"].ping("10.5.0.4")
        out["a-d"] = lab.hosts["a"].ping("10.5.0.4", count=1, wait=0.5)
        hosts = lab.lan(3, multicast=False)
        peers = ",".join(h.ip4 for h in hosts)
        for k, h in enumerate(hosts, 1):
            h.plug(f"vxlan://{peers}/vni=42", "vx0", ip=f"192.168.42.{k}/24")
        out["vxlan"] = hosts[0].ping("192.168.42.3") and hosts[2].ping("192.168.42.2")
        out["pids"] = [p.pid for p in lab.procs] + [h.pid for h in lab._holders.values()]
        out["workdir"] = lab.workdir
    print(json.dumps(out))
    """
)


def test_representative_lab_as_nobody_and_nothing_left(python: str) -> None:
    before = sorted(os.listdir("/run/netns")) if os.path.isdir("/run/netns") else []
    r = as_nobody(python, "-c", LAB)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["a-b"] and out["b-a6"] and out["c-d"] and out["vxlan"], out
    assert not out["a-d"], "VLAN 5 stays apart"
    assert (sorted(os.listdir("/run/netns")) if os.path.isdir("/run/netns") else []) == before
    assert not os.path.exists(out["workdir"])
    assert [pid for pid in out["pids"] if os.path.exists(f"/proc/{pid}")] == []


def test_the_suites_lab_tests_pass_as_nobody(python: str) -> None:
    root = Path(python).parents[2]
    """conftest's AS_NOBODY: the lab-based tests, through a rootless lab."""
    tests = [str(root / "tests" / t) for t in AS_NOBODY]  # nobody's copy of the tests
    r = as_nobody(python, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", str(root), *tests, timeout=300)
    want = len(AS_NOBODY) - 1 + 3  # test_restart.py holds three
    assert r.returncode == 0 and f"{want} passed" in r.stdout and "skipped" not in r.stdout, r.stdout[-3000:] + r.stderr[-2000:]


def test_lab_without_user_namespaces_says_why(monkeypatch: pytest.MonkeyPatch) -> None:
    from vdeplug import lab as labmod

    monkeypatch.setattr(labmod.os, "geteuid", lambda: 1000)
    monkeypatch.setattr(labmod._userns, "unavailable", lambda: "unprivileged user namespaces are disabled on this kernel (…)")
    assert labmod.can_build() == "needs root: unprivileged user namespaces are disabled on this kernel (…)"
    with pytest.raises(labmod.LabError, match=r"host a: needs root: unprivileged user namespaces are disabled"):
        labmod.Lab({"hosts": {"a": {"plug": "null://"}}})

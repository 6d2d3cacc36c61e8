"""Shared helpers: frame makers, a driver for the C ``vde_plug`` in stream
mode, free ports, and skip markers for tests that need root or C tools."""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

C_VDE_PLUG = "/usr/bin/vde_plug"
C_DPIPE = "/usr/bin/dpipe"
BIN = Path(sys.executable).parent
VDE_PLUG = shutil.which("vde_plug", path=str(BIN)) or str(BIN / "vde_plug")
DPIPE = shutil.which("dpipe", path=str(BIN)) or str(BIN / "dpipe")

needs_c = pytest.mark.skipif(not os.path.exists(C_VDE_PLUG), reason="C vde_plug not installed (apt-get install vdeplug)")
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (network namespaces, tap)")

SIZES = [60, 61, 64, 100, 333, 512, 1000, 1400, 1500, 1514]


def frame(size: int, src: int = 2, dst: bytes = b"\xff" * 6, seed: int | None = None) -> bytes:
    """A valid Ethernet frame of ``size`` bytes with random payload."""
    rnd = random.Random(seed if seed is not None else size * 7919 + src)
    mac = bytes([0x02, 0, 0, 0, 0, src])
    return dst + mac + b"\x88\xb5" + bytes(rnd.getrandbits(8) for _ in range(size - 14))


def mac(n: int) -> bytes:
    return bytes([0x02, 0, 0, 0, 0, n])


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def read_exact(f, n: int, timeout: float = 5.0) -> bytes:
    """Read n bytes from a pipe file object within timeout."""
    import select

    out = b""
    deadline = time.monotonic() + timeout
    fd = f.fileno()
    while len(out) < n:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            raise TimeoutError(f"read {len(out)} of {n} bytes")
        chunk = os.read(fd, n - len(out))
        if not chunk:
            raise EOFError(f"EOF after {len(out)} of {n} bytes")
        out += chunk
    return out


class StreamPeer:
    """A process speaking the vdeplug stream framing on its stdin/stdout
    (the C ``vde_plug URL``, or ours)."""

    def __init__(self, argv: list[str]) -> None:
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def send(self, f: bytes) -> None:
        assert self.proc.stdin
        self.proc.stdin.write(struct.pack(">H", len(f)) + f)
        self.proc.stdin.flush()

    def recv(self, timeout: float = 5.0) -> bytes:
        assert self.proc.stdout
        (n,) = struct.unpack(">H", read_exact(self.proc.stdout, 2, timeout))
        return read_exact(self.proc.stdout, n, timeout)

    def close(self) -> int:
        if self.proc.stdin:
            try:
                self.proc.stdin.close()
            except BrokenPipeError:
                pass
        try:
            return self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()


@pytest.fixture
def stream_peers() -> Iterator[list[StreamPeer]]:
    peers: list[StreamPeer] = []
    yield peers
    for p in peers:
        p.close()


def wait_for(pred, timeout: float = 5.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.02)
    raise TimeoutError(f"timed out waiting for {what}")


from netns import lan_factory  # noqa: E402,F401  (a fixture, shared by every test module)

# ---------------------------------------------------------------- child processes
# Every process a test starts is reaped, and its pipes closed, when the test
# ends (after the test's own fixtures cleaned up): a test that fails half-way
# leaves no running plug behind, and pytest's filterwarnings = error holds
# for ResourceWarnings too.

_POPENS: list[subprocess.Popen[Any]] = []  # held until the test ends: no pipe is closed by GC
_popen_init = subprocess.Popen.__init__


def _tracked_init(self: subprocess.Popen[Any], *args: Any, **kw: Any) -> None:
    _popen_init(self, *args, **kw)
    _POPENS.append(self)


subprocess.Popen.__init__ = _tracked_init  # type: ignore[method-assign]


@pytest.fixture(autouse=True)
def _reap_children():
    start = len(_POPENS)
    yield
    for p in _POPENS[start:]:
        if p.poll() is None:
            p.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(5)
        for f in (p.stdin, p.stdout, p.stderr):
            if f is not None:
                with contextlib.suppress(OSError):
                    f.close()
    del _POPENS[start:]


# ---------------------------------------------------------------- as nobody

NOBODY = ["setpriv", "--reuid", "nobody", "--regid", "nogroup", "--clear-groups"]
# What a Python run by nobody needs to import vdeplug and run the suite's tests.
NOBODY_DISTS = ("vdeplug", "pytest", "pluggy", "iniconfig", "packaging", "pygments", "pytest-timeout", "hypothesis", "sortedcontainers", "attrs", "exceptiongroup")


class NobodyEnv:
    """A Python that ``nobody`` can run, with this vdeplug, its console
    scripts (``bin/vde_plug``, ``bin/dpipe``, ``bin/vdens``) and a copy of
    the tests (``root/tests``). The Python under test may live where nobody
    cannot reach (a pyenv under /root, mode 0700), so this is a venv of the
    system's Python in a root-owned 0755 directory, holding copies of the
    installed distributions it needs."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.bin = root / "venv" / "bin"
        self.python = str(self.bin / "python")
        self.tests = root / "tests"


def _build_nobody_env(root: Path) -> NobodyEnv:
    import importlib.metadata as md

    env = NobodyEnv(root)
    base = shutil.which("python3", path="/usr/local/bin:/usr/bin:/bin")
    if base is None:
        pytest.skip("no system python3 for nobody")
    subprocess.run([base, "-m", "venv", "--without-pip", str(root / "venv")], check=True)
    purelib = Path(subprocess.run([env.python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], capture_output=True, text=True, check=True).stdout.strip())
    for name in NOBODY_DISTS:
        try:
            dist = md.distribution(name)
        except md.PackageNotFoundError:
            continue
        for f in dist.files or ():
            if ".." in f.parts or "__pycache__" in f.parts:
                continue  # scripts and data outside site-packages; caches
            dst = purelib / f
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(dist.locate_file(f), dst)
    for name, module in (("vde_plug", "vdeplug.cli"), ("dpipe", "vdeplug.dpipe"), ("vdens", "vdeplug.vdens")):
        script = env.bin / name
        script.write_text(f"#!{env.python}\nimport sys\nfrom {module} import main\nsys.exit(main())\n")
    here = Path(__file__).parent
    shutil.copytree(here, env.tests, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    shutil.copy2(here.parent / "pyproject.toml", root / "pyproject.toml")  # pytest's settings
    for d in (root, *root.rglob("*")):
        if not d.is_symlink():
            d.chmod(0o755 if d.is_dir() or os.access(d, os.X_OK) or d.parent == env.bin else 0o644)
    r = subprocess.run([*NOBODY, env.python, "-c", "import vdeplug._core, pytest"], capture_output=True, text=True, cwd="/")
    if r.returncode:
        pytest.fail(f"nobody cannot import vdeplug from {root}: {r.stderr[-500:]}")
    return env


@pytest.fixture(scope="session")
def nobody_env() -> Iterator[NobodyEnv]:
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("runs as nobody through setpriv (needs root and util-linux)")
    import tempfile

    root = Path(tempfile.mkdtemp(prefix="vdeplug-nobody-"))
    try:
        yield _build_nobody_env(root)
    finally:
        shutil.rmtree(root, ignore_errors=True)


# ---------------------------------------------------------------- lab tests as nobody
# tests/test_lab_rootless.py runs these lab-based tests (and restart://,
# which needs no privilege) as nobody, in one pytest run, through a rootless
# Lab: together they use the lab in every way the suite does (each kind of
# lan, switches, cables, VLANs, link parameters, an error while building, the
# kernel's vxlan, our plugs, C programs and plugins in hosts, ptp:// sockets
# shared with the test, /sys per host, the underlay). False: as root, the
# test runs as nobody only, as the root lab's same uses are tested by the
# suite's other lab tests; True: it runs as root too (the lab's own tests).
# Not as nobody: qemu, the sealed-overlay attacker and the bulk offload
# transfers (slow, and their lab uses are the ones above); captures with
# tcpdump (as root of a user namespace it drops to user tcpdump, unmapped
# there: setgroups/setuid fail with EPERM, and it exits); the DNS tests (a
# resolv.conf per namespace is `ip netns exec`'s, root only); macvtap (see
# tests/test_macvtap.py).
AS_NOBODY = {
    "test_scripting.py::test_lab_builds_switch_hosts_and_vxvde_backbone_and_leaves_nothing": True,
    "test_scripting.py::test_lab_error_while_building_tears_down_what_was_built": True,
    "test_wirefilter.py::test_lab_host_with_link_delay_pings_slower": True,
    "test_messages.py::test_a_lab_reference_that_is_no_switch_is_not_taken_as_a_path": True,
    "test_overlay_netns.py::test_tap_delivers_kernel_arp_byte_identical": True,
    "test_overlay_netns.py::test_vxlan_interop_with_kernel_and_wrong_vni": False,
    "test_overlay_netns.py::test_vxlan_ipv6_group_with_kernel": False,
    "test_overlay_netns.py::test_vxvde_many_endpoints_per_host_no_echo_learning_leave[ipv6]": False,
    "test_overlay_netns.py::test_vxvde_c_and_ours_share_a_host": False,
    "test_overlay_netns.py::test_vxlan_bursts_from_ours_reach_kernel": False,
    "test_overlay_netns.py::test_vxlan_unicast_flood_list_with_kernel": False,
    "test_offload.py::test_c_vxvde_takes_our_segments_and_we_coalesce_its": False,
    "test_libvdeplug.py::test_c_program_vxvde_ours_and_debian_in_netns": False,
    "test_agno.py::test_taps_ping_over_agno_vxvde_debian_and_ours_in_namespaces": False,
    "test_reliability.py::test_vxlan_malformed_headers_counted_valid_frame_delivered": False,
    "test_restart.py": False,
}
AS_NOBODY_RUN = "tests/test_lab_rootless.py::test_the_suites_lab_tests_pass_as_nobody"


def nobody_labs_unavailable() -> str | None:
    """None if root can run tests as nobody with rootless labs, else why not
    (makes /dev/net/tun 0666, as distributions ship it, if it is not)."""
    from vdeplug import _userns

    if os.geteuid() != 0:
        return "switches to nobody through setpriv (needs root)"
    for tool in ("setpriv", "unshare", "nsenter", "ip"):
        if shutil.which(tool) is None:
            return f"needs {tool}"
    if _userns.unavailable():
        return _userns.unavailable()
    if os.stat("/dev/net/tun").st_mode & 0o006 != 0o006:
        os.chmod("/dev/net/tun", 0o666)
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    nobody_only = [item for item in items if not AS_NOBODY.get(f"{item.path.name}::{item.name}", AS_NOBODY.get(item.path.name, True))]
    if not nobody_only or os.geteuid() != 0 or nobody_labs_unavailable() is not None:
        return
    for item in nobody_only:
        item.add_marker(pytest.mark.skip(reason=f"as root, runs as nobody (rootless lab) in {AS_NOBODY_RUN}"))

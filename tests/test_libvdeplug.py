"""libvdeplug.so.2 and libvdeplug_mod.so.2 from our Rust core: programs
built for Debian's library run on ours (qemu included), C plugins load
from both faces (our library and vde_plug/Python), and a plugin of our own
builds and runs against our package alone. Real peers, no mocks: Debian's
libvdeplug2 on the other end, qemu's iPXE boot ROM, Debian's slirp and vlan
plugins."""

from __future__ import annotations

import ctypes
import os
import re
import select
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest
import vdeplug
from conftest import VDE_PLUG, frame, free_udp_port, wait_for
from netns import needs_netns
from vdeplug.lab import Host

HERE = Path(__file__).parent
LIBDIR = vdeplug.libdir()
OURS = os.path.join(LIBDIR, "libvdeplug.so.2")
DEB_HEADER = "/usr/include/libvdeplug.h"
DEB_PLUGINS = Path("/usr/lib/x86_64-linux-gnu/vdeplug")
GCC = shutil.which("gcc")
QEMU = shutil.which("qemu-system-x86_64")

needs_lib = pytest.mark.skipif(not os.path.exists(OURS), reason=f"{OURS} not built (pip install .)")
needs_cc = pytest.mark.skipif(
    GCC is None or not os.path.exists(DEB_HEADER),
    reason="needs gcc and Debian's libvdeplug.h (apt-get install gcc libvdeplug-dev)",
)
needs_slirp = pytest.mark.skipif(not (DEB_PLUGINS / "libvdeplug_slirp.so").exists(), reason="Debian's slirp plugin missing (apt-get install libvdeplug-slirp)")
needs_vlan = pytest.mark.skipif(not (DEB_PLUGINS / "libvdeplug_vlan.so").exists(), reason="Debian's vlan plugin missing (apt-get install libvdeplug-vlan)")
needs_qemu = pytest.mark.skipif(QEMU is None, reason="qemu-system-x86_64 not installed (apt-get install qemu-system-x86)")

CORE = ["vde_open_real", "vde_recv", "vde_send", "vde_datafd", "vde_ctlfd", "vde_close", "vdestream_open", "vdestream_send", "vdestream_recv", "vdestream_close", "__vde_version_tag"]
MOD = ["vde_parseparms", "vde_parsepathparms", "vde_parsenestparms", "_vde_hash_init", "vde_hash_fini", "vde_find_in_hash", "vde_find_in_hash_update", "vde_hash_delete", "strtoullm", "vde_grnam2gid"]


def ours_env(**extra: str) -> dict[str, str]:
    return dict(os.environ, LD_LIBRARY_PATH=LIBDIR, **extra)


@pytest.fixture(scope="module")
def vdepeer(tmp_path_factory) -> str:
    """tests/c/vdepeer.c, built against Debian's <libvdeplug.h>."""
    if GCC is None or not os.path.exists(DEB_HEADER):
        pytest.skip("needs gcc and libvdeplug-dev")
    out = tmp_path_factory.mktemp("c") / "vdepeer"
    subprocess.run([GCC, "-O2", "-Wall", "-o", str(out), str(HERE / "c" / "vdepeer.c"), "-lvdeplug", "-lpthread", "-ldl"], check=True)
    return str(out)


def peer(binary: str, vnl: str, *args: str, ours: bool, host: Host | None = None) -> subprocess.Popen[str]:
    cmd = [binary, vnl, *args]
    if host:
        cmd = host.command(*cmd)
    env = ours_env() if ours else dict(os.environ)
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(p: subprocess.Popen[str], timeout: float = 30) -> tuple[int, str]:
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        # Where it hangs, for the log: every thread's stack, then kill it.
        stacks = ""
        if shutil.which("gdb"):
            stacks = subprocess.run(["gdb", "-p", str(p.pid), "-batch", "-ex", "thread apply all bt"], capture_output=True, text=True, timeout=60).stdout
        p.kill()
        out, err = p.communicate()
        raise AssertionError(f"{p.args} hung for {timeout} s; output so far:\n{out}{err}\nstacks:\n{stacks}") from None
    return p.returncode, out + err


def wait_open(p: subprocess.Popen[str], timeout: float = 20) -> str:
    """vdepeer's output up to its "open" line (vde_open returned: a ptp end
    is bound, a switch is listening), read from the pipe itself so that
    communicate() gets the rest; prepend it to what finish() returns."""
    assert p.stdout
    seen, deadline = b"", time.monotonic() + timeout
    while b"\nopen\n" not in b"\n" + seen:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([p.stdout], [], [], left)[0]:
            raise AssertionError(f"{p.args} not open after {timeout} s: {seen.decode(errors='replace')}")
        chunk = os.read(p.stdout.fileno(), 4096)
        if not chunk:
            break  # it ended: finish() says why
        seen += chunk
    return seen.decode()


def lib_of(output: str) -> str:
    m = re.search(r"^lib=(.*)$", output, re.M)
    assert m, output
    return os.path.realpath(m.group(1))


# ---------------------------------------------------------------- the files


@needs_lib
def test_exports_soname_and_version_tag():
    for path, soname, names in ((OURS, "libvdeplug.so.2", CORE), (os.path.join(LIBDIR, "libvdeplug_mod.so.2"), "libvdeplug_mod.so.2", MOD)):
        dyn = subprocess.run(["readelf", "-d", "-W", path], capture_output=True, text=True, check=True).stdout
        assert f"Library soname: [{soname}]" in dyn
        assert "libpython" not in dyn, "no Python inside"
        syms = subprocess.run(["nm", "-D", "--defined-only", path], capture_output=True, text=True, check=True).stdout
        exported = sorted(line.split()[-1] for line in syms.splitlines() if line.strip())
        assert exported == sorted(names), exported
        assert "@" not in syms, "unversioned, as Debian's"
    lib = ctypes.CDLL(OURS)
    assert ctypes.c_uint64.in_dll(lib, "__vde_version_tag").value == 4
    for header in ("libvdeplug.h", "libvdeplug_mod.h"):
        assert os.path.exists(os.path.join(LIBDIR, header))


def test_libdir_cli_and_api():
    r = subprocess.run([VDE_PLUG, "--libdir"], capture_output=True, text=True, timeout=10)
    assert r.returncode == 0 and r.stdout.strip() == vdeplug.libdir()


# ---------------------------------------------------------------- C programs: ours <-> Debian's


def _vde_switch(tmp_path: Path) -> tuple[str, subprocess.Popen[bytes]]:
    d = tmp_path / "vs"
    p = subprocess.Popen(["vde_switch", "-s", str(d)], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for(lambda: (d / "ctl").exists(), what="vde_switch")
    return str(d), p


@needs_lib
@needs_cc
@pytest.mark.parametrize("kind", ["ptp", "udp", "vde_switch", "our switch"])
@pytest.mark.parametrize("ours_first", [True, False])
def test_c_program_on_our_library_talks_to_debian(vdepeer, tmp_path, kind, ours_first):
    cleanup = None
    if kind == "ptp":
        a = b = f"ptp://{tmp_path / 'link'}"
    elif kind == "udp":
        pa, pb = free_udp_port(), free_udp_port()
        a, b = f"udp://127.0.0.1:{pa}->127.0.0.1:{pb}", f"udp://127.0.0.1:{pb}->127.0.0.1:{pa}"
    elif kind == "vde_switch":
        if shutil.which("vde_switch") is None:
            pytest.skip("vde_switch not installed (apt-get install vde-switch)")
        d, cleanup = _vde_switch(tmp_path)
        a, b = f"vde://{d}", d
    else:  # our switch, inside the program on our library; Debian's vde plugin joins it
        d = str(tmp_path / "sw")
        a, b = f"switch://{d}", f"vde://{d}"
    try:
        first = peer(vdepeer, a, "pingpong", "1", "40", "15", ours=ours_first)
        early = wait_open(first)  # the first end is really first
        second = peer(vdepeer, b, "pingpong", "2", "40", "15", ours=not ours_first)
        (rc1, out1), (rc2, out2) = finish(first), finish(second)
        out1 = early + out1
        assert rc1 == 0 and rc2 == 0, out1 + out2
        libs = {True: lib_of(out1 if ours_first else out2), False: lib_of(out2 if ours_first else out1)}
        assert libs[True] == os.path.realpath(OURS), libs
        assert libs[False] != os.path.realpath(OURS) and "libvdeplug.so" in libs[False]
    finally:
        if cleanup is not None:
            cleanup.terminate()
            cleanup.wait(5)


@needs_lib
@needs_cc
@needs_netns
def test_c_program_vxvde_ours_and_debian_in_netns(vdepeer, lan_factory):
    lan = lan_factory(2)
    h1, h2 = lan.hosts
    group = "vxvde://239.5.6.7"
    ours = peer(vdepeer, group, "pingpong", "1", "40", "20", ours=True, host=h1)
    deb = peer(vdepeer, group, "pingpong", "2", "40", "20", ours=False, host=h2)
    (rc1, out1), (rc2, out2) = finish(ours), finish(deb)
    assert rc1 == 0 and rc2 == 0, out1 + out2
    assert lib_of(out1) == os.path.realpath(OURS) and lib_of(out2) != lib_of(out1)


@needs_lib
@needs_cc
@pytest.mark.parametrize("scheme", ["vxlan", "vxvde"])
def test_c_programs_on_our_library_over_unicast_peers(vdepeer, scheme):
    """Overlays without multicast reach C programs too: the VNL goes through vde_open unchanged."""
    pa, pb = free_udp_port(), free_udp_port()
    a = peer(vdepeer, f"{scheme}://127.0.0.1:{pb}/port={pa}", "pingpong", "1", "40", "20", ours=True)
    b = peer(vdepeer, f"{scheme}://127.0.0.1:{pa}/port={pb}", "pingpong", "2", "40", "20", ours=True)
    (rc1, out1), (rc2, out2) = finish(a), finish(b)
    assert rc1 == 0 and rc2 == 0, out1 + out2


@needs_lib
@needs_cc
@pytest.mark.parametrize("echo_on_ours", [True, False])
def test_two_threads_send_and_recv_on_one_connection(vdepeer, tmp_path, echo_on_ours):
    """VirtualBox does it: one thread sends while another receives. 20 000
    numbered frames of 60-1514 bytes come back, none lost or corrupted."""
    link = f"ptp://{tmp_path / 'l'}"
    echo = peer(vdepeer, link, "echo", "3", ours=echo_on_ours)
    wait_open(echo)
    rc, out = finish(peer(vdepeer, link, "threads", "20000", ours=True), timeout=90)
    assert rc == 0 and "got=20000 bad=0" in out, out
    echo.kill()
    echo.wait()


@needs_lib
def test_recv_hides_non_frames_and_send_never_returns_zero(tmp_path):
    """ctypes on our library: runts and oversized datagrams never reach the
    caller (qemu would take any positive size as a frame), the data fd is
    readable exactly while frames are queued, and a dropped frame is
    reported sent (qemu stops transmitting on 0)."""
    lib = ctypes.CDLL(OURS)
    lib.vde_open_real.restype = ctypes.c_void_p
    lib.vde_open_real.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_int, ctypes.c_void_p]
    for fn in ("vde_recv", "vde_send"):
        getattr(lib, fn).restype = ctypes.c_ssize_t
        getattr(lib, fn).argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    lib.vde_datafd.argtypes = lib.vde_close.argtypes = [ctypes.c_void_p]
    pa, pb = free_udp_port(), free_udp_port()
    conn = lib.vde_open_real(f"udp://127.0.0.1:{pa}->127.0.0.1:{pb}".encode(), b"test", 1, None)
    assert conn, ctypes.get_errno()
    try:
        raw = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        raw.bind(("127.0.0.1", pb))
        raw.setblocking(False)
        for d in (b"x", bytes(13), frame(60), bytes(9300), frame(61), frame(62)):
            raw.sendto(d, ("127.0.0.1", pa))
        buf = ctypes.create_string_buffer(9234)
        fd = lib.vde_datafd(conn)
        import select

        got = []
        while select.select([fd], [], [], 1)[0]:
            n = lib.vde_recv(conn, buf, 9234, 0)
            if n > 0:
                got.append(buf.raw[:n])
        assert got == [frame(60), frame(61), frame(62)]
        assert not select.select([fd], [], [], 0)[0], "not readable once drained"
        assert lib.vde_send(conn, b"runt", 4, 0) == 4, "dropped, reported sent"
        assert lib.vde_send(conn, frame(100), 100, 0) == 100
        assert raw.recv(2000) == frame(100)
        raw.close()
    finally:
        assert lib.vde_close(conn) == 0


# ---------------------------------------------------------------- qemu on our library


def qemu_lease(nic: str, env: dict[str, str], host: Host | None = None, timeout: float = 90) -> tuple[bool, str, str]:
    """Boot qemu's iPXE ROM with `-nic vde,…`; whether it printed a DHCP
    lease (net0: 10.0.2.15), its output, and the libvdeplug it mapped."""
    cmd = [QEMU or "qemu-system-x86_64", "-nographic", "-nic", f"vde,{nic},model=e1000", "-boot", "n", "-m", "64", "-monitor", "none"]
    if host:
        cmd = host.command(*cmd)
    q = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert q.stdout
    os.set_blocking(q.stdout.fileno(), False)
    out = b""
    mapped = ""
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and q.poll() is None:
            time.sleep(0.2)
            out += q.stdout.read() or b""
            if not mapped:  # `ip netns exec` and nsenter exec qemu: same pid
                try:
                    m = re.search(r"(\S*libvdeplug\.so[.\d]*)$", Path(f"/proc/{q.pid}/maps").read_text(), re.M)
                except OSError:
                    m = None
                if m:
                    mapped = os.path.realpath(m.group(1))
            if b"net0: 10.0.2.15" in out:
                return True, out.decode(errors="replace"), mapped
        return False, out.decode(errors="replace"), mapped
    finally:
        q.kill()
        q.wait()


@pytest.mark.slow
@needs_lib
@needs_qemu
@needs_slirp
def test_qemu_on_our_library_slirp_plugin_gives_a_lease():
    """qemu -nic vde,sock=slirp:// through our library: Debian's slirp
    plugin is loaded as a C plugin by our vde_open_real."""
    ok, out, mapped = qemu_lease("sock=slirp://", ours_env())
    assert mapped == os.path.realpath(OURS), mapped
    assert ok, out[-2000:]


@pytest.mark.slow
@needs_lib
@needs_qemu
@needs_slirp
def test_qemu_on_our_library_joins_our_switch(tmp_path):
    """-nic vde,sock=PATH: our vde plugin (in our library) joins our
    switch; `vde_plug vde://PATH slirp://` on the other port serves DHCP."""
    d = tmp_path / "sw"
    sw = subprocess.Popen([VDE_PLUG, "null://", f"switch://{d}"], stderr=subprocess.PIPE)
    wait_for(lambda: (d / "ctl").exists(), what="switch")
    slirp = subprocess.Popen([VDE_PLUG, f"vde://{d}", "slirp://"], stderr=subprocess.PIPE)
    try:
        ok, out, mapped = qemu_lease(f"sock={d}", ours_env())
        assert mapped == os.path.realpath(OURS), mapped
        assert ok, out[-2000:]
    finally:
        for p in (slirp, sw):
            p.terminate()
            p.wait(5)


@pytest.mark.slow
@needs_lib
@needs_qemu
@needs_slirp
@needs_netns
def test_qemu_vxvde_to_our_vde_plug_with_slirp(lan_factory):
    """The headline: a VM on one host plugged straight into a distributed
    switch (our library), DHCP served on another host by our vde_plug
    joining vxvde:// to Debian's slirp plugin (a C plugin loaded by vde_plug)."""
    lan = lan_factory(2)
    h1, h2 = lan.hosts
    vnl = "vxvde://239.7.7.7"
    plug = h2.popen(VDE_PLUG, vnl, "slirp://")
    time.sleep(0.5)
    assert plug.poll() is None, plug.stderr.read() if plug.stderr else ""
    ok, out, mapped = qemu_lease(f"sock={vnl}", ours_env(), host=h1)
    assert mapped == os.path.realpath(OURS), mapped
    assert ok, out[-2000:]


# ---------------------------------------------------------------- C plugins from both faces


def _cvlan_dir(tmp_path: Path) -> Path:
    """Debian's vlan plugin under another scheme (cvlan), since our
    built-in vlan:// takes that name; the C code is Debian's."""
    d = tmp_path / "plugins"
    d.mkdir()
    shutil.copyfile(DEB_PLUGINS / "libvdeplug_vlan.so", d / "libvdeplug_cvlan.so")
    return d


@needs_lib
@needs_vlan
def test_debian_vlan_plugin_nested_around_our_scheme_from_python(tmp_path, monkeypatch):
    """From vdeplug.open / vde_plug: Debian's vlan C plugin, whose inner
    ptp:// is opened through the global vde_open_real: ours."""
    monkeypatch.setenv("VDEPLUGIN_PATH", str(_cvlan_dir(tmp_path)))
    link = tmp_path / "l"
    with vdeplug.open(f"ptp://{link}") as raw, vdeplug.open(f"cvlan://5{{ptp://{link}}}") as tagged:
        maps = Path("/proc/self/maps").read_text()
        assert OURS in maps or os.path.realpath(OURS) in maps, "our library serves the nested open"
        assert tagged.send(frame(60)) == 60
        f = raw.recv(timeout=2)
        assert f[12:16] == b"\x81\x00\x00\x05" and f[:12] + f[16:] == frame(60), f.hex()
        t = frame(70)
        raw.send(t[:12] + b"\x81\x00\x00\x05" + t[12:])
        assert tagged.recv(timeout=2) == t
    r = subprocess.run([VDE_PLUG, "--help"], capture_output=True, text=True, env=dict(os.environ, VDEPLUGIN_PATH=str(tmp_path / "plugins")))
    assert re.search(r"cvlan://\s+C plugin .*libvdeplug_cvlan.so", r.stdout), r.stdout


@needs_lib
@needs_cc
@needs_vlan
def test_debian_vlan_plugin_nested_around_our_scheme_from_our_library(vdepeer, tmp_path):
    plugins = _cvlan_dir(tmp_path)
    link = tmp_path / "l"
    with vdeplug.open(f"ptp://{link}") as raw:
        p = subprocess.Popen([vdepeer, f"cvlan://5{{ptp://{link}}}", "pingpong", "3", "1", "10"], env=ours_env(VDEPLUGIN_PATH=str(plugins)), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        f = raw.recv(timeout=5)
        assert f[12:16] == b"\x81\x00\x00\x05", f.hex()
        for _ in range(3):  # answer with frames of another id, tagged 5
            reply = bytearray(f[:12] + f[16:])
            reply[6:12] = bytes([2, 0, 0, 0, 0, 9])
            reply[14] = 9
            raw.send(bytes(reply[:12]) + b"\x81\x00\x00\x05" + bytes(reply[12:]))
            time.sleep(0.05)
        rc, out = finish(p)
        assert rc == 0, out
        assert lib_of(out) == os.path.realpath(OURS)


@needs_lib
@needs_cc
def test_our_own_c_plugin_built_against_our_package_alone(tmp_path, monkeypatch):
    """A plugin built with our headers and linked to our
    libvdeplug_mod.so.2 only (every helper: parse, nest, hash table,
    strtoullm, grnam2gid), loaded from Python; its nested VNL opens through
    our library."""
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    so = plugins / "libvdeplug_mark.so"
    # -I LIBDIR comes before /usr/include: our headers, not Debian's.
    src = str(HERE / "c" / "libvdeplug_mark.c")
    subprocess.run([GCC or "gcc", "-shared", "-fPIC", "-Wall", "-I", LIBDIR, "-o", str(so), src, "-L", LIBDIR, "-l:libvdeplug_mod.so.2", f"-Wl,-rpath,{LIBDIR}"], check=True)
    monkeypatch.setenv("VDEPLUGIN_PATH", str(plugins))
    link = tmp_path / "l"
    with vdeplug.open(f"ptp://{link}") as raw, vdeplug.open(f"mark://7/size=2K/grp=0{{ptp://{link}}}") as m:
        maps = Path("/proc/self/maps").read_text()
        assert os.path.join(LIBDIR, "libvdeplug_mod.so.2") in maps
        station = bytes([2, 0, 0, 0, 0, 9])
        raw.send(b"\xff" * 6 + station + b"\x88\xb5" + bytes(50))
        assert m.recv(timeout=2)[6:12] == station
        m.send(station + bytes([2, 0, 0, 0, 0, 1]) + b"\x88\xb5" + bytes(50))
        assert raw.recv(timeout=2)[14:18] == bytes([7, 0xAA, 2, 0]), "learned station: hash table hit"
        m.send(bytes([2, 0, 0, 0, 0, 8, 2, 0, 0, 0, 0, 1]) + b"\x88\xb5" + bytes(50))
        assert raw.recv(timeout=2)[14:16] == bytes([7, 0x55]), "unknown station"


def test_a_plugin_that_fails_to_load_is_named(tmp_path):
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "libvdeplug_broken.so").write_bytes(b"not an ELF file\n" * 256)
    env = dict(os.environ, VDEPLUGIN_PATH=str(plugins))
    r = subprocess.run([VDE_PLUG, "broken://x", "null://"], capture_output=True, text=True, env=env, timeout=10)
    assert r.returncode == 1
    assert str(plugins / "libvdeplug_broken.so") in r.stderr and "invalid ELF header" in r.stderr, r.stderr
    r = subprocess.run([VDE_PLUG, "nosuch://x", "null://"], capture_output=True, text=True, env=env, timeout=10)
    assert r.returncode == 2 and "unknown scheme 'nosuch'" in r.stderr, r.stderr


# ---------------------------------------------------------------- user-mode Linux's libvdeplug.a


def test_uml_static_shim_command_line(tmp_path):
    """UML's libvdeplug.a runs: vde_plug --descr D --port2 N --group2 G
    --mod2 M seqpacket://FD VNL (fd inherited)."""
    x, y = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    link = tmp_path / "l"
    group = "root" if os.geteuid() == 0 else str(os.getegid())
    p = subprocess.Popen(
        [VDE_PLUG, "--descr", "UML vde_transport", "--port2", "3", "--group2", group, "--mod2", "0660", f"seqpacket://{y.fileno()}", f"ptp://{link}"], pass_fds=[y.fileno()], stderr=subprocess.PIPE
    )
    y.close()
    try:
        wait_for(link.exists, what="ptp socket")
        assert oct(link.stat().st_mode & 0o777) == oct(0o660)
        with vdeplug.open(f"ptp://{link}") as other:
            x.send(frame(60))
            assert other.recv(timeout=2) == frame(60)
            other.send(frame(61))
            x.settimeout(2)
            assert x.recv(9000) == frame(61)
    finally:
        x.close()  # the shim's end: vde_plug sees the hang-up and exits
        assert p.wait(5) in (0, 1)


@needs_lib
def test_mod_parse_helpers_work_in_place():
    """vde_parseparms / vde_parsepathparms / vde_parsenestparms as C
    plugins call them: in place, prefix-matched tags, bare items."""
    mod = ctypes.CDLL(os.path.join(LIBDIR, "libvdeplug_mod.so.2"))
    mod.vde_parsenestparms.restype = ctypes.c_void_p

    class Parm(ctypes.Structure):
        _fields_ = [("tag", ctypes.c_char_p), ("value", ctypes.POINTER(ctypes.c_char_p))]

    def table(*tags: bytes) -> tuple[ctypes.Array, list[ctypes.c_char_p]]:
        vals = [ctypes.c_char_p(None) for _ in tags]
        arr = (Parm * (len(tags) + 1))(*[Parm(t, ctypes.pointer(v)) for t, v in zip(tags, vals)], Parm(None, None))
        return arr, vals

    buf = ctypes.create_string_buffer(b"3/u=4/t=10:11/tr{vde:///tmp/sw[2]}")
    inner = mod.vde_parsenestparms(buf)
    assert buf.value == b"3/u=4/t=10:11/tr" and ctypes.string_at(inner) == b"vde:///tmp/sw[2]"
    arr, (untag, tag, trunk) = table(b"untag", b"tag", b"trunk")
    assert mod.vde_parseparms(buf, arr) == 0
    assert (buf.value, untag.value, tag.value, trunk.value) == (b"3", b"4", b"10:11", b"")
    buf = ctypes.create_string_buffer(b"'/tmp/a b'[5/mode=0660]")
    arr, (port, mode) = table(b"", b"mode")
    assert mod.vde_parsepathparms(buf, arr) == 0
    assert (buf.value, port.value, mode.value) == (b"/tmp/a b", b"5", b"0660")
    arr, _ = table(b"port")
    assert mod.vde_parseparms(ctypes.create_string_buffer(b"x/colour=blue"), arr) == -1
    assert mod.strtoullm(b"2M") == 2 << 20 and mod.vde_grnam2gid(b"") == os.getegid()

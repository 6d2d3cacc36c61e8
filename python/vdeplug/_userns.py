"""User namespaces for an ordinary user: what vdens and rootless labs need
from the kernel (unshare, the uid/gid maps, ambient capabilities, lo up, a
bind mount) through libc, and vdens's inner half.

``inner`` is vdens's child (forked before vdens opens a VNL, so it has a
single thread, as unshare(CLONE_NEWUSER) requires): it makes a user
namespace (the caller mapped to itself), a network and a UTS namespace (and
a mount namespace for -s/-r/-R), opens one tap per VNL and joins each to
the stream fd vdens passed (the VNL itself stays open in vdens, in the
caller's namespaces), grants the capabilities and, once vdens says its
VNLs are open, runs the command and waits for it and every process it
leaves behind (it is their subreaper). When the last one exits it exits
with the command's status: the taps go and vdens sees the streams end.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import fcntl
import os
import signal
import socket
import struct
import sys
import tempfile
import threading
from collections.abc import Sequence
from typing import Any, NoReturn

CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWNET = 0x40000000
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 1 << 18
PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_RAISE = 2
_LINUX_CAPABILITY_VERSION_3 = 0x20080522
SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
IFF_UP = 0x1

CAP_NET_BIND_SERVICE = 10
CAP_NET_BROADCAST = 11
CAP_NET_ADMIN = 12
CAP_NET_RAW = 13
CAP_SYS_ADMIN = 21
#: What vdens grants inside (as ambient capabilities); -s adds CAP_SYS_ADMIN.
VDENS_CAPS = (CAP_NET_ADMIN, CAP_NET_RAW, CAP_NET_BIND_SERVICE, CAP_NET_BROADCAST)

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def _check(rv: int, what: str) -> None:
    if rv != 0:
        e = ctypes.get_errno()
        raise OSError(e, f"{what}: {os.strerror(e)}")


def unavailable() -> str | None:
    """None if this kernel lets an ordinary user make user namespaces, else
    why not (the knob to turn)."""
    for path, bad, fix in (
        ("/proc/sys/kernel/unprivileged_userns_clone", "0", "sysctl kernel.unprivileged_userns_clone=1"),
        ("/proc/sys/user/max_user_namespaces", "0", "sysctl user.max_user_namespaces=15000"),
        ("/proc/sys/kernel/apparmor_restrict_unprivileged_userns", "1", "sysctl kernel.apparmor_restrict_unprivileged_userns=0, or an AppArmor profile allowing userns"),
    ):
        try:
            with open(path) as f:
                if f.read().strip() == bad:
                    return f"unprivileged user namespaces are disabled on this kernel ({path} is {bad}; as root: {fix})"
        except OSError:
            pass
    if not os.path.exists("/proc/self/ns/user"):
        return "this kernel has no user namespaces (CONFIG_USER_NS)"
    return None


def explain(e: OSError) -> str:
    """An unshare failure in words, with the fix when we know it."""
    if e.errno in (errno.EPERM, errno.EACCES, errno.ENOSPC):
        return unavailable() or f"cannot create a user namespace ({os.strerror(e.errno)}): unprivileged user namespaces are restricted on this system"
    if e.errno == errno.EINVAL:
        return "cannot create a user namespace from a multithreaded process"
    return str(e)


def unshare(flags: int) -> None:
    _check(_libc.unshare(flags), "unshare")


def map_self(uid: int, gid: int, inner_uid: int | None = None, inner_gid: int | None = None) -> None:
    """Right after unshare(CLONE_NEWUSER): map the caller's ids (to
    themselves unless told otherwise), the one mapping an ordinary user may
    write. setgroups is denied first, as the kernel requires for gid_map."""
    with open("/proc/self/uid_map", "w") as f:
        f.write(f"{uid if inner_uid is None else inner_uid} {uid} 1\n")
    with open("/proc/self/setgroups", "w") as f:
        f.write("deny\n")
    with open("/proc/self/gid_map", "w") as f:
        f.write(f"{gid if inner_gid is None else inner_gid} {gid} 1\n")


def sethostname(name: str) -> None:
    raw = name.encode()
    _check(_libc.sethostname(raw, len(raw)), f"sethostname {name}")


def bind_mount(source: str, target: str) -> None:
    _check(_libc.mount(source.encode(), target.encode(), None, MS_BIND, None), f"bind mount {source} on {target}")


def make_mounts_private() -> None:
    """In a new mount namespace: nothing we mount propagates anywhere."""
    _check(_libc.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None), "mount --make-rprivate /")


def link_up(name: str) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        req = struct.pack("16sH22x", name.encode(), 0)
        flags = struct.unpack("16sH22x", fcntl.ioctl(s, SIOCGIFFLAGS, req))[1]
        fcntl.ioctl(s, SIOCSIFFLAGS, struct.pack("16sH22x", name.encode(), flags | IFF_UP))


def raise_ambient(caps: Sequence[int]) -> None:
    """Make ``caps`` inheritable and ambient, so the commands we exec keep
    them (as an ordinary uid inside the namespace they would lose all)."""
    header = (ctypes.c_uint32 * 2)(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (ctypes.c_uint32 * 6)()  # two {effective, permitted, inheritable}
    _check(_libc.capget(header, data), "capget")
    for cap in caps:
        data[3 * (cap // 32) + 2] |= 1 << (cap % 32)
    _check(_libc.capset(header, data), "capset")
    for cap in caps:
        _check(_libc.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, cap, 0, 0), f"ambient capability {cap}")


def prctl(option: int, value: int) -> None:
    _check(_libc.prctl(option, value, 0, 0, 0), f"prctl {option}")


def _resolvconf_file(addrs: str) -> str:
    """-R: a resolv.conf with one nameserver line per comma-separated address."""
    fd, path = tempfile.mkstemp(prefix="vdens-resolv-")
    with os.fdopen(fd, "w") as f:
        f.writelines(f"nameserver {a}\n" for a in addrs.split(",") if a)
    os.chmod(path, 0o444)
    return path


def _text(e: OSError) -> str:
    return f"{e.filename}: {e.strerror}" if e.filename else (e.strerror or str(e))


def _die(msg: str, code: int = 1) -> NoReturn:
    print(f"vdens: {msg}", file=sys.stderr, flush=True)
    os._exit(code)


def _plug(tap: Any, stream: Any) -> None:
    """A tap ⇄ its stream until either goes (vdens closing the stream when
    its VNL failed): then the interface goes too."""
    from . import join

    try:
        join(tap, stream)
    finally:
        tap.close()
        stream.close()


def pass_signals_to(child: int) -> None:
    """The command decides about ^C (the terminal sends it to all of us);
    TERM and HUP are passed on to `child`. Python handlers, not SIG_IGN, so
    a command started after this (exec) has the default dispositions."""

    def forward(sig: int, _frame: object) -> None:
        try:
            os.kill(child, sig)
        except ProcessLookupError:
            pass

    for sig in (signal.SIGINT, signal.SIGQUIT):
        signal.signal(sig, lambda *_: None)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, forward)


def inner(cfg: dict[str, Any], go: int, parent: int) -> NoReturn:
    """vdens's half inside the namespaces (see the module docstring): ``go``
    is a pipe that brings a byte once every VNL is open (EOF: give up)."""
    # If vdens is killed, the command hears SIGTERM from us (forwarded).
    prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:
        os._exit(1)
    uid, gid = os.geteuid(), os.getegid()
    flags = CLONE_NEWUSER | CLONE_NEWNET | CLONE_NEWUTS | (CLONE_NEWNS if cfg["newns"] else 0)
    try:
        unshare(flags)
        map_self(uid, gid)
    except OSError as e:
        _die(explain(e))
    try:
        if cfg["hostname"]:
            sethostname(cfg["hostname"])
        if cfg["newns"]:
            make_mounts_private()
        if cfg["resolvaddr"]:
            path = _resolvconf_file(cfg["resolvaddr"])
            try:
                bind_mount(path, "/etc/resolv.conf")
            finally:
                os.unlink(path)  # the mount keeps the file
        elif cfg["resolvconf"]:
            bind_mount(cfg["resolvconf"], "/etc/resolv.conf")
        link_up("lo")
    except OSError as e:
        # A user namespace whose root may not do this: restricted (AppArmor's
        # userns rule gives it no capabilities), not disabled.
        restricted = " (user namespaces are restricted on this system: Ubuntu's kernel.apparmor_restrict_unprivileged_userns=1 needs an AppArmor profile for vdens)"
        _die(_text(e) + (restricted if e.errno in (errno.EPERM, errno.EACCES) else ""))
    from . import _core
    from . import open as vde_open
    from .connection import Connection

    for name, fd in zip(cfg["ifaces"], cfg["fds"]):
        try:
            tap = vde_open(f"tap://{name}")
        except OSError as e:
            hint = ""
            if isinstance(e, PermissionError) and not os.access("/dev/net/tun", os.R_OK | os.W_OK):
                hint = " (/dev/net/tun is not open to this user: distributions ship it mode 0666; as root: chmod 0666 /dev/net/tun)"
            _die(f"tap://{name}: {e.strerror or e}{hint}")
        stream = Connection(_core.open_stream(fd, fd), f"vdens:{name}")
        os.close(fd)
        threading.Thread(target=_plug, args=(tap, stream), daemon=True).start()
    try:
        raise_ambient(cfg["caps"])
        prctl(PR_SET_CHILD_SUBREAPER, 1)
    except OSError as e:
        _die(_text(e))
    if os.read(go, 1) != b"g":
        os._exit(1)  # vdens could not open a VNL (and said so)
    os.close(go)
    argv = cfg["cmd"]
    try:
        child = os.posix_spawnp(argv[0], argv, os.environ)
    except OSError as e:
        _die(f"{argv[0]}: {e.strerror}", 127)

    pass_signals_to(child)
    status = 0
    while True:
        try:
            pid, st = os.waitpid(-1, 0)
        except ChildProcessError:
            break
        if pid == child:
            status = os.waitstatus_to_exitcode(st)
            status = 128 - status if status < 0 else status
    # The last process of the namespace is gone: the taps go with us.
    sys.stdout.flush()
    os._exit(status)

"""``vdens``: a shell (or any command) in a user and network namespace of
its own whose interfaces vde0, vde1 … are plugged into VNLs, with no
privileges (as github:rd235/vdens).

Each VNL is opened here, in the caller's namespaces and with the caller's
rights (so vxvde:// or slirp:// reach the real network, and plugins that
start threads work); the namespaces are made by a child forked first
(``_userns.inner``), which opens the taps inside and hands each tap's
frames to us over a socket pair. Both halves move frames in Rust
(``vdeplug.join``): VNL ⇄ stream here, stream ⇄ tap there. The child
waits for the command and everything it leaves running; when the last of
them exits, the taps go, the streams end and we exit with the command's
status.
"""

from __future__ import annotations

import getopt
import os
import shlex
import socket
import sys
import threading
from collections.abc import Sequence
from typing import Any, NoReturn

from . import _core, _userns, join
from . import open as vde_open
from .connection import Connection
from .vnl import VNLError

PROG = "vdens"

USAGE = """\
usage: vdens [OPTIONS] [VNL [COMMAND [ARGS]]]
       vdens -m [OPTIONS] VNL [VNL ...] [-- COMMAND [ARGS]]

A user and network namespace whose interface vde0 (vde1 … with -m) is
plugged into each VNL; COMMAND ($SHELL if omitted) runs there with
CAP_NET_ADMIN, CAP_NET_RAW, CAP_NET_BIND_SERVICE and CAP_NET_BROADCAST
(in the namespace only). No interface for a VNL of '-' or 'no'; a VNL
'=command args' is a command speaking the stream framing on stdin/stdout.

options: -h/--help  -V/--version
         -m/--multi            one interface per VNL (VNLs end at '--')
         -i/--iface PREFIX     interface names PREFIX0, PREFIX1 … (default vde)
         -r/--resolvconf FILE  FILE appears as /etc/resolv.conf ($VDE_RESOLVCONF)
         -R/--resolvaddr ADDRS a resolv.conf naming these servers, e.g. 9.9.9.9,2620:fe::fe
                               ($VDE_RESOLVADDR; wins over -r)
         -H/--hostname NAME    the namespace's hostname
         -s/--sysadm           grant CAP_SYS_ADMIN too (mounts inside)
         -c/--clone -u/--unshare  accepted for compatibility (vdeplug always keeps
                               the VNLs in this process and makes the namespaces
                               in a child)"""


def die(msg: str, code: int = 1) -> NoReturn:
    print(f"{PROG}: {msg}", file=sys.stderr)
    sys.exit(code)


def no_net(vnl: str) -> bool:
    return vnl in ("", "-", "no")


_OPTS = {"-m": "multi", "-i": "iface", "-s": "sysadm", "-H": "hostname", "-r": "resolvconf", "-R": "resolvaddr"}


def parse(argv: Sequence[str]) -> tuple[dict[str, Any], list[str], list[str]]:
    """(options, VNLs, command) as vdens reads them: options stop at the
    first VNL; without -m the VNL is followed by the command, with -m the
    VNLs run to '--'."""
    try:
        opts, rest = getopt.getopt(list(argv), "+i:hsucmr:H:R:V", ["help", "multi", "iface=", "sysadm", "unshare", "clone", "resolvconf=", "resolvaddr=", "hostname=", "version"])
    except getopt.GetoptError as e:
        die(f"{e}\n{USAGE}", 2)
    o = {"multi": False, "iface": "vde", "sysadm": False, "hostname": None, "resolvconf": os.environ.get("VDE_RESOLVCONF") or None, "resolvaddr": os.environ.get("VDE_RESOLVADDR") or None}
    for k, v in opts:
        if k in ("-h", "--help"):
            print(USAGE)
            sys.exit(0)
        if k in ("-V", "--version"):
            from . import __version__

            print(f"{PROG} (vdeplug) {__version__}")
            sys.exit(0)
        key = _OPTS.get(k, k.lstrip("-"))
        if key in ("multi", "sysadm"):
            o[key] = True
        elif key in ("iface", "hostname", "resolvconf", "resolvaddr"):
            o[key] = v
        # -c/--clone, -u/--unshare: nothing to choose here (see USAGE).
    if o["multi"] and rest:
        end = rest.index("--") if "--" in rest else len(rest)
        vnls, cmd = rest[:end], rest[end + 1 :]
    else:
        vnls, cmd = rest[:1], rest[1:]
    vnls = [v for v in vnls if not no_net(v)] if not o["multi"] else vnls
    if not cmd:
        shell = os.environ.get("SHELL")
        if not shell:
            die("$SHELL env variable not set (name a command)", 1)
        cmd = [shell]
    return o, vnls, cmd


def _open(vnl: str) -> Connection:
    if vnl.startswith("="):
        argv = shlex.split(vnl[1:])
        if not argv:
            die("'=' must be followed by a command", 2)
        return Connection(_core.open_cmd(argv), vnl)
    return vde_open(vnl, descr="vdens")


def main(argv: Sequence[str] | None = None) -> int:
    o, vnls, cmd = parse(sys.argv[1:] if argv is None else argv)
    why = _userns.unavailable()
    if why:
        die(why)
    if vnls and not os.access("/dev/net/tun", os.R_OK | os.W_OK):
        die("/dev/net/tun is not open to this user (needed for the namespace's taps): distributions ship it mode 0666; as root: chmod 0666 /dev/net/tun")
    for path in (o["resolvconf"],) if o["resolvconf"] and not o["resolvaddr"] else ():
        if not os.access(path, os.R_OK):
            die(f"{path}: cannot read it (--resolvconf)")
    cfg = {
        "newns": bool(o["sysadm"] or o["resolvconf"] or o["resolvaddr"]),
        "hostname": o["hostname"],
        "resolvconf": None if o["resolvaddr"] else o["resolvconf"] and os.path.abspath(o["resolvconf"]),
        "resolvaddr": o["resolvaddr"],
        "ifaces": [f"{o['iface']}{i}" for i in range(len(vnls))],
        "caps": ([_userns.CAP_SYS_ADMIN] if o["sysadm"] else []) + list(_userns.VDENS_CAPS),
        "cmd": cmd,
    }
    pairs = [socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM) for _ in vnls]
    cfg["fds"] = [inside.fileno() for _, inside in pairs]
    go_r, go_w = os.pipe()
    sys.stdout.flush()
    sys.stderr.flush()
    parent = os.getpid()
    # Forked before any VNL is open: one thread here, so one in the child.
    child = os.fork()
    if child == 0:
        try:
            os.close(go_w)
            for here, _ in pairs:
                here.close()
            _userns.inner(cfg, go_r, parent)
        finally:
            os._exit(1)
    os.close(go_r)
    _userns.pass_signals_to(child)
    conns: list[Connection] = []
    try:
        for vnl in vnls:
            conns.append(_open(vnl))
    except (VNLError, OSError) as e:
        os.close(go_w)
        os.waitpid(child, 0)
        if isinstance(e, OSError) and e.strerror and not e.filename:
            die(e.strerror, 1)
        die(str(e), 2 if isinstance(e, VNLError) else 1)
    threads = []
    for conn, (here, inside) in zip(conns, pairs):
        inside.close()
        stream = Connection(_core.open_stream(here.fileno(), here.fileno()), "vdens")
        here.close()
        t = threading.Thread(target=_plug, args=(conn, stream), daemon=True)
        t.start()
        threads.append(t)
    try:
        os.write(go_w, b"g")
    except BrokenPipeError:
        pass  # the namespace could not be made (the child said why)
    os.close(go_w)
    _, status = os.waitpid(child, 0)
    for t in threads:
        t.join(5)
    for conn in conns:
        conn.close()
    rc = os.waitstatus_to_exitcode(status)
    return 128 - rc if rc < 0 else rc


def _plug(conn: Connection, stream: Connection) -> None:
    """One VNL ⇄ its tap, until either goes (the namespace ending closes the stream)."""
    end = join(conn, stream)
    stream.close()
    if end.side == 0:
        print(f"{PROG}: {conn.url}: {'peer hung up' if end.closed else end.reason} (its interface is gone)", file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())

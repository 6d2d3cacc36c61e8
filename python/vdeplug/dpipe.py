"""``dpipe cmd1 args = cmd2 args [= cmd3 ...]``: a bidirectional pipe. Each
``=`` joins stdout of the left command to stdin of the right one and back.
A middle command talks to its right neighbour on the fds named by
``$ALTERNATE_STDIN`` / ``$ALTERNATE_STDOUT`` (as vdeplug4's dpipe).
``a =} f }= b`` puts f on the a→b direction only, ``a ={ g {= b`` puts g on
the b→a direction only; both may join the same two commands."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
from collections.abc import Sequence

from ._record import field, record
from .cli import HelpFormatter, Parser, write_pidfile

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import NoReturn

PROG = "dpipe"
USAGE = "usage: dpipe [-d] [-p PIDFILE] [-P PGRPFILE] [-n|-N] command [args] = command [args] [= ...]"


@record
class Link:
    """What joins main command k to main command k+1: commands inserted in
    the left-to-right direction (``=} f }=``) and right-to-left (``={ g {=``)."""

    forward: list[list[str]] = field(default_factory=list)
    backward: list[list[str]] = field(default_factory=list)


@record
class Pipeline:
    mains: list[list[str]]
    links: list[Link]


CONNECTORS = ("=", "=}", "}=", "={", "{=", "}={")


def usage_error(msg: str) -> NoReturn:
    """A bad command line: the reason and the usage, exit status 2 (as vde_plug)."""
    print(f"{PROG}: {msg}\n{USAGE}", file=sys.stderr)
    sys.exit(2)


def split_commands(words: Sequence[str]) -> Pipeline:
    """Parse ``a = b``, ``a =} f }= b``, ``a ={ g {= b``, ``a =} f }={ g {= b``."""
    mains: list[list[str]] = [[]]
    links: list[Link] = []
    mode = "main"  # or "fwd" / "bwd": collecting a one-directional command
    cur: list[str] = []
    for w in words:
        if w not in CONNECTORS:
            (cur if mode != "main" else mains[-1]).append(w)
            continue
        if mode == "main":
            if w == "=":
                links.append(Link())
                mains.append([])
            elif w in ("=}", "={"):
                links.append(Link())
                mode, cur = ("fwd" if w == "=}" else "bwd"), []
            else:
                usage_error(f"unexpected {w!r}")
        elif mode == "fwd" and w in ("}=", "}={"):
            links[-1].forward.append(cur)
            if w == "}=":
                mode = "main"
                mains.append([])
            else:
                mode, cur = "bwd", []
        elif mode == "bwd" and w == "{=":
            links[-1].backward.append(cur)
            mode = "main"
            mains.append([])
        else:
            usage_error(f"unexpected {w!r}")
    if mode != "main" or len(mains) < 2 or any(not c for c in mains) or any(not c for lk in links for c in lk.forward + lk.backward):
        usage_error("need commands joined by '=' (or =} cmd }=, ={ cmd {=)")
    return Pipeline(mains, links)


def parse(argv: Sequence[str]) -> tuple[argparse.Namespace, Pipeline]:
    p = Parser(prog=PROG, usage=USAGE.removeprefix("usage: "), allow_abbrev=False, formatter_class=HelpFormatter)
    p.add_argument("-d", "--daemon", action="store_true", help="run in the background (own session)")
    p.add_argument("-p", "--pidfile", metavar="FILE", help="write dpipe's pid to FILE")
    p.add_argument("-P", "--pgrpfile", metavar="FILE", help="write the commands' process group (as -pgid) to FILE")
    p.add_argument("-n", "--nowrapproc", action="store_true", help="no wrapper process: dpipe becomes the first command (the others are its children)")
    p.add_argument("-N", "--nowrapnoclean", action="store_true", help="as -n (nothing is left to remove the pid files)")
    p.add_argument("-V", "--version", action="store_true", help="print the version and exit")
    # Options end at the first word that is not an option.
    i = 0
    opts: list[str] = []
    while i < len(argv) and argv[i].startswith("-") and argv[i] != "=":
        opts.append(argv[i])
        if argv[i] in ("-p", "--pidfile", "-P", "--pgrpfile") and i + 1 < len(argv):
            opts.append(argv[i + 1])
            i += 1
        i += 1
    return p.parse_args(opts), split_commands(argv[i:])


@record
class Proc:
    argv: list[str]
    stdin: int | None = None
    stdout: int | None = None
    alt: tuple[int, int] | None = None  # (ALTERNATE_STDIN, ALTERNATE_STDOUT)


def chain(out_fd_of_src: list[int], filters: list[list[str]], procs: list[Proc], pipes: list[int]) -> int:
    """Wire ``filters`` one after the other; returns the read end at the far side."""
    r, w = os.pipe()
    pipes += [r, w]
    out_fd_of_src.append(w)
    for argv in filters:
        r2, w2 = os.pipe()
        pipes += [r2, w2]
        procs.append(Proc(argv, stdin=r, stdout=w2))
        r = r2
    return r


def spawn(p: Pipeline, exec_first: bool = False) -> list[subprocess.Popen[bytes]]:
    """Start every command; main k talks to main k-1 on stdin/stdout and to
    main k+1 on its alternate fds (stdin/stdout for the first one). With
    ``exec_first`` (-n), the first command replaces this process once the
    others run, as vdeplug4's dpipe -n: no wrapper process is left."""
    pipes: list[int] = []
    mains = [Proc(argv) for argv in p.mains]
    filters: list[Proc] = []
    for k, link in enumerate(p.links):
        left, right = mains[k], mains[k + 1]
        out: list[int] = []
        right.stdin = chain(out, link.forward, filters, pipes)  # left -> right
        left_out = out[0]
        out = []
        left_in = chain(out, link.backward, filters, pipes)  # right -> left
        right.stdout = out[0]
        if k == 0:
            left.stdin, left.stdout = left_in, left_out
        else:
            left.alt = (left_in, left_out)
    procs = []
    for pr in (mains[1:] if exec_first else mains) + filters:
        env = dict(os.environ)
        pass_fds: tuple[int, ...] = ()
        if pr.alt:
            pass_fds = pr.alt
            env["ALTERNATE_STDIN"], env["ALTERNATE_STDOUT"] = str(pr.alt[0]), str(pr.alt[1])
        try:
            procs.append(subprocess.Popen(pr.argv, stdin=pr.stdin, stdout=pr.stdout, pass_fds=pass_fds, env=env))
        except OSError as e:
            for q in procs:
                q.terminate()
            raise SystemExit(f"{PROG}: cannot run {pr.argv[0]}: {e.strerror}") from None
    if exec_first:
        _exec(mains[0], pipes)
    for fd in pipes:
        os.close(fd)
    return procs


def _exec(first: Proc, pipes: list[int]) -> None:
    """Become ``first`` (its stdin/stdout wired); never returns."""
    for fd, target in ((first.stdin, 0), (first.stdout, 1)):
        if fd is not None:
            os.dup2(fd, target)
    for fd in pipes:
        os.close(fd)
    try:
        os.execvp(first.argv[0], first.argv)
    except OSError as e:
        print(f"{PROG}: cannot run {first.argv[0]}: {e.strerror}", file=sys.stderr)
        os._exit(127)


def main(argv: Sequence[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] in (["-V"], ["--version"]):
        from . import __version__

        print(f"{PROG} (vdeplug) {__version__}")
        return 0
    opts, cmds = parse(args)
    if opts.daemon:
        if os.fork():
            return 0
        os.setsid()
    else:
        try:
            os.setpgid(0, 0)
        except OSError:
            pass
    if opts.pgrpfile:
        write_pidfile(opts.pgrpfile, -os.getpgrp())
    if opts.pidfile:
        write_pidfile(opts.pidfile, os.getpid())
    procs = spawn(cmds, exec_first=opts.nowrapproc or opts.nowrapnoclean)
    stopping = False

    def stop(_sig: int, _frame: object) -> None:
        # SIGTERM/SIGINT/SIGHUP: stop every command, reap them all, exit 0.
        nonlocal stopping
        stopping = True
        for q in procs:
            if q.poll() is None:
                q.terminate()

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, stop)
    status = 0
    try:
        for p in procs:
            while True:
                try:
                    rc = p.wait(timeout=5 if stopping else None)
                    break
                except subprocess.TimeoutExpired:
                    p.kill()  # ignored SIGTERM: do not hang
            if rc and not status and not stopping:
                status = rc if rc > 0 else 128 - rc
    finally:
        for f in (opts.pidfile, opts.pgrpfile):
            if f:
                try:
                    os.unlink(f)
                except OSError:
                    pass
    return status


if __name__ == "__main__":
    sys.exit(main())

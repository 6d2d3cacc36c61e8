"""``dpipe cmd1 args = cmd2 args [= cmd3 ...]``: a bidirectional pipe. Each
``=`` joins stdout of the left command to stdin of the right one and back.
A middle command talks to its right neighbour on the fds named by
``$ALTERNATE_STDIN`` / ``$ALTERNATE_STDOUT`` (as vdeplug4's dpipe)."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
from typing import Sequence

from .cli import write_pidfile

PROG = "dpipe"
USAGE = "usage: dpipe [-d] [-p PIDFILE] [-P PGRPFILE] [-n|-N] command [args] = command [args] [= ...]"


def split_commands(words: Sequence[str]) -> list[list[str]]:
    cmds: list[list[str]] = [[]]
    for w in words:
        if w == "=":
            cmds.append([])
        elif w in ("=}", "}=", "={", "{="):
            raise SystemExit(f"{PROG}: one-directional links ({w}) are not supported yet")
        else:
            cmds[-1].append(w)
    if len(cmds) < 2 or any(not c for c in cmds):
        raise SystemExit(f"{PROG}: need at least two commands separated by '='\n{USAGE}")
    return cmds


def parse(argv: Sequence[str]) -> tuple[argparse.Namespace, list[list[str]]]:
    p = argparse.ArgumentParser(prog=PROG, usage=USAGE, allow_abbrev=False)
    p.add_argument("-d", "--daemon", action="store_true")
    p.add_argument("-p", "--pidfile")
    p.add_argument("-P", "--pgrpfile")
    p.add_argument("-n", "--nowrapproc", action="store_true")
    p.add_argument("-N", "--nowrapnoclean", action="store_true")
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


def spawn(cmds: list[list[str]]) -> list[subprocess.Popen[bytes]]:
    """Start every command with its pipes; link k joins cmds[k] and cmds[k+1]."""
    links = [(os.pipe(), os.pipe()) for _ in range(len(cmds) - 1)]  # (left→right, right→left)
    procs = []
    for k, argv in enumerate(cmds):
        stdin = stdout = None
        env = dict(os.environ)
        pass_fds: tuple[int, ...] = ()
        if k > 0:  # talks to its left neighbour on stdin/stdout
            (l2r, r2l) = links[k - 1]
            stdin, stdout = l2r[0], r2l[1]
        if k < len(cmds) - 1:
            (l2r, r2l) = links[k]
            if k == 0:
                stdin, stdout = r2l[0], l2r[1]
            else:  # middle: alternate fds towards the right
                pass_fds = (r2l[0], l2r[1])
                env["ALTERNATE_STDIN"], env["ALTERNATE_STDOUT"] = str(r2l[0]), str(l2r[1])
        try:
            procs.append(subprocess.Popen(argv, stdin=stdin, stdout=stdout, pass_fds=pass_fds, env=env))
        except OSError as e:
            for p in procs:
                p.terminate()
            raise SystemExit(f"{PROG}: cannot run {argv[0]}: {e.strerror}") from None
    for (a, b) in links:
        for fd in (*a, *b):
            os.close(fd)
    return procs


def main(argv: Sequence[str] | None = None) -> int:
    opts, cmds = parse(sys.argv[1:] if argv is None else argv)
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
    procs = spawn(cmds)
    signal.signal(signal.SIGTERM, lambda *_: [p.terminate() for p in procs])
    status = 0
    try:
        for p in procs:
            rc = p.wait()
            if rc and not status:
                status = rc if rc > 0 else 128 - rc
    except KeyboardInterrupt:
        for p in procs:
            p.terminate()
        status = 130
    finally:
        if not opts.nowrapnoclean:
            for f in (opts.pidfile, opts.pgrpfile):
                if f:
                    try:
                        os.unlink(f)
                    except OSError:
                        pass
    return status


if __name__ == "__main__":
    sys.exit(main())

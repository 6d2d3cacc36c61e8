"""``vde_plug``: plug one network into another, into stdin/stdout, or into a
command. The CLI only parses arguments and opens endpoints; frames are moved
by the Rust loop behind ``vdeplug.join`` (see forward.py → _core.forward)."""

from __future__ import annotations

import argparse
import atexit
import contextlib
import errno
import os
import signal
import sys
import time
from collections.abc import Callable, Sequence

from . import _core
from ._record import field, record
from .clibrary import libdir
from .connection import Connection
from .connection import open as vde_open
from .forward import join
from .registry import BUILTIN, available, builtin_default, missing_slashes
from .registry import get as get_plugin
from .vnl import VNLError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import NoReturn


class HelpFormatter(argparse.HelpFormatter):
    """argparse's formatter, without importing shutil (bz2, lzma...) to
    learn the terminal width: start-up time of every vde_plug and dpipe."""

    def __init__(self, prog: str) -> None:
        try:
            width = int(os.environ["COLUMNS"])
        except (KeyError, ValueError):
            try:
                width = os.get_terminal_size(sys.__stdout__.fileno() if sys.__stdout__ else 1).columns
            except (OSError, ValueError):
                width = 80
        super().__init__(prog, width=max(width - 2, 20))


class Parser(argparse.ArgumentParser):
    """argparse with one-line usage errors that name the fix (exit status 2,
    as argparse's own), for vde_plug and dpipe alike."""

    def error(self, message: str) -> NoReturn:
        bad = message.removeprefix("unrecognized arguments: ").split()
        if message.startswith("unrecognized arguments: ") and bad[0].startswith("-"):
            import difflib

            opt = bad[0].split("=")[0]
            known = [s for a in self._actions for s in a.option_strings]
            close = difflib.get_close_matches(opt, known, n=1, cutoff=0.6)
            message = f"unknown option {opt}" + (f": did you mean {close[0]}?" if close else "")
        print(f"{self.prog}: {message} (`{self.prog} --help` shows the usage)", file=sys.stderr)
        sys.exit(2)


def _option(scheme: str, name: str) -> Callable[[str], int]:
    """A CLI flag sharing a built-in URL option's rules (e.g. --pcap-limit
    is capture's limit=, -m is vde's mode=)."""
    return lambda text: int(_core.option_value(scheme, name, text))


DEFAULT_LIMIT: int = builtin_default("capture", "limit")
DEFAULT_FILES: int = builtin_default("capture", "files")

PROG = "vde_plug"

USAGE = """\
usage: vde_plug [OPTIONS] [URL]                  plug URL into stdin/stdout (stream framing)
       vde_plug [OPTIONS] URL URL                join two networks (a cable)
       vde_plug [OPTIONS] [URL] = command [args] join URL to a command's stdin/stdout

URL is a VNL: vde:///tmp/sw[3], /tmp/sw, ptp:///tmp/link, udp://"5000->host:5001",
tap://t0, vxlan://239.0.0.1/vni=5, vxvde://239.1.2.3, switch:///tmp/sw, null://,
cmd://"command args", vlan://3{VNL}, capture:///tmp/x.pcap{VNL}, seal://KEYFILE{VNL},
agno://KEYFILE{VNL}, wirefilter://[delay=20/loss=1]{VNL}, macvtap://IFACE,
restart://20{VNL};
'' or no URL means the default network: the first line of ~/.vdeplug/default,
else ~/.vde2/default.switch, else the switch at /run/vde.ctl or /tmp/vde.ctl.

options: -h/--help  -V/--version  -d/--daemon  -p/--pidfile FILE  -l/--log (syslog START/STOP)
         -L/--iplog (also log source IPs from the second end)  -D/--descr TEXT
         -m/--mod MODE -M/--mod2 MODE  -g/--group G -G/--group2 G  --port N --port2 N
         --pcap FILE [--pcap-limit SIZE (64M)] [--pcap-files N (4)]
                     capture every frame crossing the first URL (pcap, rotated)
         --stats SECONDS  every SECONDS, both ends' counters on stderr (one line;
                     a status line when stderr is a terminal)
         --libdir    print the directory of libvdeplug.so.2 (for LD_LIBRARY_PATH)
         --keygen FILE  write a new random key for seal://FILE{VNL} (mode 0600)
         --demo      show vdeplug at work: a private switch, frames both ways,
                     and (where namespaces can be built) two hosts pinging over vxvde://
         -c vde_plug  a login shell's command: stdin/stdout to the default network,
                     START/STOP with the user and $SSH_CLIENT's address to syslog
                     (the login shell is vdeplug/lib/vde_plug: see --libdir)"""


class Terminated(Exception):
    """SIGTERM, SIGINT or SIGHUP: stop cleanly (sockets removed, commands
    reaped, exit status 0)."""


@record
class Args:
    urls: list[str] = field(default_factory=list)
    command: list[str] | None = None
    daemon: bool = False
    pidfile: str | None = None
    log: bool = False
    iplog: bool = False
    descr: str = "vdeplug:"
    mode: list[int | None] = field(default_factory=lambda: [None, None])
    group: list[str | None] = field(default_factory=lambda: [None, None])
    port: list[int | None] = field(default_factory=lambda: [None, None])
    pcap: str | None = None
    pcap_limit: int = DEFAULT_LIMIT
    pcap_files: int = DEFAULT_FILES
    stats: float | None = None
    #: -c vde_plug (a login's command): "user U IP I" for syslog's START/STOP.
    login: str | None = None


def die(msg: str, code: int = 1) -> NoReturn:
    print(f"{PROG}: {msg}", file=sys.stderr)
    sys.exit(code)


def _typed(convert: Callable[[str], int], what: str) -> Callable[[str], int]:
    """An argparse type from a VNL option converter (one validation for both)."""

    def conv(text: str) -> int:
        try:
            return convert(text)
        except ValueError as e:
            raise argparse.ArgumentTypeError(f"bad {what} {text!r}: {e}") from None

    return conv


def _positive_seconds(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        v = -1.0
    if not 0.1 <= v < 1e6:
        raise argparse.ArgumentTypeError(f"bad interval {text!r}: seconds from 0.1 up")
    return v


class Counters:
    """--stats: a line of both ends' counters and rates every interval. On
    a terminal it rewrites one status line; otherwise (a log) it appends."""

    def __init__(self, ends: Sequence[Connection], interval: float) -> None:
        self.ends, self.interval = ends, interval
        self.tty = sys.stderr.isatty()
        self.t0 = self.last_t = time.monotonic()
        self.last = [c.stats for c in ends]

    def line(self) -> str:
        now = time.monotonic()
        dt = max(now - self.last_t, 1e-6)
        parts = [f"{PROG}: {now - self.t0:.0f}s"]
        for i, c in enumerate(self.ends):
            s, p = c.stats, self.last[i]
            self.last[i] = s
            parts.append(
                f"{c.url or 'default'}: in {s.frames_in} ({(s.frames_in - p.frames_in) / dt:.0f}/s, "
                f"{8 * (s.bytes_in - p.bytes_in) / dt / 1e6:.1f} Mbit/s) out {s.frames_out} "
                f"({(s.frames_out - p.frames_out) / dt:.0f}/s, {8 * (s.bytes_out - p.bytes_out) / dt / 1e6:.1f} Mbit/s) "
                f"drops {s.drops_in}/{s.drops_out}"
            )
        self.last_t = now
        return " | ".join(parts)

    def show(self, _sig: int = 0, _frame: object = None) -> None:
        try:
            if self.tty:
                sys.stderr.write("\r" + self.line()[: os.get_terminal_size(sys.stderr.fileno()).columns - 1] + "\x1b[K")
            else:
                sys.stderr.write(self.line() + "\n")
            sys.stderr.flush()
        except (OSError, ValueError):
            pass  # stderr gone: counters are best effort

    def start(self) -> None:
        signal.signal(signal.SIGALRM, self.show)
        signal.setitimer(signal.ITIMER_REAL, self.interval, self.interval)

    def stop(self) -> None:
        signal.setitimer(signal.ITIMER_REAL, 0)
        if self.tty:
            with contextlib.suppress(OSError, ValueError):
                sys.stderr.write("\n")


def plugin_list() -> str:
    """The installed plugins, built-in and third-party, one line each."""
    lines = ["plugins (scheme: what):"]
    for scheme in available():
        try:
            plugin = get_plugin(scheme)
            what = plugin.summary or plugin.__class__.__doc__ or ""
            origin = "" if scheme in BUILTIN or plugin.summary.startswith("C plugin") else f"  [{type(plugin).__module__}]"
        except Exception as e:  # a broken third-party plugin must not break --help
            what, origin = f"cannot load: {e}", ""
        lines.append(f"  {scheme + '://':14} {what.strip().splitlines()[0] if what.strip() else ''}{origin}")
    return "\n".join(lines)


def parse_args(argv: Sequence[str]) -> Args:
    argv = list(argv)
    command = None
    if "=" in argv:
        i = argv.index("=")
        argv, command = argv[:i], argv[i + 1 :]
        if not command:
            die("'=' must be followed by a command", 2)
    # argparse prints its own "usage: " before the text.
    p = Parser(prog=PROG, usage=USAGE.removeprefix("usage: "), add_help=False, allow_abbrev=False, formatter_class=HelpFormatter)
    p.add_argument("-h", "--help", action="store_true")
    p.add_argument("-V", "--version", action="store_true")
    p.add_argument("-d", "--daemon", action="store_true")
    p.add_argument("-p", "--pidfile")
    p.add_argument("-l", "--log", action="store_true")
    p.add_argument("-L", "--iplog", action="store_true")
    p.add_argument("-c", dest="login_cmd")
    p.add_argument("-D", "--descr", default="vdeplug:")
    p.add_argument("-m", "--mod", dest="mode", type=_typed(_option("vde", "mode"), "mode"))
    p.add_argument("-M", "--mod2", dest="mode2", type=_typed(_option("vde", "mode"), "mode"))
    p.add_argument("-g", "--group")
    p.add_argument("-G", "--group2")
    p.add_argument("--port", type=int)
    p.add_argument("--port2", type=int)
    p.add_argument("--pcap")
    p.add_argument("--pcap-limit", type=_typed(_option("capture", "limit"), "size"), default=DEFAULT_LIMIT)
    p.add_argument("--pcap-files", type=_typed(_option("capture", "files"), "file count"), default=DEFAULT_FILES)
    p.add_argument("--stats", type=_positive_seconds, metavar="SECONDS")
    p.add_argument("--libdir", action="store_true")
    p.add_argument("--keygen", metavar="FILE")
    p.add_argument("--demo", action="store_true")
    p.add_argument("urls", nargs="*")
    ns = p.parse_args(argv)
    if ns.help:
        print(USAGE + "\n\n" + plugin_list())
        sys.exit(0)
    if ns.version:
        from . import __version__

        print(f"{PROG} (vdeplug) {__version__}, libvdeplug 4.0.1 compatible")
        sys.exit(0)
    if ns.libdir:
        print(libdir())
        sys.exit(0)
    if ns.demo:
        from .demo import main as demo

        sys.exit(demo())
    if ns.keygen:
        try:
            _core.seal_keygen(ns.keygen)
        except OSError as e:
            die(str(e), 1)
        sys.exit(0)
    login = None
    iplog = ns.iplog
    if ns.login_cmd is not None:
        # vdeplug4: a login shell runs `-c vde_plug` only, and logs who.
        if ns.login_cmd != "vde_plug":
            login_refused()
        login = login_who()
        iplog = iplog or in_group(IPLOG_GROUP)
        # As vdeplug4: START once the command is accepted, STOP at exit.
        login_log(f"START: {login}")
        atexit.register(login_log, f"STOP: {login}")
    if len(ns.urls) > 2 or (command is not None and len(ns.urls) > 1):
        die("too many URLs\n" + USAGE, 2)
    if command is None and len(ns.urls) < 2:
        # Stream mode moves frames over stdin/stdout: a closed one would be
        # taken by the first socket we open (Python leaves sys.stdin None).
        for name, f in (("stdin", sys.stdin), ("stdout", sys.stdout)):
            if f is None:
                die(f"{name} is closed: with one URL, vde_plug moves frames over stdin/stdout; give a second URL (vde_plug URL URL) or a command (vde_plug URL = cmd)", 2)
    return Args(
        urls=ns.urls,
        command=command,
        daemon=ns.daemon,
        pidfile=ns.pidfile,
        log=ns.log or ns.iplog,
        iplog=iplog,
        descr=ns.descr,
        mode=[ns.mode, ns.mode2],
        group=[ns.group, ns.group2],
        port=[ns.port, ns.port2],
        pcap=ns.pcap,
        pcap_limit=ns.pcap_limit,
        pcap_files=ns.pcap_files,
        stats=ns.stats,
        login=login,
    )


def _open(args: Args, i: int, url: str) -> Connection:
    return vde_open(url, descr=args.descr, mode=args.mode[i], group=args.group[i], port=args.port[i])


def _daemonize(keep_stderr: bool) -> None:
    # Unlike vdeplug4, after the URLs are open, so relative paths work.
    opener = os.getpid()
    if os.fork():
        os._exit(0)
    os.setsid()
    if os.fork():
        os._exit(0)
    _core.inherit_from(opener)  # the daemon now owns the sockets and commands opened
    os.chdir("/")
    fd = os.open(os.devnull, os.O_RDWR)
    for n in (0, 1) if keep_stderr else (0, 1, 2):
        os.dup2(fd, n)
    os.close(fd)


def write_pidfile(path: str, value: int) -> None:
    """Atomically, so a reader never sees an empty file. The temporary file
    is created new (O_EXCL) and never through a symlink planted in a shared
    directory; the rename replaces a symlink at ``path``, never follows it."""
    tmp = f"{path}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    try:
        os.write(fd, f"{value}\n".encode())
    finally:
        os.close(fd)
    os.replace(tmp, path)


def have_syslog() -> bool:
    return os.path.exists("/dev/log")


def log(msg: str) -> None:
    """-l/--log: to syslog, or to stderr when no syslog daemon listens."""
    if not have_syslog():
        print(f"{PROG}[{os.getpid()}]: {msg}", file=sys.stderr, flush=True)
        return
    import syslog

    syslog.openlog(PROG, syslog.LOG_PID, syslog.LOG_DAEMON)
    syslog.syslog(syslog.LOG_INFO, msg)


# ------------------------------------------------------------ login shell
# vdeplug4's vde_plug as the login shell of an ssh-only user
# (`vde_plug = ssh vdeuser@host vde_plug`): the native entry point
# vdeplug/lib/vde_plug passes the login's argv[0] as `--login-shell ARGV0`.

IPLOG_GROUP = "vdeplug_iplog"
NOT_A_SHELL = "This is a Virtual Distributed Ethernet (vde) tunnel broker. \nThis is not a login shell, only vde_plug can be executed"


def login_who() -> str:
    """ "user NAME IP ADDR": the caller and the first word of $SSH_CLIENT."""
    import pwd

    try:
        name = pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        name = str(os.getuid())
    words = os.environ.get("SSH_CLIENT", "").split()
    return f"user {name} IP {words[0][:255] if words else 'UNKNOWN_IP_ADDRESS'}"


def login_log(msg: str) -> None:
    """To syslog as vdeplug4 does (ident vde_plug, LOG_USER), or to stderr
    when no syslog daemon listens."""
    if not have_syslog():
        print(f"{PROG}[{os.getpid()}]: {msg}", file=sys.stderr, flush=True)
        return
    import syslog

    syslog.openlog("vde_plug", 0, syslog.LOG_USER)
    syslog.syslog(syslog.LOG_INFO, msg)
    syslog.closelog()


def in_group(group: str) -> bool:
    """The caller (by the password database) is a member of ``group``."""
    import grp
    import pwd

    try:
        pw = pwd.getpwuid(os.getuid())
        return grp.getgrnam(group).gr_gid in os.getgrouplist(pw.pw_name, pw.pw_gid)
    except (KeyError, OSError):
        return False


def login_refused() -> NoReturn:
    """An interactive login, or a command other than `vde_plug`."""
    login_log(f"FAILED: {login_who()}")
    print(NOT_A_SHELL, file=sys.stderr)
    sys.exit(255)


def _on_sigterm(_sig: int, _frame: object) -> None:
    raise Terminated


def _unlink_quietly(path: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)


def run(args: Args) -> int:
    """Open both ends, join them, report how it ended. Returns the exit code.
    The pidfile goes only after both ends are closed (their sockets gone):
    no pidfile means vde_plug is done."""
    pidfile = os.path.abspath(args.pidfile) if args.pidfile else None
    written: list[str] = []
    try:
        return _run(args, pidfile, written)
    finally:
        for path in written:
            _unlink_quietly(path)


def _run(args: Args, pidfile: str | None, written: list[str]) -> int:
    urls = args.urls or [""]
    with contextlib.ExitStack() as stack:
        # Each end is closed (its socket files removed) even if the other fails to open.
        first = stack.enter_context(_open(args, 0, urls[0]))
        if args.pcap:
            if not isinstance(first.endpoint, _core.Endpoint):
                die("--pcap needs a built-in transport as the first URL", 2)
            first = stack.enter_context(Connection(_core.open_capture(first.endpoint, args.pcap, args.pcap_limit, args.pcap_files), first.url))
        if args.command is not None:
            second, kind = Connection(_core.open_cmd(args.command), "= " + " ".join(args.command)), "cmd"
        elif len(urls) == 2:
            second, kind = _open(args, 1, urls[1]), "url"
        else:
            second, kind = Connection(_core.open_stdio(), "stdio"), "stdio"
        stack.enter_context(second)
        if args.daemon:
            _daemonize(keep_stderr=args.log and not have_syslog())
        if pidfile:
            write_pidfile(pidfile, os.getpid())
            written.append(pidfile)
        if args.log and not args.login:
            log(f"START {' '.join(urls)} user={os.geteuid()}")

        def report(_sig: int, _frame: object) -> None:
            # kill -USR1 <pid>: counters of both ends on stderr, then carry on.
            for c in (first, second):
                print(f"{PROG}: {c.url or 'default'}: {c.stats}", file=sys.stderr, flush=True)

        signal.signal(signal.SIGUSR1, report)
        counters = Counters((first, second), args.stats) if args.stats else None
        if counters:
            counters.start()
        try:
            end = join(first, second, iplog=args.iplog)
        finally:
            if counters:
                counters.stop()
            if args.log and not args.login:
                log("STOP")
        if end.side == 1 and kind == "stdio" and end.closed:
            return 0  # stdin reached EOF: the normal end of stream mode
        if end.side == 1 and kind == "cmd":
            status = second.endpoint.exit_status()
            if status:
                how = f"killed by signal {status - 128}" if status > 128 else f"exited with status {status}"
                print(f"{PROG}: command {how}", file=sys.stderr)
            return status if status is not None else 0
        who = (first, second)[end.side].url or "default switch"
        if end.closed:
            print(f"{PROG}: {who}: peer hung up", file=sys.stderr)
        else:
            print(f"{PROG}: {who}: {end.reason}", file=sys.stderr)
        return 1


def _hint(e: OSError, urls: Sequence[str]) -> str:
    """The likely fix for a failed open, when there is one."""
    for url in urls:
        meant = missing_slashes(url)
        if meant and isinstance(e, FileNotFoundError):
            return f" (did you mean {meant}?)"
    if isinstance(e, PermissionError) and any(u.startswith("tap://") for u in urls) and "/dev/net/tun" not in str(e):
        return " (tap:// needs CAP_NET_ADMIN: run as root, or give the interface to your user with `ip tuntap add NAME mode tap user $USER`)"
    if isinstance(e, FileNotFoundError) and "no switch at" in str(e):
        home = os.environ.get("HOME", "")
        defaults = [os.path.join(home, f) for f in (".vdeplug/default", ".vde2/default.switch")] if home else []
        if (not urls or "" in urls) and not any(os.path.lexists(d) for d in defaults):
            # No URL, and no default network: say where it was looked for (vde_plug(1), DEFAULT NETWORK).
            looked = f"neither {defaults[0]} nor {defaults[1]} exists" if defaults else "HOME is unset"
            return (
                f" (no default network: {looked}, and no switch runs at /run/vde.ctl or /tmp/vde.ctl;"
                " give a URL, write one into ~/.vdeplug/default (`mkdir -p ~/.vdeplug; echo vxvde://239.1.2.3 >~/.vdeplug/default`),"
                " or start the default switch with `vde_plug null:// switch:///tmp/vde.ctl`)"
            )
        return " (start one with `vde_plug null:// switch:///path` or `vde_switch -s /path`)"
    if e.errno == errno.EADDRINUSE:
        return " (another process holds that address: `ss -lnpu` shows which; choose another port)"
    return ""


def main(argv: Sequence[str] | None = None) -> int:
    try:
        return _main(argv)
    except BrokenPipeError:
        # `vde_plug --help | head -1`: the reader left; no traceback.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def _main(argv: Sequence[str] | None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--login-shell"] and len(argv) >= 2:
        if argv[1].startswith("-"):  # an interactive login
            login_refused()
        argv = argv[2:]
    args = parse_args(argv)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, _on_sigterm)
    try:
        return run(args)
    except VNLError as e:
        die(str(e), 2)
    except OSError as e:
        msg = (str(e) if e.filename or not e.strerror else e.strerror) + _hint(e, args.urls)
        die(msg, 1)
    except (Terminated, KeyboardInterrupt):
        return 0


if __name__ == "__main__":
    sys.exit(main())

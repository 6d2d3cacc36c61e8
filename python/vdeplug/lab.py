"""Build a virtual LAN from a declarative description, run it, tear it down.

A lab owns everything it starts: a private work directory (switch sockets),
the ``vde_plug`` processes, and network namespaces: one *underlay*
namespace where every plug runs (so vxvde/vxlan multicast stays on its
loopback and never reaches a real network) and one namespace per host,
holding a tap interface moved there from the underlay. Leaving the
``with`` block, or any error while building, removes all of it.

As root the namespaces are ``ip netns`` ones. An ordinary user gets the
same lab inside a user namespace of its own (the user mapped to root
there): the underlay is made with it and each host's namespace belongs to
it, each held by a process of the lab (``unshare``/``nsenter`` from
util-linux) and given, as ``ip netns exec`` does, a mount namespace whose
/sys shows its own interfaces; nothing is written in /run, and closing the
lab ends every process in them, so the namespaces go. ``Host.command``
(and ``run``, ``popen``) runs a program in a host in either mode.

>>> spec = {
...     "switches": ["sw"],
...     "hosts": {
...         "a": {"plug": "sw", "ip": "10.0.0.1/24"},
...         "b": {"plug": "vxvde://239.1.2.3", "ip": "10.0.0.2/24"},
...     },
...     "cables": [["sw", "vxvde://239.1.2.3"]],   # the switch joins a vxvde backbone
... }
>>> with Lab(spec) as lab:                          # doctest: +SKIP
...     assert lab.hosts["a"].ping("10.0.0.2")      # (root, or user namespaces)

``plug`` and cable ends are VNLs; a switch's name stands for ``vde://`` to
it. Hosts may be given ``vlan`` (their plug becomes ``vlan://N{...}``).
Hosts (``link``) and cables (a third item) may be given link parameters,
``{"delay": "20ms", "jitter": "5ms", "loss": "1%", "rate": "10mbit"}``
(see ``link_vnl``): their plug runs through a ``wirefilter://``.
"""

from __future__ import annotations

import itertools
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from . import _userns
from ._record import field, record

__all__ = ["Host", "Lab", "LabError", "can_build", "link_vnl"]


_LAB_IDS = itertools.count()
#: ``lan(dns=...)``'s server, on the bridge.
DNS_IP = "10.77.255.254"


class LabError(RuntimeError):
    """The lab could not be built (what failed, and its error output)."""


_RATE_UNITS = {"bit": 1 / 8, "kbit": 1000 / 8, "mbit": 1e6 / 8, "gbit": 1e9 / 8, "bps": 1, "kbps": 1e3, "mbps": 1e6, "gbps": 1e9}


def _number(key: str, value: Any, units: Mapping[str, float]) -> float:
    """``value`` (a number, or text with one of ``units``) as a float; LabError names ``key``."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    text = str(value).strip().lower()
    for unit in sorted(units, key=len, reverse=True):
        if unit and text.endswith(unit):
            try:
                return float(text[: -len(unit)]) * units[unit]
            except ValueError:
                break
    try:
        return float(text) * units.get("", 1.0)
    except ValueError:
        raise LabError(f"link {key}: bad value {value!r} (units: {', '.join(u for u in units if u) or 'none'})") from None


def link_vnl(params: Mapping[str, Any], vnl: str) -> str:
    """``vnl`` behind a ``wirefilter://`` with tc-like link parameters, the
    same both ways: ``delay``/``jitter`` (ms, or "20ms", "0.1s"; jitter
    uniform ±), ``loss``/``dup`` (%, "1%"), ``rate`` (bytes/s, or tc units:
    "10mbit", "1mbps"), ``limit`` (bytes queued), ``mtu``, ``seed``.
    No parameters: ``vnl`` unchanged."""
    time_u = {"": 1.0, "ms": 1.0, "s": 1000.0, "us": 0.001}
    pct = {"": 1.0, "%": 1.0}
    opts: list[str] = []
    delay = _number("delay", params.get("delay", 0), time_u)
    jitter = _number("jitter", params.get("jitter", 0), time_u)
    for key in params:
        if key not in {"delay", "jitter", "loss", "dup", "rate", "limit", "mtu", "seed"}:
            raise LabError(f"unknown link parameter {key!r} (known: delay, jitter, loss, dup, rate, limit, mtu, seed)")
    if delay or jitter:
        opts.append(f"delay={delay:g}+{jitter:g}")
    for key in ("loss", "dup"):
        if key in params:
            opts.append(f"{key}={_number(key, params[key], pct):g}")
    if "rate" in params:
        opts.append(f"bandwidth={_number('rate', params['rate'], {'': 1.0, **_RATE_UNITS}):.0f}")
    for key, opt in (("limit", "bufsize"), ("mtu", "mtu"), ("seed", "seed")):
        if key in params:
            opts.append(f"{opt}={int(_number(key, params[key], {'': 1.0}))}")
    return f"wirefilter://[{'/'.join(opts)}]{{{vnl}}}" if opts else vnl


def can_build() -> str | None:
    """None if this machine can build labs with hosts, else why not."""
    if shutil.which("ip") is None:
        return "iproute2 ('ip') is not installed"
    if not os.path.exists("/dev/net/tun"):
        return "/dev/net/tun is missing"
    if os.geteuid() == 0:
        return None
    if shutil.which("unshare") is None or shutil.which("nsenter") is None:
        return "needs root, or util-linux's unshare and nsenter for user namespaces"
    why = _userns.unavailable()
    if why:
        return f"needs root: {why}"
    if not os.access("/dev/net/tun", os.R_OK | os.W_OK):
        return "needs root: /dev/net/tun is not open to this user (distributions ship it mode 0666)"
    return None


def _run(cmd: Sequence[str], timeout: float = 20) -> str:
    r = subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout)
    if r.returncode != 0:
        raise LabError(f"{' '.join(cmd)}: {r.stderr.strip() or r.returncode}")
    return r.stdout


@record
class Host:
    """A network namespace with one interface plugged into the lab."""

    lab: Lab
    name: str
    netns: str
    ifname: str
    ips: tuple[str, ...]
    #: Overlay interfaces ``Lab.overlay`` made here: name → address (CIDR).
    overlays: dict[str, str] = field(default_factory=dict)
    #: Their ``vde_plug`` processes (name → process; ``pid`` for /proc).
    plugs: dict[str, subprocess.Popen[Any]] = field(default_factory=dict)

    def command(self, *cmd: str, cwd: str | None = None) -> list[str]:
        """The argv that runs ``cmd`` inside the host (root or not), for
        ``subprocess`` or any other runner; ``cwd``: where it will run."""
        return [*self.lab.enter(self.netns, cwd), *cmd]

    def run(self, *cmd: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        """Run a command inside the host's namespace."""
        r = subprocess.run(self.command(*cmd), capture_output=True, text=True, timeout=timeout)
        if check and r.returncode != 0:
            raise LabError(f"{self.name}: {' '.join(cmd)}: {r.stderr.strip() or r.returncode}")
        return r

    def ping(self, ip: str, count: int = 3, wait: float = 1) -> bool:
        """True if ``ip`` answers at least one of ``count`` pings."""
        r = self.run("ping", "-c", str(count), "-i", "0.2", "-W", str(wait), ip, check=False)
        return r.returncode == 0

    def popen(self, *cmd: str, **kw: Any) -> subprocess.Popen[Any]:
        """Start a command inside the host's namespace (stdin closed and
        stderr piped unless given); the lab stops it when it closes."""
        kw.setdefault("stdin", subprocess.DEVNULL)
        kw.setdefault("stderr", subprocess.PIPE)
        p = subprocess.Popen(self.command(*cmd, cwd=kw.get("cwd")), **kw)
        self.lab.procs.append(p)
        self.lab._what[p.pid] = f"{self.name}: {' '.join(cmd)}"
        return p

    def plug(self, vnl: str, ifname: str = "t0", ip: str | Sequence[str] = ()) -> subprocess.Popen[Any]:
        """Run ``vde_plug VNL tap://IFNAME`` inside this host (an overlay
        over its eth0, say), wait for the tap and give it ``ip``."""
        p = self.popen(sys.executable, "-m", "vdeplug", vnl, f"tap://{ifname}", stdout=subprocess.DEVNULL)
        self.wait_link(ifname)
        for cidr in (ip,) if isinstance(ip, str) else ip:
            self.addr(ifname, cidr)
        return p

    def wait_link(self, ifname: str, timeout: float = 10) -> None:
        """Wait for ``ifname`` (e.g. a tap a plug creates) to appear; a
        process of this host that exits meanwhile is reported."""
        mine = [p for p in self.lab.procs if self.lab._what.get(p.pid, "").startswith(f"{self.name}:")]
        self.lab._wait(lambda: self.run("ip", "link", "show", ifname, check=False).returncode == 0, f"{self.name}: {ifname}", timeout, mine)

    def addr(self, ifname: str, cidr: str) -> None:
        """Add an address to ``ifname`` and bring it up."""
        self.run("ip", "addr", "add", cidr, "dev", ifname, *(["nodad"] if ":" in cidr else []))
        self.run("ip", "link", "set", ifname, "up")

    def mac(self, ifname: str) -> bytes:
        """The MAC address of ``ifname``."""
        return bytes.fromhex(self.run("cat", f"/sys/class/net/{ifname}/address").stdout.strip().replace(":", ""))

    @property
    def ip4(self) -> str:
        """The host's first IPv4 address, without the prefix length."""
        return next(ip.split("/")[0] for ip in self.ips if ":" not in ip)

    @property
    def ip6(self) -> str:
        """The host's first IPv6 address, without the prefix length."""
        return next(ip.split("/")[0] for ip in self.ips if ":" in ip)


def _pids_in(holder: int) -> list[str]:
    """The processes in the network namespace of ``holder`` (ours all run
    as this user, so their namespace links are readable), holder aside."""
    try:
        net = os.readlink(f"/proc/{holder}/ns/net")
    except OSError:
        return []
    found = []
    for pid in os.listdir("/proc"):
        if pid.isdigit() and int(pid) != holder:
            try:
                if os.readlink(f"/proc/{pid}/ns/net") == net:
                    found.append(pid)
            except OSError:
                pass
    return found


def _mac(k: int) -> str:
    """The eth0 MAC of ``lan()``'s host k."""
    return f"02:77:00:00:{k >> 8:02x}:{k & 255:02x}"


def _readlink(path: str) -> str:
    try:
        return os.readlink(path)
    except OSError:
        return ""


def _kill(pids: Sequence[str]) -> None:
    for pid in pids:
        try:
            os.kill(int(pid), signal.SIGKILL)
        except (ProcessLookupError, ValueError):
            pass


class Lab:
    """A virtual LAN built from ``spec`` (see the module docstring). Use as a
    context manager; ``close()`` is idempotent. Building starts at once: a
    failure part-way removes what was made and raises ``LabError``."""

    def __init__(self, spec: Mapping[str, Any] | None = None, workdir: str = "") -> None:
        self.spec = spec
        self._owned_workdir = not workdir
        self.workdir = workdir or tempfile.mkdtemp(prefix="vdeplug-lab-")
        self.procs: list[subprocess.Popen[bytes]] = []
        self.hosts: dict[str, Host] = {}
        self.switches: dict[str, str] = {}
        self.underlay: str | None = None
        #: The namespace of ``lan()``'s bridge, once there is one.
        self.bridge: str | None = None
        self._lan: list[Host] = []
        #: The name ``lan(dns=...)`` serves, once it does.
        self.dns_name: str | None = None
        self._dnsmasq: subprocess.Popen[bytes] | None = None
        self._etc_netns: list[str] = []
        self._namespaces: list[str] = []
        #: Without root: each namespace's holder process (its pid names it).
        self._holders: dict[str, subprocess.Popen[bytes]] = {}
        self.rootless = os.geteuid() != 0
        #: Neighbour-table limits ``lan`` raised: path -> (old, ours).
        self._neigh_saved: dict[str, tuple[int, int]] = {}
        self.prefix = f"vdl{os.getpid() % 100000}{next(_LAB_IDS)}"
        self._what: dict[int, str] = {}
        try:
            if can_build() is None:
                self.underlay = self._netns("net")
                for cmd in (["link", "set", "lo", "multicast", "on"], ["route", "add", "224.0.0.0/4", "dev", "lo"]):
                    _run(self.ip(self.underlay, *cmd))
            if self.spec:
                self.build(self.spec)
        except BaseException:
            self.close()
            raise

    def __repr__(self) -> str:
        return f"Lab(workdir={self.workdir!r}, hosts={sorted(self.hosts)}, switches={sorted(self.switches)})"

    # ------------------------------------------------------------ building

    def build(self, spec: Mapping[str, Any]) -> None:
        """Switches first, then hosts, then cables."""
        unknown = set(spec) - {"switches", "hosts", "cables"}
        if unknown:
            raise LabError(f"unknown lab keys: {', '.join(sorted(unknown))} (known: switches, hosts, cables)")
        for name in spec.get("switches", ()):
            self.switch(name)
        for name, h in spec.get("hosts", {}).items():
            self.host(name, **h)
        for cable in spec.get("cables", ()):
            self.cable(*cable)

    def vnl(self, ref: str) -> str:
        """A switch name → ``vde://`` to it; anything else is a VNL already.
        A bare word that names no switch is a typo, not a relative path."""
        if ref in self.switches:
            return f"vde://{self.switches[ref]}"
        if ref and "/" not in ref:
            known = ", ".join(sorted(self.switches)) or "none yet"
            raise LabError(
                f"{ref!r} is neither a declared switch (declared: {known}) nor a VNL: declare it under 'switches' (or with lab.switch({ref!r})), or give a VNL such as vde:///path or vxvde://239.1.2.3"
            )
        return ref

    def switch(self, name: str, options: str = "") -> str:
        """Start a stand-alone switch; returns its directory (``vde://`` path)."""
        path = os.path.join(self.workdir, name)
        self._plug(f"switch {name}", "null://", f"switch://{path}{'[' + options + ']' if options else ''}")
        self._wait(lambda: os.path.exists(os.path.join(path, "ctl")), f"switch {name}")
        self.switches[name] = path
        return path

    def cable(self, a: str, b: str, link: Mapping[str, Any] | None = None) -> subprocess.Popen[bytes]:
        """``vde_plug A B`` between two VNLs or switch names (``link``: its
        parameters, see ``link_vnl``, applied at A's end both ways)."""
        return self._plug(f"cable {a} = {b}", link_vnl(link or {}, self.vnl(a)), self.vnl(b))

    def host(self, name: str, plug: str, ip: str | Sequence[str] = (), ifname: str = "eth0", vlan: int | None = None, link: Mapping[str, Any] | None = None) -> Host:
        """A namespace whose ``ifname`` is plugged into ``plug`` (a switch name or VNL)."""
        if self.underlay is None:
            raise LabError(f"host {name}: {can_build() or 'needs root'}")
        ips = (ip,) if isinstance(ip, str) else tuple(ip)
        netns = self._netns(name)
        tap = f"{self.prefix}{len(self._namespaces)}"
        target = self.vnl(plug)
        if vlan is not None:
            target = f"vlan://{vlan}{{{target}}}"
        target = link_vnl(link or {}, target)
        p = self._plug(f"host {name}", target, f"tap://{tap}")
        h = Host(self, name, netns, ifname, ips)
        try:
            self._wait(lambda: subprocess.run(self.ip(self.underlay or "", "link", "show", tap), capture_output=True, check=False).returncode == 0, f"host {name}: tap")
            _run(self.ip(self.underlay, "link", "set", tap, "netns", self._ref(netns)))
            _run(self.ip(netns, "link", "set", tap, "name", ifname))
            for cidr in ips:
                h.addr(ifname, cidr)
            _run(self.ip(netns, "link", "set", ifname, "up"))
        except LabError:
            if p.poll() is None:
                raise
            raise LabError(self._failure(p)) from None
        self.hosts[name] = h
        return h

    def lan(self, count: int, *, multicast: bool = True, mtu: int | None = None, dns: str | None = None, overlay: str | None = None) -> list[Host]:
        """``count`` hosts h1, h2 … whose ``eth0`` (host k: 10.77.0.k/16 up
        to 255, then 10.77.1.0 …, k's two bytes; and fd77::k/64) is on one
        bridge, in its own namespace (``self.bridge``): an
        underlay to run overlays, tunnels or the kernel's vxlan on.
        Without ``multicast`` there is no multicast route anywhere and the
        bridge floods no multicast, as in a cloud; ``mtu`` sets the links'.

        ``dns=NAME`` (root): a dnsmasq on the bridge (10.77.255.254) answers
        NAME with every LAN host's eth0 addresses (A and AAAA, kept up to
        date as ``lan`` adds hosts), and each host resolves through it
        (/etc/netns/NS/resolv.conf, removed with the lab). ``overlay=VNL``:
        every new host also plugs an ``ov0`` into VNL (see ``overlay``), so
        ``lan(64, overlay="vxvde://239.1.2.3")`` or ``lan(64, dns="all.lab",
        overlay="vxlan://all.lab")`` is a 64-host overlay on one call.

        Cheap per host: the namespaces, the bridge's ports and each host's
        addresses are ``ip -batch`` runs (one for all, or one per host).
        The IPv4 neighbours among the hosts of one call are static (eth0 of
        host k is 02:77:00:00:k, two bytes), as a cloud's network answers
        ARP itself: n hosts starting at once send no n² ARP broadcasts,
        which a small machine's bridge would drop (its backlog overflows).

        The kernel's neighbour tables (ARP, NDP) are one per machine, shared
        by every namespace, and refuse new entries past ``gc_thresh3``
        (1024 by default): past it a host can neither resolve a new peer nor
        send multicast. As root, ``lan`` raises the limits to room for every
        pair of LAN hosts (put back when the lab closes); an ordinary user's
        lab lives within them (about 30 hosts talking all to all)."""
        if self.underlay is None:
            raise LabError(f"lan: {can_build() or 'needs root'}")
        if dns and self.rootless:
            raise LabError("lan: dns= needs root (a resolv.conf per namespace is ip netns exec's)")
        if dns and self.dns_name not in (None, dns):
            raise LabError(f"lan: this lab's DNS already serves {self.dns_name!r}")
        first = len(self._lan) + 1
        ks = range(first, first + count)
        names = [f"h{k}" for k in ks]
        todo = [] if self.bridge else ["br"]
        made = self._netns_many([*todo, *names])
        if self.bridge is None:
            self.bridge = made.pop(0)
            self._batch(self.bridge, ["link set lo up", "link add br0 type bridge mcast_snooping 0", "link set br0 up"])
        nss = made
        hosts = [Host(self, name, ns, "eth0", (f"10.77.{k >> 8}.{k & 255}/16", f"fd77::{k}/64")) for k, name, ns in zip(ks, names, nss)]
        ports: list[str] = []
        for k, h in zip(ks, hosts):
            p = f"p{k}"
            ports += [f"link add name {p} type veth peer name eth0 address {_mac(k)} netns {self._ref(h.netns)}", f"link set {p} master br0"]
            if not multicast:
                ports.append(f"link set {p} type bridge_slave mcast_flood off")
            if mtu:
                ports.append(f"link set {p} mtu {mtu}")
            ports.append(f"link set {p} up")
        self._batch(self.bridge, ports)
        for h in hosts:
            self._lan.append(h)
            self.hosts[h.name] = h
        sysctl = "sysctl -qw net.ipv6.conf.all.accept_dad=0 net.ipv6.conf.default.accept_dad=0"
        scripts = []
        for h in hosts:
            lines = ["link set lo up", *([f"link set eth0 mtu {mtu}"] if mtu else [])]
            lines += [f"addr add {h.ips[0]} dev eth0", f"addr add {h.ips[1]} dev eth0 nodad", "link set eth0 up"]
            lines += [f"neigh replace {o.ip4} lladdr {_mac(j)} dev eth0 nud permanent" for j, o in zip(ks, hosts) if o is not h]
            if multicast:
                lines.append("route add 224.0.0.0/4 dev eth0")
            scripts.append((h, lines))
        self._configure(scripts, before=sysctl)
        self._neighbour_room(len(self._lan))
        if dns:
            self._dns(dns)
        if overlay:
            self.overlay(overlay, hosts)
        return hosts

    def _neighbour_room(self, hosts: int) -> None:
        """Root: neighbour tables (shared by all namespaces) with room for
        every pair of ``hosts`` and their overlays; the old limits are put
        back by ``close``."""
        if self.rootless:
            return
        need = 2 * hosts * hosts + 1024
        for fam in ("ipv4", "ipv6"):
            for k, want in (("gc_thresh2", need // 2), ("gc_thresh3", need)):
                path = f"/proc/sys/net/{fam}/neigh/default/{k}"
                try:
                    with open(path) as f:
                        old = int(f.read())
                    if old < want:
                        with open(path, "w") as f:
                            f.write(str(want))
                        self._neigh_saved.setdefault(path, (old, want))
                        self._neigh_saved[path] = (self._neigh_saved[path][0], want)
                except (OSError, ValueError):
                    pass  # no such table (IPv6 off) or not ours to change

    def overlay(self, vnl: str, hosts: Sequence[Host] | None = None, ifname: str = "ov0", net: str = "10.78") -> list[Host]:
        """Plug an interface of each of ``hosts`` (default: every ``lan``
        host) into ``vnl``: a tap ``ifname`` with address NET.k/16 (host k:
        NET.0.k, NET.1.0 for 256; IPv4 only, IPv6 off on it so the overlay
        carries only what the hosts send), and a ``vde_plug VNL
        tap://IFNAME`` in the host (``host.plugs[ifname]``). Returns once
        every plug has both ends open; traffic then finds its way (ARP,
        MAC learning) as on any LAN. All plugs start at once."""
        hosts = list(self._lan if hosts is None else hosts)
        scripts = []
        for h in hosts:
            k = int(h.name[1:]) if h in self._lan else len(h.overlays) + 1
            cidr = f"{net}.{k >> 8}.{k & 255}/16"
            h.overlays[ifname] = cidr
            scripts.append((h, [f"tuntap add {ifname} mode tap", f"addr add {cidr} dev {ifname}", f"link set {ifname} up"]))
        self._configure(scripts, after=f"sysctl -qw net.ipv6.conf.{ifname}.disable_ipv6=1")
        for h in hosts:
            h.plugs[ifname] = h.popen(sys.executable, "-m", "vdeplug", vnl, f"tap://{ifname}", stdout=subprocess.DEVNULL)

        def tap_open(p: subprocess.Popen[Any]) -> bool:  # the tap is vde_plug's second end: open last
            try:
                return any(os.readlink(f"/proc/{p.pid}/fd/{fd}") == "/dev/net/tun" for fd in os.listdir(f"/proc/{p.pid}/fd"))
            except OSError:
                return False

        plugs = [h.plugs[ifname] for h in hosts]
        waiting = list(plugs)

        def all_open() -> bool:
            waiting[:] = [p for p in waiting if not tap_open(p)]
            return not waiting

        self._wait(all_open, f"overlay {vnl}", 10 + len(hosts) / 4, plugs)
        return hosts

    def each(self, hosts: Sequence[Host], cmd: Sequence[str] | Callable[[Host], Sequence[str]], timeout: float = 60) -> list[subprocess.CompletedProcess[str]]:
        """Run a command in every one of ``hosts`` at once and wait for all:
        ``cmd`` is an argv, or a function of the host giving its argv
        (``lambda h: ["ping", "-c1", peer[h]]``). Results in ``hosts`` order."""
        procs = []
        try:
            for h in hosts:
                argv = cmd(h) if callable(cmd) else cmd
                procs.append(subprocess.Popen([*self.enter(h.netns), *argv], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
            deadline = time.monotonic() + timeout
            done = []
            for p in procs:
                out, err = p.communicate(timeout=max(deadline - time.monotonic(), 0.1))
                done.append(subprocess.CompletedProcess(p.args, p.returncode, out, err))
            return done
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
                    p.communicate()

    def _configure(self, scripts: Sequence[tuple[Host, Sequence[str]]], before: str = "", after: str = "") -> None:
        """In each host at once: ``before`` (shell), its ``ip -batch``
        lines, ``after``; any failure is a LabError naming the host."""
        sh = " && ".join(c for c in (before, "ip -batch -", after) if c)
        procs = []
        for h, lines in scripts:
            p = subprocess.Popen([*self.enter(h.netns), "sh", "-c", sh], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            procs.append((h, p))
            assert p.stdin is not None
            p.stdin.write("\n".join(lines) + "\n")
            p.stdin.close()
        errors = []
        for h, p in procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
            assert p.stderr is not None
            err = p.stderr.read().strip()
            p.stderr.close()
            if p.returncode:
                errors.append(f"{h.name}: {err or p.returncode}")
        if errors:
            raise LabError("; ".join(errors))

    def _batch(self, ns: str, lines: Sequence[str]) -> None:
        """``ip -batch`` in namespace ``ns``."""
        r = subprocess.run([*self.ip(ns, "-batch", "-")], input="\n".join(lines) + "\n", capture_output=True, text=True, timeout=60)
        if r.returncode:
            raise LabError(f"ip -batch in {ns}: {r.stderr.strip() or r.returncode}")

    def _dns(self, name: str) -> None:
        """Serve ``name`` (every LAN host's eth0 addresses) from the bridge's
        namespace, and point every LAN host's resolver at it."""
        assert self.bridge is not None
        self.dns_name = name
        hosts_file = os.path.join(self.workdir, "dns-hosts")
        with open(hosts_file + ".new", "w") as f:
            f.writelines(f"{ip.split('/')[0]} {name}\n" for h in self._lan for ip in h.ips)
        os.replace(hosts_file + ".new", hosts_file)
        for h in self._lan:
            d = os.path.join("/etc/netns", h.netns)
            if d not in self._etc_netns:
                os.makedirs(d, exist_ok=True)
                self._etc_netns.append(d)
                with open(os.path.join(d, "resolv.conf"), "w") as f:
                    f.write(f"nameserver {DNS_IP}\noptions edns0 timeout:2 attempts:5\n")
        if self._dnsmasq is not None:
            self._dnsmasq.send_signal(signal.SIGHUP)  # rereads the hosts file
            return
        self._batch(self.bridge, [f"addr add {DNS_IP}/16 dev br0"])
        # --user=root: the hosts file sits in the lab's private directory.
        # Many addresses answer over TCP (past EDNS's 1232 bytes), every host at
        # once when the plugs open: a connection each (dnsmasq's default is 20).
        cmd = ["dnsmasq", "--keep-in-foreground", "--no-resolv", "--no-hosts", "--user=root", f"--addn-hosts={hosts_file}", "--max-tcp-connections=512"]
        cmd += [f"--listen-address={DNS_IP}", "--bind-interfaces", f"--pid-file={os.path.join(self.workdir, 'dnsmasq.pid')}"]
        if shutil.which("dnsmasq") is None:
            raise LabError("lan: dns= needs dnsmasq (Debian: apt-get install dnsmasq-base)")
        p = subprocess.Popen([*self.enter(self.bridge), *cmd], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.procs.append(p)
        self._what[p.pid] = f"dnsmasq for {name}"
        self._dnsmasq = p

        def listening() -> bool:  # port 53 (0035) in its namespace's UDP and TCP tables
            try:
                for proto in ("udp", "tcp"):
                    with open(f"/proc/{p.pid}/net/{proto}") as f:
                        if ":0035 " not in f.read():
                            return False
                return True
            except OSError:
                return False

        self._wait(listening, "dnsmasq", procs=[p])

    # ------------------------------------------------------------ namespaces

    def enter(self, ns: str, cwd: str | None = None) -> list[str]:
        """The command prefix that runs a command in namespace ``ns`` (as
        root there: ``ip netns exec``, or ``nsenter`` into the lab's user
        namespace, where the user is root), in ``cwd`` (default: ours now)."""
        if not self.rootless:
            return ["ip", "netns", "exec", ns]
        wd = os.path.abspath(cwd or os.getcwd())  # entering a mount namespace moves to its /
        return ["nsenter", "-t", str(self._holders[ns].pid), "-U", "-n", "-m", f"--wd={wd}", "--preserve-credentials", "--"]

    def ip(self, ns: str, *args: str) -> list[str]:
        """``ip ARGS`` in namespace ``ns``."""
        return ["ip", "-n", ns, *args] if not self.rootless else [*self.enter(ns), "ip", *args]

    def _ref(self, ns: str) -> str:
        """How ``ip link set … netns`` names ``ns`` (a pid without root)."""
        return str(self._holders[ns].pid) if self.rootless else ns

    def _netns(self, name: str) -> str:
        ns = f"{self.prefix}-{name}"
        if not self.rootless:
            _run(["ip", "netns", "add", ns])
        else:
            # The first is the underlay, made with the lab's user namespace;
            # the others belong to that user namespace. Each lives while its
            # holder (cat, reading a pipe from us) does, or a process in it;
            # its mount namespace has a /sys of its own interfaces.
            first = not self._holders
            held = ["unshare", "--user", "--map-root-user", "--net", "--mount"] if first else [*self.enter(next(iter(self._holders)), "/"), "unshare", "--net", "--mount"]
            holder = subprocess.Popen([*held, "--", "sh", "-c", "mount -t sysfs sysfs /sys && exec cat"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            self._holders[ns] = holder
            self._what[holder.pid] = f"namespace {name}"

            def made() -> bool:  # the holder runs cat: unshare is done, the maps written, /sys mounted
                try:
                    return os.path.basename(os.readlink(f"/proc/{holder.pid}/exe")) == "cat"
                except OSError:
                    return False

            self._wait(made, f"namespace {name}", procs=[holder])
        self._namespaces.append(ns)
        _run(self.ip(ns, "link", "set", "lo", "up"))
        return ns

    def _netns_many(self, names: Sequence[str]) -> list[str]:
        """Namespaces for ``names``, made by one ``ip -batch`` as root
        (their loopback is left to the caller)."""
        if self.rootless:
            return [self._netns(n) for n in names]
        nss = [f"{self.prefix}-{n}" for n in names]
        self._namespaces += nss  # before: a failure part-way removes those made
        if nss:
            self._batch_root([f"netns add {ns}" for ns in nss])
        return nss

    def _batch_root(self, lines: Sequence[str]) -> None:
        r = subprocess.run(["ip", "-batch", "-"], input="\n".join(lines) + "\n", capture_output=True, text=True, timeout=120)
        if r.returncode:
            raise LabError(f"ip -batch: {r.stderr.strip() or r.returncode}")

    def _plug(self, what: str, a: str, b: str) -> subprocess.Popen[bytes]:
        cmd = [sys.executable, "-m", "vdeplug", a, b]
        if self.underlay:
            cmd = [*self.enter(self.underlay), *cmd]
        p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self._what[p.pid] = what
        self.procs.append(p)
        return p

    def _wait(self, ready: Any, what: str, timeout: float = 10, procs: Sequence[subprocess.Popen[Any]] | None = None) -> None:
        """Wait for ``ready()``; one of ``procs`` (default: all) exiting meanwhile is the error."""
        deadline = time.monotonic() + timeout
        while not ready():
            for p in self.procs if procs is None else procs:
                if p.poll() is not None:
                    raise LabError(self._failure(p))
            if time.monotonic() > deadline:
                raise LabError(f"{what}: not ready after {timeout} s")
            time.sleep(0.02)

    def _failure(self, p: subprocess.Popen[bytes]) -> str:
        """What a plug process that exited said (read once, remembered)."""
        if p.stderr and not p.stderr.closed:
            raw = p.stderr.read()
            err = (raw if isinstance(raw, str) else raw.decode(errors="replace")).strip()
            p.stderr.close()
            self._what[p.pid] = f"{self._what.get(p.pid)}: vde_plug exited with {p.returncode}: {err}"
        return self._what[p.pid]

    # ------------------------------------------------------------ teardown

    def close(self) -> None:
        """Stop every process (SIGTERM, then SIGKILL), delete the namespaces
        and the work directory."""
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
            for f in (p.stdin, p.stdout, p.stderr):
                if f and not f.closed:
                    f.close()
        self.procs.clear()
        if self.rootless:
            for ns in reversed(self._namespaces):
                _kill(_pids_in(self._holders[ns].pid))
        elif self._namespaces:
            # One pass over /proc for all of them (ip netns pids is one per namespace).
            inodes = set()
            for ns in self._namespaces:
                try:
                    inodes.add(f"net:[{os.stat(os.path.join('/run/netns', ns)).st_ino}]")
                except OSError:
                    pass
            _kill([pid for pid in os.listdir("/proc") if pid.isdigit() and _readlink(f"/proc/{pid}/ns/net") in inodes])
            subprocess.run(["ip", "-force", "-batch", "-"], input="".join(f"netns del {ns}\n" for ns in reversed(self._namespaces)), capture_output=True, text=True)
        for d in self._etc_netns:
            shutil.rmtree(d, ignore_errors=True)
        for path, (old, ours) in self._neigh_saved.items():
            try:
                with open(path) as fh:
                    if int(fh.read()) != ours:
                        continue  # changed since by someone else: theirs now
                with open(path, "w") as fh:
                    fh.write(str(old))
            except (OSError, ValueError):
                pass
        self._neigh_saved.clear()
        self._etc_netns.clear()
        self._dnsmasq = None
        self.dns_name = None
        for holder in self._holders.values():
            holder.kill()
            holder.wait()
            for f in (holder.stdin, holder.stderr):
                if f and not f.closed:
                    f.close()
        self._holders.clear()
        self._namespaces.clear()
        self.hosts.clear()
        self._lan.clear()
        self.bridge = None
        if self._owned_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> Lab:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

"""wirefilter:// (issue 24): vde2 wirefilter's link emulation nested over
any VNL, from vdeplug.open, our vde_plug and a C program on our library;
the console (mgmt= socket and Connection.wirefilter); and accuracy against
the kernel's netem in namespaces (delay + jitter, loss and bursts, rate)."""

from __future__ import annotations

import json
import math
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest
import vdeplug
from conftest import VDE_PLUG, frame, free_udp_port, needs_root, wait_for
from netns import needs_netns
from test_libvdeplug import OURS, finish, lib_of, peer, vdepeer  # noqa: F401 (vdepeer: a fixture)

HERE = Path(__file__).parent


def udp(a: int, b: int) -> str:
    return f"udp://127.0.0.1:{a}->127.0.0.1:{b}"


def timed_recv(c: vdeplug.Connection, timeout: float = 2.0) -> tuple[bytes, float]:
    t0 = time.monotonic()
    f = c.recv(timeout=timeout)
    return f, time.monotonic() - t0


def test_open_per_direction_delay_loss_and_python_console():
    pa, pb = free_udp_port(), free_udp_port()
    with vdeplug.open(f"wirefilter://[delay=RL60/seed=1]{{{udp(pa, pb)}}}") as a, vdeplug.open(udp(pb, pa)) as b:
        f = frame(100, seed=1)
        b.send(f)
        got, took = timed_recv(a)
        assert got == f and 0.058 <= took < 0.2, took
        a.send(f)  # LR untouched: straight through
        got, took = timed_recv(b)
        assert got == f and took < 0.05, took
        assert a.wirefilter("delay LR50") == "1000 Success\n"
        t0 = time.monotonic()
        a.send(f)
        # Held in our connection: released when its fd is serviced at the due time.
        with pytest.raises(TimeoutError):
            a.recv(timeout=0.15)
        got = b.recv(timeout=1)
        assert got == f and time.monotonic() - t0 >= 0.05
        a.wirefilter("loss RL100")
        for _ in range(5):
            b.send(f)
        with pytest.raises(TimeoutError):
            a.recv(timeout=0.2)
        assert a.stats.extra["wf_rl_lost"] == 5
        a.wirefilter("loss 0")
        b.send(f)
        assert a.recv(timeout=1) == f, "the change applies to the next frame"
        info = a.wirefilter("showinfo")
        assert info.startswith("0000 DATA END WITH '.'\nWireFilter: bidirectional\n") and info.endswith(".\n1000 Success\n"), info
        assert "Delay  L->R 50+0U   R->L 60+0U" in info, info
        with pytest.raises(ValueError, match="1022 Invalid argument"):
            a.wirefilter("loss 120")
        with pytest.raises(ValueError, match="1038 Function not implemented"):
            a.wirefilter("markov-numnodes 3")
        with pytest.raises(ValueError, match="no wirefilter"):
            b.wirefilter("delay 1")


def read_until(s: socket.socket, end: bytes, timeout: float = 3.0) -> bytes:
    s.settimeout(timeout)
    out = b""
    while not out.endswith(end):
        d = s.recv(4096)
        if not d:
            break
        out += d
    return out


def test_vde_plug_cable_both_ways_and_mgmt_socket(tmp_path):
    pa, pb, pc, pd = (free_udp_port() for _ in range(4))
    sock = tmp_path / "wf.mgmt"
    p = subprocess.Popen([VDE_PLUG, f'wirefilter://[delay=30/mgmt="{sock}"]{{{udp(pa, pb)}}}', udp(pc, pd)], stderr=subprocess.PIPE, text=True)
    try:
        wait_for(sock.exists, what="mgmt socket")
        assert sock.stat().st_mode & 0o777 == 0o600
        with vdeplug.open(udp(pb, pa)) as x, vdeplug.open(udp(pd, pc)) as y:
            f = frame(200, seed=2)
            for src, dst in ((x, y), (y, x)):  # RL then LR through the forwarding loop
                src.send(f)
                got, took = timed_recv(dst)
                assert got == f and 0.029 <= took < 0.2, took
            m = socket.socket(socket.AF_UNIX)
            m.connect(str(sock))
            assert read_until(m, b"\nVDEwf$ ").startswith(b"\nVDE wirefilter V.")
            m.sendall(b"delay 0\n")
            assert read_until(m, b"\nVDEwf$ ") == b"1000 Success\n\nVDEwf$ "
            x.send(f)
            got, took = timed_recv(y)
            assert got == f and took < 0.02, took
            m.sendall(b"showinfo\n")
            info = read_until(m, b"\nVDEwf$ ").decode()
            assert "Delay  L->R 0+0U   R->L 0+0U" in info and "1000 Success" in info, info
            m.sendall(b"logout\n")
            assert read_until(m, b"never") == b"1000 Success\n"
            m.close()
    finally:
        p.terminate()
        p.wait(5)
    assert not sock.exists(), "removed on exit"


def test_mgmt_path_taken_and_bad_values_name_the_option(tmp_path):
    taken = tmp_path / "taken"
    taken.write_text("mine")
    for vnl, word in (
        (f'wirefilter://[mgmt="{taken}"]{{null://}}', "already there"),
        ("wirefilter://[loss=abc]{null://}", '"loss"'),
        ("wirefilter://[delay=20+5X]{null://}", '"delay"'),
        ("wirefilter://[dup=100]{null://}", '"dup"'),
        ("wirefilter://[mgmtmode=9]{null://}", '"mgmtmode"'),
    ):
        r = subprocess.run([VDE_PLUG, vnl, "null://"], capture_output=True, text=True, timeout=10)
        assert r.returncode != 0 and word in r.stderr, (vnl, r.stderr)
    assert taken.read_text() == "mine"


def test_c_program_on_our_library_through_wirefilter(vdepeer):  # noqa: F811
    """vdepeer (poll + vde_recv/vde_send) on our libvdeplug.so.2 with a
    delayed, duplicating wirefilter: 40 frames each way arrive intact."""
    pa, pb = free_udp_port(), free_udp_port()
    one = peer(vdepeer, f"wirefilter://[delay=5+2/dup=LR10/seed=3]{{{udp(pa, pb)}}}", "pingpong", "1", "40", "20", ours=True)
    two = peer(vdepeer, udp(pb, pa), "pingpong", "2", "40", "20", ours=True)
    (rc1, out1), (rc2, out2) = finish(one), finish(two)
    assert rc1 == 0 and rc2 == 0, out1 + out2
    assert lib_of(out1) == os.path.realpath(OURS)


# ---------------------------------------------------------------- against netem


def ip(*args: str) -> str:
    return subprocess.run(["ip", *args], check=True, capture_output=True, text=True).stdout


class Link:
    """Namespaces A and B joined by one cable: ours (taps on a vde_plug
    with a wirefilter, built in a third namespace, moved to A and B) or the
    kernel's (a veth pair, a qdisc such as netem on each end). A is 10.9.0.1, B 10.9.0.2."""

    def __init__(self, kind: str, ours: str = "", qdisc_a: str = "", qdisc_b: str = "") -> None:
        tag = f"{os.getpid() % 100000}{kind[0]}"
        self.a, self.b, self.mid = f"wfa{tag}", f"wfb{tag}", f"wfm{tag}"
        self.plug: subprocess.Popen[str] | None = None
        for n in (self.a, self.b, self.mid):
            ip("netns", "add", n)
        try:
            if kind == "ours":
                self.plug = subprocess.Popen(["ip", "netns", "exec", self.mid, VDE_PLUG, f"wirefilter://[{ours}]{{tap://{self.a}}}", f"tap://{self.b}"], stderr=subprocess.PIPE, text=True)
                wait_for(lambda: self.b in ip("-n", self.mid, "link"), what="taps")
                ip("-n", self.mid, "link", "set", self.a, "netns", self.a)
                ip("-n", self.mid, "link", "set", self.b, "netns", self.b)
            else:
                ip("-n", self.mid, "link", "add", self.a, "type", "veth", "peer", "name", self.b)
                ip("-n", self.mid, "link", "set", self.a, "netns", self.a)
                ip("-n", self.mid, "link", "set", self.b, "netns", self.b)
                for ns, q in ((self.a, qdisc_a), (self.b, qdisc_b)):
                    if q:
                        subprocess.run(["ip", "netns", "exec", ns, "tc", "qdisc", "add", "dev", ns, "root", *q.split()], check=True)
            for ns, addr in ((self.a, "10.9.0.1/24"), (self.b, "10.9.0.2/24")):
                subprocess.run(["ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1"], check=True)
                ip("-n", ns, "addr", "add", addr, "dev", ns)
                ip("-n", ns, "link", "set", ns, "up")
            # Static neighbours: no ARP to lose or delay.
            ip("-n", self.a, "neigh", "add", "10.9.0.2", "lladdr", self.mac(self.b), "dev", self.a)
            ip("-n", self.b, "neigh", "add", "10.9.0.1", "lladdr", self.mac(self.a), "dev", self.b)
        except BaseException:
            self.close()
            raise

    def mac(self, ns: str) -> str:
        return str(json.loads(ip("-j", "-n", ns, "link", "show", ns))[0]["address"])

    def rtts(self, count: int, interval: float) -> list[float]:
        out = subprocess.run(["ip", "netns", "exec", self.a, "ping", "-n", "-c", str(count), "-i", str(interval), "10.9.0.2"], capture_output=True, text=True, timeout=120).stdout
        return [float(w.split("=")[1]) for w in out.split() if w.startswith("time=")]

    def blast(self, count: int, size: int, rate: float) -> dict[str, object]:
        """UDP from A to B: what B received."""
        rx = subprocess.Popen(["ip", "netns", "exec", self.b, sys.executable, str(HERE / "wf_udp.py"), "recv", "10.9.0.2", "9999", "1.0"], stdout=subprocess.PIPE, text=True)
        assert rx.stdout and rx.stdout.readline().strip() == "ready"
        subprocess.run(["ip", "netns", "exec", self.a, sys.executable, str(HERE / "wf_udp.py"), "send", "10.9.0.2", "9999", str(count), str(size), str(rate)], check=True, timeout=60)
        out, _ = rx.communicate(timeout=60)
        return dict(json.loads(out))

    def close(self) -> None:
        if self.plug:
            self.plug.terminate()
            self.plug.wait(5)
        for n in (self.a, self.b, self.mid):
            subprocess.run(["ip", "netns", "del", n], capture_output=True)


def qdisc_available(kind: str) -> bool:
    """Does this kernel have qdisc `kind` (netem is often left out)?"""
    ns = f"wfq{os.getpid() % 100000}"
    ip("netns", "add", ns)
    try:
        args = {"netem": ["delay", "1ms"], "tbf": ["rate", "1mbit", "burst", "1600", "limit", "3000"]}[kind]
        return subprocess.run(["ip", "netns", "exec", ns, "tc", "qdisc", "add", "dev", "lo", "root", kind, *args], capture_output=True).returncode == 0
    finally:
        ip("netns", "del", ns)


def both(ours: str, kernel_a: str, kernel_b: str, run):  # type: ignore[no-untyped-def]
    """`run` on our cable, and on the kernel's when it has the qdisc (key "netem" or "tbf")."""
    res = {}
    kind = (kernel_a or kernel_b).split()[0]
    for which in ("ours", kind) if qdisc_available(kind) else ("ours",):
        link = Link(which, ours, kernel_a, kernel_b)
        try:
            res[which] = run(link)
        finally:
            link.close()
    return res


def bursts(seqs: list[int], count: int) -> list[int]:
    got = set(seqs)
    out, run = [], 0
    for i in range(count):
        if i in got:
            if run:
                out.append(run)
            run = 0
        else:
            run += 1
    return out


needs_tc = pytest.mark.skipif(os.geteuid() != 0 or not (os.path.exists("/usr/sbin/tc") or os.path.exists("/sbin/tc")), reason="needs root and tc")


@needs_root
@needs_tc
def test_delay_jitter_matches_setting_and_netem():
    """20 ms ± 10 ms (uniform) each way: RTT mean 40 ms, std 10·sqrt(2/3).
    nofifo: netem lets jitter reorder, and so must we to compare."""

    def run(link: Link) -> tuple[float, float]:
        r = link.rtts(1500, 0.002)[5:]
        assert len(r) > 1400
        return statistics.mean(r), statistics.pstdev(r)

    res = both("delay=20+10/nofifo/seed=5", "netem delay 20ms 10ms", "netem delay 20ms 10ms", run)
    want_std = 10 * math.sqrt(2 / 3)
    for kind, (m, s) in res.items():
        assert abs(m - 40) < 40 * 0.05 and abs(s - want_std) < want_std * 0.05, (kind, m, s)
    if "netem" in res:  # this kernel may lack netem (CONFIG_NET_SCH_NETEM)
        (m1, s1), (m2, s2) = res["ours"], res["netem"]
        assert abs(m1 - m2) < m2 * 0.05 and abs(s1 - s2) < s2 * 0.05, res


@needs_root
@needs_tc
def test_loss_rate_bursts_and_rate_match_setting_and_netem():
    """A→B: 20 % loss (Bernoulli), then Gilbert bursts of mean 3 (netem's
    gemodel with the same chain), then 125 000 B/s (netem rate 1000kbit)."""
    n = 20000

    def loss(link: Link) -> tuple[float, float]:
        r = link.blast(n, 200, 2_500_000)
        seqs = list(r["seqs"])  # type: ignore[call-overload]
        return 1 - len(seqs) / n, statistics.mean(bursts(seqs, n))

    res = both("loss=RL20/seed=7", "netem loss 20%", "", loss)
    for kind, (rate, burst) in res.items():
        # Bernoulli: 20000 frames make the rate's sigma 1.4 % of it.
        assert abs(rate - 0.2) < 0.2 * 0.05 and abs(burst - 1.25) < 1.25 * 0.05, (kind, rate, burst)
    n = 50000  # bursts of 3: about 3300 of them, the mean's sigma 1.4 %
    res = both("loss=RL20/lostburst=RL3/seed=7", "netem loss gemodel 8.3333% 33.3333% 100% 0%", "", loss)
    r1, b1 = res["ours"]
    assert abs(r1 - 0.2) < 0.2 * 0.05 and abs(b1 - 3) < 3 * 0.05, res
    if "netem" in res:
        # netem is not seeded: bursts make its rate vary more (sigma ≈ 3.5 % here).
        r2, b2 = res["netem"]
        assert abs(r2 - 0.2) < 0.2 * 0.15 and abs(b2 - 3) < 3 * 0.1, res

    def rate(link: Link) -> float:
        r = link.blast(600, 1000, 250_000)
        seqs = list(r["seqs"])  # type: ignore[call-overload]
        assert len(seqs) > 200
        return (len(seqs) - 1) * 1000 / (float(r["last"]) - float(r["first"]))  # type: ignore[arg-type]

    # The kernel's reference: netem's rate, else a token bucket (tbf) with a one-frame burst.
    kernel = "netem rate 1000kbit limit 48" if qdisc_available("netem") else "tbf rate 1000kbit burst 1600 limit 50000"
    res = both("bandwidth=RL125000/bufsize=RL50000", kernel, "", rate)
    want = 125_000 * 1000 / 1042  # UDP payload of 1042-byte frames
    for kind, got in res.items():
        assert abs(got - want) < want * 0.05, (kind, got, want)
    ref = res.get("netem", res.get("tbf"))
    assert ref is not None and abs(res["ours"] - ref) < ref * 0.05, res


# ---------------------------------------------------------------- labs


def test_duplication_rate_matches_setting_and_netem():
    """A→B with dup 10 %: wirefilter repeats each further copy with that
    probability (p/(1-p) = 0.111 extra copies per frame); netem's
    `duplicate 10%` makes at most one (0.1)."""
    n = 20000

    def extra(link: Link) -> float:
        seqs = list(link.blast(n, 200, 2_500_000)["seqs"])  # type: ignore[call-overload]
        assert len(set(seqs)) > n * 0.99, "nothing lost"
        return (len(seqs) - len(set(seqs))) / len(set(seqs))

    res = both("dup=RL10/seed=7", "netem duplicate 10%", "", extra)
    # 20000 frames: the extra copies' sigma is about 3 % of 0.111.
    assert abs(res["ours"] - 1 / 9) < (1 / 9) * 0.08, res
    if "netem" in res:
        assert abs(res["netem"] - 0.1) < 0.1 * 0.1, res


def test_lab_link_parameters_become_a_wirefilter():
    from vdeplug.lab import LabError, link_vnl

    assert link_vnl({}, "vde:///x") == "vde:///x"
    got = link_vnl({"delay": "20ms", "jitter": "5ms", "loss": "1%", "rate": "10mbit", "limit": 30000, "seed": 3}, "vde:///x")
    assert got == "wirefilter://[delay=20+5/loss=1/bandwidth=1250000/bufsize=30000/seed=3]{vde:///x}"
    assert link_vnl({"delay": 0.1 * 1000, "dup": 2, "rate": "1mbps"}, "null://") == "wirefilter://[delay=100+0/dup=2/bandwidth=1000000]{null://}"
    with pytest.raises(LabError, match="link rate"):
        link_vnl({"rate": "fast"}, "null://")
    with pytest.raises(LabError, match="unknown link parameter 'latency'"):
        link_vnl({"latency": 3}, "null://")


@needs_netns
def test_lab_host_with_link_delay_pings_slower():
    from vdeplug.lab import Lab

    spec = {
        "switches": ["sw"],
        "hosts": {"a": {"plug": "sw", "ip": "10.0.0.1/24"}, "b": {"plug": "sw", "ip": "10.0.0.2/24", "link": {"delay": "15ms"}}},
    }
    with Lab(spec) as lab:
        assert lab.hosts["a"].ping("10.0.0.2")
        out = lab.hosts["a"].run("ping", "-n", "-c", "5", "-i", "0.05", "10.0.0.2").stdout
        rtts = [float(w.split("=")[1]) for w in out.split() if w.startswith("time=")]
        assert len(rtts) == 5 and all(30 <= r < 100 for r in rtts), out

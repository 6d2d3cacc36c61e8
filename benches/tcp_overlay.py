#!/usr/bin/env python3
"""TCP over an overlay: what users feel. Two hosts (network namespaces
joined by a veth underlay, MTU 9000; overlay MTU 1500), each with
`vde_plug OVERLAY tap://t0` and an address on the tap; iperf3 between them.
Compared in one run: ours, Debian's C vde_plug, the kernel's own vxlan,
and the encrypted tunnels users pick instead: tinc 1.0 in switch mode (an
Ethernet VPN, Debian's defaults) and wireguard-go (an L3 reference, MTU
1500 as the others' taps).

    python3 benches/tcp_overlay.py [--seconds 4] [--reps 3] [--only ours-vxvde,...]
    python3 benches/tcp_overlay.py --only 'ours vxvde,C vxvde' --also old=/path/to/old/venv/bin/vde_plug
        # a same-run before/after: adds the row 'old vxvde' (that vde_plug)

Needs root, iperf3, and (for their rows) Debian's vdeplug, tinc,
wireguard-go and wireguard-tools; a row whose tool is missing is left out.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

OURS = shutil.which("vde_plug", path=str(Path(sys.executable).parent)) or "vde_plug"
C_PLUG = "/usr/bin/vde_plug"
PID = os.getpid()
H1, H2 = f"vdptcp{PID}a", f"vdptcp{PID}b"
UNDER = ("192.168.77.1", "192.168.77.2")
OVER = ("10.77.0.1", "10.77.0.2")
GROUP = "239.77.77.77"
KEY = Path(f"/tmp/vdptcp{PID}.key")  # seal://'s key (vde_plug --keygen)
AGNO_KEY = Path(f"/tmp/vdptcp{PID}.agno")  # agno://'s (16 bytes in hex, lowercase)
WORK = Path(f"/tmp/vdptcp{PID}")  # tinc's and WireGuard's configuration


def sh(*argv: str, check: bool = True, input_: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, check=check, input=input_)


def ns(name: str, *argv: str) -> list[str]:
    return ["ip", "netns", "exec", name, *argv]


def setup() -> None:
    for n in (H1, H2):
        sh("ip", "netns", "add", n)
        sh("ip", "-n", n, "link", "set", "lo", "up")
    sh("ip", "link", "add", "vdptcpv0", "netns", H1, "type", "veth", "peer", "name", "vdptcpv1", "netns", H2)
    for n, dev, addr in ((H1, "vdptcpv0", UNDER[0]), (H2, "vdptcpv1", UNDER[1])):
        sh("ip", "-n", n, "link", "set", dev, "mtu", "9000", "up")
        sh("ip", "-n", n, "addr", "add", f"{addr}/24", "dev", dev)
        sh("ip", "-n", n, "route", "add", "224.0.0.0/4", "dev", dev)
    if not KEY.exists() and os.path.exists(OURS):
        sh(OURS, "--keygen", str(KEY))
    AGNO_KEY.write_text(os.urandom(16).hex() + "\n")
    AGNO_KEY.chmod(0o600)
    WORK.mkdir(mode=0o700)
    if shutil.which("tincd"):
        tinc_config()
    if shutil.which("wg"):
        for i in range(2):
            (WORK / f"wg{i}.key").write_text(sh("wg", "genkey").stdout)
            (WORK / f"wg{i}.key").chmod(0o600)


def tinc_config() -> None:
    """Two tinc 1.0 nodes in switch mode; h0 connects to h1. Keys from
    `tincd -K`; each node holds both host files."""
    for i in range(2):
        d = WORK / f"tinc{i}"
        (d / "hosts").mkdir(parents=True)
        conf = f"Name = h{i}\nMode = switch\nDeviceType = tap\nInterface = t0\nAddressFamily = ipv4\n"
        (d / "tinc.conf").write_text(conf + ("ConnectTo = h1\n" if i == 0 else ""))
        (d / "hosts" / f"h{i}").write_text(f"Address = {UNDER[i]}\nPort = 655\n")
        sh("tincd", "-c", str(d), "-K2048", check=True)
    for i in range(2):
        other = WORK / f"tinc{1 - i}" / "hosts" / f"h{1 - i}"
        shutil.copy(other, WORK / f"tinc{i}" / "hosts" / f"h{1 - i}")


def teardown() -> None:
    for n in (H1, H2):
        sh("ip", "netns", "pids", n, check=False)
        r = sh("ip", "netns", "pids", n, check=False)
        for pid in r.stdout.split():
            try:
                os.kill(int(pid), 9)
            except (ProcessLookupError, ValueError):
                pass
        sh("ip", "netns", "del", n, check=False)
    KEY.unlink(missing_ok=True)
    AGNO_KEY.unlink(missing_ok=True)
    shutil.rmtree(WORK, ignore_errors=True)


@dataclass
class Path_:
    """One way of joining the two hosts' taps (or the kernel's vxlan,
    tinc's tap, WireGuard's tun)."""

    name: str
    plug: str | None  # the vde_plug executable, None for the kernel
    url: str = ""
    kind: str = "vde"  # vde, kernel, tinc, wg, or lib (tests/c/vdepeer.c's relay: `PLUG URL relay tap://t0`)
    env: dict[str, str] | None = None  # e.g. LD_LIBRARY_PATH for lib


PATHS = [
    Path_("ours vxvde", OURS, f"vxvde://{GROUP}"),
    Path_("ours sealed vxvde", OURS, f"seal://{KEY}{{vxvde://{GROUP}}}"),
    Path_("ours agno vxvde", OURS, f"agno://{AGNO_KEY}{{vxvde://{GROUP}}}"),
    Path_("C agno vxvde", C_PLUG, f"agno://{AGNO_KEY}{{vxvde://{GROUP}}}"),
    Path_("C vxvde", C_PLUG, f"vxvde://{GROUP}"),
    Path_("ours vxlan", OURS, f"vxlan://{GROUP}/port=4790"),
    Path_("C vxlan", C_PLUG, f"vxlan://{GROUP}/port=4790"),
    Path_("ours udp", OURS, "udp"),
    Path_("C udp", C_PLUG, "udp"),
    Path_("tinc switch", shutil.which("tincd"), kind="tinc"),
    Path_("wireguard-go", shutil.which("wireguard-go"), kind="wg"),
    Path_("kernel vxlan", None, kind="kernel"),
]


def bring_up(p: Path_, settle_tries: int = 30) -> list[subprocess.Popen]:
    procs = []
    for i, n in enumerate((H1, H2)):
        if p.kind == "tinc":
            d = WORK / f"tinc{i}"
            procs.append(subprocess.Popen(ns(n, p.plug or "tincd", "-c", str(d), "-D", f"--pidfile={d}/pid"), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True))
        elif p.kind == "wg":
            env = dict(os.environ, WG_PROCESS_FOREGROUND="1")
            # Named apart: wg finds a daemon by /run/wireguard/NAME.sock,
            # shared by both namespaces; renamed t0 once configured.
            procs.append(subprocess.Popen(ns(n, p.plug or "wireguard-go", "-f", f"wgt{i}"), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env))
        elif p.plug is None:
            sh("ip", "-n", n, "link", "add", "t0", "type", "vxlan", "id", "42", "group", GROUP, "dev", ("vdptcpv0", "vdptcpv1")[i], "dstport", "4791")
        else:
            url = p.url
            if url == "udp":
                url = f"udp://5000->{UNDER[1 - i]}:5000"
            argv = [p.plug, url, "relay", "tap://t0"] if p.kind == "lib" else [p.plug, url, "tap://t0"]
            procs.append(subprocess.Popen(ns(n, *argv), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=p.env))
    deadline = time.monotonic() + 5
    for i, n in enumerate((H1, H2)):
        dev = f"wgt{i}" if p.kind == "wg" else "t0"
        while sh("ip", "-n", n, "link", "show", dev, check=False).returncode:
            if time.monotonic() > deadline or any(q.poll() is not None for q in procs):
                raise RuntimeError(f"{p.name}: no t0: {[q.stderr.read() if q.stderr else '' for q in procs]}")
            time.sleep(0.05)
        if p.kind == "wg":
            wg_peer(n, i)
            sh("ip", "-n", n, "link", "set", dev, "name", "t0")
        sh("ip", "-n", n, "link", "set", "t0", "mtu", "1500", "up")
        sh("ip", "-n", n, "addr", "add", f"{OVER[i]}/24", "dev", "t0")
    # ARP and learning settle; the first ping may be lost to learning.
    for _ in range(settle_tries):
        if sh(*ns(H1, "ping", "-c1", "-W1", OVER[1]), check=False).returncode == 0:
            break
    return procs


def wg_peer(n: str, i: int) -> None:
    """Host i's WireGuard: its key, and the other host as its one peer."""
    peer = sh("wg", "pubkey", input_=(WORK / f"wg{1 - i}.key").read_text()).stdout.strip()
    sh(*ns(n, "wg", "set", f"wgt{i}", "private-key", str(WORK / f"wg{i}.key"), "listen-port", "51820", "peer", peer, "allowed-ips", f"{OVER[1 - i]}/32", "endpoint", f"{UNDER[1 - i]}:51820"))


def tear_down(p: Path_, procs: list[subprocess.Popen]) -> None:
    for q in procs:
        q.terminate()
    for q in procs:
        try:
            q.wait(5)
        except subprocess.TimeoutExpired:
            q.kill()
    for n in (H1, H2):
        sh("ip", "-n", n, "link", "del", "t0", check=False)


def cpu_seconds(procs: list[subprocess.Popen]) -> float:
    """CPU seconds (user+system) used so far by these processes."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for q in procs:
        try:
            f = Path(f"/proc/{q.pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(f[11]) + int(f[12])) / tick
        except (OSError, IndexError, ValueError):
            pass
    return total


def run_seconds(pids: list[int]) -> float:
    """CPU seconds these processes (all their threads) ran so far
    (/proc/PID/task/*/schedstat: softirq work done in their context
    included, unlike the tick-sampled /proc/stat)."""
    total = 0
    for pid in pids:
        for task in Path(f"/proc/{pid}/task").glob("*/schedstat"):
            try:
                total += int(task.read_text().split()[0])
            except (OSError, IndexError, ValueError):
                pass
    return total / 1e9


def ksoftirqd() -> list[int]:
    return [int(p) for p in sh("pgrep", "ksoftirqd", check=False).stdout.split()]


def iperf(seconds: float, procs: list[subprocess.Popen]) -> dict:
    """One transfer: Gbit/s, the relays' CPU share, and the CPU all of it
    took (relays, both iperf3s, ksoftirqd) per 10 Gbit/s, measured over the
    middle of the transfer; the last is what a 2-CPU machine runs out of."""
    server = subprocess.Popen(ns(H2, "iperf3", "-s", "-1", "-B", OVER[1]), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(0.3)
        c0, t0 = cpu_seconds(procs), time.monotonic()
        client = subprocess.Popen(ns(H1, "iperf3", "-c", OVER[1], "-t", str(seconds), "-J"), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        everyone = [q.pid for q in procs] + [server.pid, client.pid] + ksoftirqd()
        time.sleep(seconds / 4)
        a0, w0 = run_seconds(everyone), time.monotonic()
        time.sleep(seconds / 2)
        a1, w1 = run_seconds(everyone), time.monotonic()
        stdout = client.communicate(timeout=seconds + 20)[0]
        c1, t1 = cpu_seconds(procs), time.monotonic()
        out = json.loads(stdout)
        if "error" in out:
            raise RuntimeError(out["error"])
        gbps = out["end"]["sum_received"]["bits_per_second"] / 1e9
        retr = out["end"]["sum_sent"].get("retransmits", 0)
        cores = (a1 - a0) / (w1 - w0)
        return {"gbps": gbps, "retransmits": retr, "relay_cores": (c1 - c0) / (t1 - t0), "cores_per_10g": cores / gbps * 10 if gbps > 0 else None}
    finally:
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def run(paths: list[Path_], seconds: float, reps: int) -> dict:
    results: dict[str, list[dict]] = {}
    failed: dict[str, str] = {}
    for rep in range(reps):
        for p in paths:
            if p.kind != "kernel" and not (p.plug and os.path.exists(p.plug)):
                continue
            if p.kind == "wg" and not shutil.which("wg"):
                continue
            procs = []
            try:
                procs = bring_up(p)
                r = iperf(seconds, procs)
            except (RuntimeError, subprocess.CalledProcessError, json.JSONDecodeError, KeyError) as e:
                # e.g. vdeplug4 4.0.1's vxlan cannot send unicast (EDESTADDRREQ): no TCP at all.
                failed.setdefault(p.name, str(e).strip().splitlines()[-1][:120] if str(e).strip() else type(e).__name__)
                print(f"rep {rep + 1} {p.name:14} FAILED: {failed[p.name]}", file=sys.stderr)
                continue
            finally:
                tear_down(p, procs)
            results.setdefault(p.name, []).append(r)
            print(f"rep {rep + 1} {p.name:14} {r['gbps']:6.2f} Gbit/s  retr {r['retransmits']:5}  relay cores {r['relay_cores']:.2f}  cores per 10G {r['cores_per_10g'] or 0:.2f}", file=sys.stderr)
    out = {k: summarize(v) for k, v in results.items()}
    for k, why in failed.items():
        out.setdefault(k, {"failed": why})
    return out


def summarize(runs: list[dict]) -> dict:
    g = [r["gbps"] for r in runs]
    cores = statistics.median(r["relay_cores"] for r in runs)
    med = statistics.median(g)
    per10 = [r["cores_per_10g"] for r in runs if r.get("cores_per_10g")]
    per_core = med / cores if cores > 0.01 else None
    return {"gbps": med, "min": min(g), "max": max(g), "relay_cores": cores, "gbps_per_core": per_core, "cores_per_10g": statistics.median(per10) if per10 else None, "runs": runs}


def table(res: dict) -> str:
    kernel = res.get("kernel vxlan", {}).get("gbps")  # None when it failed
    lines = ["| path | TCP Gbit/s (median, min–max) | × kernel vxlan | × C | relay cores | Gbit/s per relay core | all CPU per 10 Gbit/s |", "|---|---|---|---|---|---|---|"]
    for name, r in res.items():
        if "failed" in r:
            lines.append(f"| {name} | fails: {r['failed']} | — | — | — | — | — |")
            continue
        c = res.get(name.replace("ours", "C"), {}).get("gbps") if name.startswith("ours") else None
        kernel_ok = kernel and "failed" not in res.get("kernel vxlan", {})
        lines.append(f"| {name} | {r['gbps']:.2f} ({r['min']:.2f}–{r['max']:.2f}) | {r['gbps'] / kernel:.2f}× |" if kernel_ok else f"| {name} | {r['gbps']:.2f} | — |")
        lines[-1] += f" {r['gbps'] / c:.1f}× |" if c else " — |"
        lines[-1] += f" {r['relay_cores']:.2f} | {r['gbps_per_core']:.2f} |" if r["gbps_per_core"] else " — | — |"
        lines[-1] += f" {r['cores_per_10g']:.2f} cores |" if r.get("cores_per_10g") else " — |"
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=4)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--only", help="comma-separated path names, e.g. 'ours vxvde,kernel vxlan'")
    ap.add_argument("--json", type=Path, help="write the results here")
    ap.add_argument("--also", action="append", default=[], metavar="NAME=VDE_PLUG", help="also run 'NAME vxvde' with that vde_plug (a before/after in one run)")
    args = ap.parse_args()
    if os.geteuid() != 0 or not shutil.which("iperf3"):
        print("needs root and iperf3", file=sys.stderr)
        return 2
    paths = PATHS
    if args.only:
        keep = {s.strip() for s in args.only.split(",")}
        paths = [p for p in PATHS if p.name in keep]
    for spec in args.also:
        name, _, exe = spec.partition("=")
        paths.append(Path_(f"{name} vxvde", exe, f"vxvde://{GROUP}"))
    setup()
    try:
        res = run(paths, args.seconds, args.reps)
    finally:
        teardown()
    if args.json:
        args.json.write_text(json.dumps(res, indent=1))
    print(table(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())

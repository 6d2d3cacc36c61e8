#!/usr/bin/env python3
"""Where a round trip's microseconds go, relay by relay (issue 30).

Two namespaces (hosts A and B) joined by a veth, each with a tap `t0`
plugged into an overlay by the plug under test (`CMD OVERLAY tap://t0`),
as in rtt_ab.py; A pings B. tcpdump on both taps and both veth ends takes
kernel timestamps of every echo request and reply (an overlay datagram is
matched by the ICMP frame inside it), so each crossing is timed on its own:

    A out     request on A's tap  -> its datagram leaves A's veth (plug A)
    B in      datagram reaches B  -> request on B's tap          (plug B)
    B stack   request on B's tap  -> reply on B's tap            (B's kernel)
    B out     reply on B's tap    -> its datagram leaves B       (plug B)
    A in      datagram reaches A  -> reply on A's tap            (plug A)

At 1000/s A's plug has slept for a millisecond when a request comes, so
"A out" includes waking it; B's plug has just written the request when the
reply comes, so "B out" is a relay that is already running. The variants
are alternated rep by rep (order reversed every other rep) and share the
capture's own cost. Root only.

    python3 benches/hops.py new=vde_plug C=/usr/bin/vde_plug
    python3 benches/hops.py --overlay vxvde://239.91.91.91 nooff='VDEPLUG_TAP_OFFLOAD=0 vde_plug' new=vde_plug
"""

from __future__ import annotations

import argparse
import os
import shlex
import statistics
import struct
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

HOPS = ("A out", "B in", "B stack", "B out", "A in", "round trip")
# (namespace, interface): where each capture runs.
TAPS = {"a_tap": ("la", "t0"), "a_net": ("la", "lv0"), "b_tap": ("lb", "t0"), "b_net": ("lb", "lv1")}


def sh(cmd: str) -> None:
    subprocess.run(cmd, shell=True, check=True)


def pcap(path: Path) -> Iterator[tuple[float, bytes]]:
    """(timestamp, frame) of each record of a pcap file (µs or ns stamps)."""
    data = path.read_bytes()
    if len(data) < 24:
        return
    nano = struct.unpack("<I", data[:4])[0] == 0xA1B23C4D
    off = 24
    while off + 16 <= len(data):
        sec, frac, incl, _ = struct.unpack("<IIII", data[off : off + 16])
        yield sec + frac / (1e9 if nano else 1e6), data[off + 16 : off + 16 + incl]
        off += 16 + incl


def echo(frame: bytes, depth: int = 0) -> tuple[int, int] | None:
    """(ICMP type, sequence) of an echo request/reply in an Ethernet frame,
    or in one carried by a UDP datagram (udp://, or behind a VXLAN header)."""
    if len(frame) < 42 or frame[12:14] != b"\x08\x00":
        return None
    ihl = (frame[14] & 15) * 4
    o = 14 + ihl
    if frame[23] == 1 and len(frame) >= o + 8 and frame[o] in (0, 8):
        return frame[o], struct.unpack("!H", frame[o + 6 : o + 8])[0]
    if frame[23] == 17 and depth == 0:
        for skip in (0, 8):
            found = echo(frame[o + 8 + skip :], 1)
            if found:
                return found
    return None


def first_seen(path: Path) -> dict[tuple[int, int], float]:
    seen: dict[tuple[int, int], float] = {}
    for t, frame in pcap(path):
        key = echo(frame)
        if key and key not in seen:
            seen[key] = t
    return seen


def one(argv: list[str], env: dict[str, str], overlay: str, count: int, interval: str, tmp: Path) -> dict[str, list[float]]:
    """Each hop's times (µs) over `count` pings through a pair of plugs."""
    procs = [subprocess.Popen(["ip", "netns", "exec", ns, *argv, overlay.replace("PEER", f"192.168.91.{3 - x}"), "tap://t0"], env=env) for ns, x in (("la", 1), ("lb", 2))]
    dumps: list[subprocess.Popen[bytes]] = []
    try:
        for _ in range(100):
            if all(subprocess.run(["ip", "-n", ns, "link", "show", "t0"], capture_output=True).returncode == 0 for ns in ("la", "lb")):
                break
            time.sleep(0.05)
        for ns, x in (("la", 1), ("lb", 2)):
            sh(f"ip -n {ns} addr add 10.91.0.{x}/24 dev t0; ip -n {ns} link set t0 up")
        subprocess.run("ip netns exec la ping -c 5 -i 0.05 -W 1 10.91.0.2", shell=True, capture_output=True)
        for key, (ns, dev) in TAPS.items():
            cmd = ["ip", "netns", "exec", ns, "tcpdump", "-i", dev, "-s", "200", "--time-stamp-precision=nano", "-w", str(tmp / f"{key}.pcap"), "icmp or udp"]
            dumps.append(subprocess.Popen(cmd, stderr=subprocess.DEVNULL))
        time.sleep(1.0)  # tcpdump is listening
        subprocess.run(f"ip netns exec la ping -q -c {count} -i {interval} 10.91.0.2", shell=True, capture_output=True)
        time.sleep(0.3)
    finally:
        for p in dumps + procs:
            p.terminate()
        for p in dumps + procs:
            p.wait()
    seen = {key: first_seen(tmp / f"{key}.pcap") for key in TAPS}
    hops: dict[str, list[float]] = {h: [] for h in HOPS}
    for seq in range(1, count + 1):
        q, r = (8, seq), (0, seq)
        try:
            t = [seen["a_tap"][q], seen["a_net"][q], seen["b_net"][q], seen["b_tap"][q], seen["b_tap"][r], seen["b_net"][r], seen["a_net"][r], seen["a_tap"][r]]
        except KeyError:
            continue  # lost, or not captured
        for h, (i, j) in zip(HOPS, ((0, 1), (2, 3), (3, 4), (4, 5), (6, 7), (0, 7))):
            hops[h].append((t[j] - t[i]) * 1e6)
    return hops


def q(xs: list[float], p: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(len(s) * p))] if s else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--count", type=int, default=2000)
    ap.add_argument("--interval", default="0.001", help="seconds between pings (default 0.001: 1000/s)")
    ap.add_argument("--overlay", default="udp://5000->PEER:5000", help="PEER: the other host (default a udp:// tunnel)")
    ap.add_argument("variants", nargs="+", help="NAME=CMD (leading VAR=value words go to the environment)")
    a = ap.parse_args()
    variants = []
    for v in a.variants:
        name, _, cmd = v.partition("=")
        env, argv = dict(os.environ), shlex.split(cmd)
        while argv and "=" in argv[0] and not argv[0].startswith("/"):
            k, _, val = argv.pop(0).partition("=")
            env[k] = val
        variants.append((name, argv, env))
    for ns in ("la", "lb"):
        subprocess.run(["ip", "netns", "del", ns], stderr=subprocess.DEVNULL)
        sh(f"ip netns add {ns}; ip -n {ns} link set lo up")
    sh("ip link add lv0 netns la type veth peer name lv1 netns lb")
    for ns, dev, x in (("la", "lv0", 1), ("lb", "lv1", 2)):
        sh(f"ip -n {ns} addr add 192.168.91.{x}/24 dev {dev}; ip -n {ns} link set {dev} up; ip -n {ns} route add 224.0.0.0/4 dev {dev}")
    res: dict[str, dict[str, list[float]]] = {name: {h: [] for h in HOPS} for name, _, _ in variants}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for r in range(a.reps):
                for name, argv, env in variants if r % 2 == 0 else variants[::-1]:
                    hops = one(argv, env, a.overlay, a.count, a.interval, Path(tmp))
                    if not hops["round trip"]:
                        raise SystemExit(f"{name}: no round trip captured")
                    for h in HOPS:
                        res[name][h] += hops[h]
                    line = ", ".join(f"{h} {statistics.median(hops[h]):.1f}" for h in HOPS)
                    print(f"{name:10s} rep{r} n={len(hops['round trip'])}: {line}", flush=True)
    finally:
        for ns in ("la", "lb"):
            subprocess.run(["ip", "netns", "del", ns])
    print(f"\nall reps, p50 / p90 µs ({a.overlay}, one ping every {a.interval} s)")
    print("| variant | " + " | ".join(HOPS) + " |")
    print("|---" * (len(HOPS) + 1) + "|")
    for name, hops in res.items():
        print(f"| {name} | " + " | ".join(f"{q(hops[h], 0.5):.1f} / {q(hops[h], 0.9):.0f}" for h in HOPS) + " |")


if __name__ == "__main__":
    main()

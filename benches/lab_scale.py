#!/usr/bin/env python3
"""Overlay labs at scale (issue 26, item 2): ``Lab.lan(N, overlay=...)``
with N hosts on one bridge, each a tap plugged by our vde_plug into
``vxvde://`` (multicast on the bridge) or ``vxlan://NAME`` (NAME: every
host's address, from a dnsmasq on the bridge).

    python3 benches/lab_scale.py [--sizes 64,256] [--out benches/results/lab_scale.md]

Needs root and (for vxlan) dnsmasq. Per lab: the time ``lan()`` takes
(namespaces, bridge, addresses, dnsmasq, every vde_plug started with both
ends open), the time until every host has pinged one other (a rotation,
as tests/test_lab_scale.py), then 8 more rotations by random shifts
(each host pings 8 others; all pairs at once, n² ARP broadcasts, is a
storm this 2-core machine does not absorb), the vde_plug RSS, and the
copies of 5 broadcast frames each host took (want: 5 everywhere but at
the sender, 0 there). Prints a markdown table and writes it to --out.
"""

from __future__ import annotations

import argparse
import random
import shutil
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from test_lab_scale import OVERLAYS, K, flood_copies, rss_kib  # noqa: E402
from vdeplug.lab import Host, Lab  # noqa: E402


def ip(h: Host) -> str:
    return h.overlays["ov0"].split("/")[0]


def one_lab(n: int, kind: str) -> dict[str, str]:
    with Lab() as lab:
        start = time.monotonic()
        hosts = lab.lan(n, **OVERLAYS[kind])
        setup = time.monotonic() - start
        shift = random.randrange(1, n)
        peer = {h.name: ip(hosts[(i + shift) % n]) for i, h in enumerate(hosts)}
        start = time.monotonic()
        pings = lab.each(hosts, lambda h: ["ping", "-c1", "-i0.2", "-w60", peer[h.name]], timeout=90)
        converge = time.monotonic() - start
        first = sum(r.returncode == 0 for r in pings)
        # 8 more rotations, one after the other: each host pings 8 others at random.
        start, answered, tried = time.monotonic(), 0, 0
        for d in random.sample(range(1, n), min(8, n - 1)):
            rs = lab.each(hosts, lambda h, d=d: ["ping", "-c1", "-i0.2", "-w10", ip(hosts[(hosts.index(h) + d) % n])], timeout=30)
            answered, tried = answered + sum(r.returncode == 0 for r in rs), tried + n
        rotations = time.monotonic() - start
        rss = [rss_kib(h.plugs["ov0"].pid) for h in hosts]
        sender = random.choice(hosts)
        copies = flood_copies(lab, hosts, sender)
        others = [c for h, c in zip(hosts, copies) if h is not sender]
        print(f"{kind} {n}: up {setup:.2f} s, converged {converge:.2f} s, {answered}/{tried} pairs in {rotations:.2f} s", file=sys.stderr)
        return {
            "overlay": kind,
            "hosts": str(n),
            "setup (s)": f"{setup:.2f}",
            "converge (s)": f"{converge:.2f}",
            "rotation pings answered": f"{first}/{n}",
            "pairs answered (8 rotations)": f"{answered}/{tried} in {rotations:.1f} s",
            "vde_plug RSS (MiB, median / max)": f"{statistics.median(rss) / 1024:.1f} / {max(rss) / 1024:.1f}",
            f"copies of {K} broadcasts per other host (min..max; sender)": f"{min(others)}..{max(others)}; {copies[hosts.index(sender)]}",
        }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="64,256", help="host counts (default 64,256)")
    ap.add_argument("--out", default=str(ROOT / "benches" / "results" / "lab_scale.md"))
    args = ap.parse_args()
    kinds = [k for k in OVERLAYS if "dns" not in OVERLAYS[k] or shutil.which("dnsmasq")]
    rows = [one_lab(int(n), kind) for n in args.sizes.split(",") for kind in kinds]
    head = list(rows[0])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)] + ["| " + " | ".join(r[h] for h in head) + " |" for r in rows]
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    table = f"Overlay labs at scale (`python3 benches/lab_scale.py`, {stamp}):\n\n" + "\n".join(lines) + "\n"
    print(table)
    Path(args.out).write_text(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Same-run A/B of round-trip times: two namespaces, each a tap plugged into
an overlay by the plug under test (`CMD OVERLAY tap://t0`), pinged from one
to the other; the variants are alternated rep by rep so they share the
machine's noise. Per-packet times from ping (µs resolution), not averages.

    python3 benches/rtt_ab.py old=/path/to/old/venv/bin/vde_plug new=vde_plug C=/usr/bin/vde_plug
    python3 benches/rtt_ab.py --overlay 'udp://5000->PEER:5000' ...   # PEER: the other host
    python3 benches/rtt_ab.py nooff='VDEPLUG_TAP_OFFLOAD=0 vde_plug' new=vde_plug

Root only (namespaces). Prints p50/p90/p99 per rep and the median of reps.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import statistics
import subprocess
import time


def sh(cmd: str) -> None:
    subprocess.run(cmd, shell=True, check=True)


def one(argv: list[str], env: dict[str, str], overlay: str, count: int, interval: str) -> list[float]:
    """Round trips (µs) of `count` pings through a pair of plugs."""
    procs = [subprocess.Popen(["ip", "netns", "exec", ns, *argv, overlay.replace("PEER", f"192.168.91.{3 - x}"), "tap://t0"], env=env) for ns, x in (("la", 1), ("lb", 2))]
    try:
        for _ in range(100):
            if all(subprocess.run(["ip", "-n", ns, "link", "show", "t0"], capture_output=True).returncode == 0 for ns in ("la", "lb")):
                break
            time.sleep(0.05)
        for ns, x in (("la", 1), ("lb", 2)):
            sh(f"ip -n {ns} addr add 10.91.0.{x}/24 dev t0; ip -n {ns} link set t0 up")
        subprocess.run("ip netns exec la ping -c 5 -i 0.05 -W 1 10.91.0.2", shell=True, capture_output=True)
        out = subprocess.run(f"ip netns exec la ping -c {count} -i {interval} 10.91.0.2", shell=True, capture_output=True, text=True).stdout
        return sorted(float(x) * 1000 for x in re.findall(r"time=([0-9.]+)", out))
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--count", type=int, default=3000)
    ap.add_argument("--interval", default="0.001", help="seconds between pings (default 0.001: 1000/s)")
    ap.add_argument("--overlay", default="vxvde://239.91.91.91")
    ap.add_argument("variants", nargs="+", help="NAME=CMD (leading VAR=value words go to the environment)")
    a = ap.parse_args()
    for ns in ("la", "lb"):
        subprocess.run(["ip", "netns", "del", ns], stderr=subprocess.DEVNULL)
        sh(f"ip netns add {ns}; ip -n {ns} link set lo up")
    sh("ip link add lv0 netns la type veth peer name lv1 netns lb")
    for ns, dev, x in (("la", "lv0", 1), ("lb", "lv1", 2)):
        sh(f"ip -n {ns} addr add 192.168.91.{x}/24 dev {dev}; ip -n {ns} link set {dev} up; ip -n {ns} route add 224.0.0.0/4 dev {dev}")
    res: dict[str, list[tuple[float, float, float]]] = {}
    try:
        for r in range(a.reps):
            for v in a.variants:
                name, _, cmd = v.partition("=")
                env, argv = dict(os.environ), shlex.split(cmd)
                while argv and "=" in argv[0] and not argv[0].startswith("/"):
                    k, _, val = argv.pop(0).partition("=")
                    env[k] = val
                t = one(argv, env, a.overlay, a.count, a.interval)
                if not t:
                    raise SystemExit(f"{name}: no replies")
                q = [t[min(len(t) - 1, int(len(t) * p))] for p in (0.5, 0.9, 0.99)]
                res.setdefault(name, []).append((q[0], q[1], q[2]))
                print(f"{name:12s} rep{r} p50 {q[0]:6.0f} p90 {q[1]:6.0f} p99 {q[2]:6.0f} µs  n={len(t)}", flush=True)
    finally:
        for ns in ("la", "lb"):
            subprocess.run(["ip", "netns", "del", ns])
    for k, rows in res.items():
        print(f"{k:12s} median of reps: p50 {statistics.median(x[0] for x in rows):6.0f} p90 {statistics.median(x[1] for x in rows):6.0f} p99 {statistics.median(x[2] for x in rows):6.0f} µs")


if __name__ == "__main__":
    main()

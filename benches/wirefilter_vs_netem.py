#!/usr/bin/env python3
"""wirefilter:// against the kernel (netem; tbf for rate where the kernel
has no netem), same settings, same run, same machine; and what an idle
wirefilter costs in frames/s against the bare VNL.

    python3 benches/wirefilter_vs_netem.py [--quick] [--out table.md]

Needs root (namespaces, taps, tc). Two namespaces joined by one cable:
ours is two taps on our vde_plug with a wirefilter, the kernel's a veth
pair with the qdisc on the sending end (tests/test_wirefilter.Link).
Prints a markdown table.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "benches"))

import run as bench  # noqa: E402 (benches/run.py: the frames/s generator)
from test_wirefilter import Link, bursts, qdisc_available  # noqa: E402

Row = tuple[str, str, str, str]


def kernel_link(qdisc: str, ours: str, run: Any) -> tuple[Any, Any]:
    """`run` on our cable and on the kernel's (None where the kernel lacks the qdisc)."""
    out = []
    for kind in ("ours", "kernel"):
        if kind == "kernel" and not qdisc_available(qdisc.split()[0]):
            out.append(None)
            continue
        link = Link(kind, ours, qdisc, "")
        try:
            out.append(run(link))
        finally:
            link.close()
    return out[0], out[1]


def fmt(x: float | None, unit: str = "", digits: int = 2) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}{unit}"


def rtt_rows(quick: bool) -> list[Row]:
    n = 500 if quick else 1500
    rows: list[Row] = []
    for ours, netem, want_std, label in (
        ("delay=LR20+10/nofifo/seed=5", "netem delay 20ms 10ms", 10 / math.sqrt(3), "uniform 20±10 ms"),
        ("delay=LR20+15N/nofifo/seed=5", "netem delay 20ms 5ms distribution normal", 5.0, "normal 20 ms, σ 5"),
    ):
        # The delay is on A's sending side only (LR of our wirefilter on A's tap).
        def run(link: Link) -> tuple[float, float]:
            r = link.rtts(n, 0.002)[5:]
            return statistics.mean(r), statistics.pstdev(r)

        o, k = kernel_link(netem, ours.replace("LR", "LR"), run)
        rows.append((f"RTT mean, {label}", "20", fmt(o[0], " ms"), fmt(k and k[0], " ms")))
        rows.append((f"RTT std, {label}", f"{want_std:.2f}", fmt(o[1], " ms"), fmt(k and k[1], " ms")))
    return rows


def loss_rows(quick: bool) -> list[Row]:
    n = 20000 if quick else 50000
    rows: list[Row] = []

    def run(link: Link) -> tuple[float, float, float]:
        r = link.blast(n, 200, 2_500_000)
        seqs = list(r["seqs"])
        dups = len(seqs) - len(set(seqs))
        return 1 - len(set(seqs)) / n, statistics.mean(bursts(seqs, n) or [0]), dups / n

    o, k = kernel_link("netem loss 20%", "loss=RL20/seed=7", run)
    rows.append(("loss rate, 20 %", "20 %", fmt(o[0] * 100, " %"), fmt(k and k[0] * 100, " %")))
    rows.append(("mean loss burst, 20 %", "1.25", fmt(o[1]), fmt(k and k[1])))
    o, k = kernel_link("netem loss gemodel 8.3333% 33.3333% 100% 0%", "loss=RL20/lostburst=RL3/seed=7", run)
    rows.append(("loss rate, Gilbert 20 %, bursts 3", "20 %", fmt(o[0] * 100, " %"), fmt(k and k[0] * 100, " %")))
    rows.append(("mean loss burst, Gilbert", "3", fmt(o[1]), fmt(k and k[1])))
    o, k = kernel_link("netem duplicate 10%", "dup=RL10/seed=7", run)
    # wirefilter's dup: each further copy with p, so copies per frame are 1/(1-p); netem makes at most one.
    rows.append(("extra copies per frame, dup 10 %", "0.111 (netem 0.1)", fmt(o[2], "", 3), fmt(k and k[2], "", 3)))
    return rows


def rate_rows(quick: bool) -> list[Row]:
    rows: list[Row] = []
    kernel = "netem rate 1000kbit limit 48" if qdisc_available("netem") else "tbf rate 1000kbit burst 1600 limit 50000"

    def udp(link: Link) -> float:
        r = link.blast(400 if quick else 800, 1000, 250_000)
        seqs = list(r["seqs"])
        return (len(seqs) - 1) * 1000 / (float(r["last"]) - float(r["first"]))

    o, k = kernel_link(kernel, "bandwidth=RL125000/bufsize=RL50000", udp)
    rows.append((f"UDP goodput at 125000 B/s (kernel: {kernel.split()[0]})", f"{125000 * 1000 / 1042:.0f} B/s", fmt(o, " B/s", 0), fmt(k, " B/s", 0)))
    kernel = "netem rate 10mbit limit 100" if qdisc_available("netem") else "tbf rate 10mbit burst 1600 limit 64000"
    nbytes = 2_000_000 if quick else 5_000_000

    def tcp(link: Link) -> float:
        srv = subprocess.Popen(["ip", "netns", "exec", link.b, sys.executable, str(ROOT / "tests" / "tcp_xfer.py"), "serve", "10.9.0.2", "5201"], stdout=subprocess.PIPE, text=True)
        time.sleep(0.3)
        t0 = time.monotonic()
        subprocess.run(["ip", "netns", "exec", link.a, sys.executable, str(ROOT / "tests" / "tcp_xfer.py"), "send", "10.9.0.2", "5201", str(nbytes), "1"], check=True, capture_output=True, timeout=120)
        out, _ = srv.communicate(timeout=60)
        took = time.monotonic() - t0
        assert int(out.split()[0]) == nbytes
        return nbytes / took

    o, k = kernel_link(kernel, "bandwidth=RL1250000/bufsize=RL64000", tcp)
    rows.append((f"TCP goodput at 1.25 MB/s (kernel: {kernel.split()[0]})", "< 1250000 B/s", fmt(o, " B/s", 0), fmt(k, " B/s", 0)))
    return rows


def idle_rows(quick: bool) -> list[Row]:
    """Frames/s of our vde_plug udp->udp, bare and with an idle wirefilter, alternated."""
    gen = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target")) / "release" / "examples" / "vdeplug-bench"
    if not gen.exists():
        subprocess.run(["cargo", "build", "--release", "--quiet", "--example", "vdeplug-bench"], cwd=ROOT, check=True)
    bench.GEN = gen

    def impl(wrap: bool) -> Any:
        def make(tmp: Path, k: int) -> Any:
            base = 30000 + (os.getpid() * 8 + k * 4) % 20000
            a, g, b, s = base, base + 1, base + 2, base + 3
            first = f"udp://{a}->127.0.0.1:{g}"
            return bench.Setup([[bench.OURS, f"wirefilter://{{{first}}}" if wrap else first, f"udp://{b}->127.0.0.1:{s}"]], ["--flow", f"udp:{g}:{a}", f"udp:{s}:{b}"])

        return make

    res: dict[bool, list[float]] = {False: [], True: []}
    for k in range(2 if quick else 4):
        for wrap in (False, True):
            res[wrap].append(bench.run_one(impl(wrap), 60, 2.0 if quick else 3.0, k * 2 + wrap)["fps"])
    bare, wf = statistics.median(res[False]), statistics.median(res[True])
    return [("idle cost: 60-byte frames/s, udp bare vs wirefilter://{udp}", "≤ 10 % less", f"{wf:,.0f} vs {bare:,.0f} ({(wf / bare - 1) * 100:+.1f} %)", "")]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", type=Path)
    ap.add_argument("--only", default="rtt,loss,rate,idle")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("needs root", file=sys.stderr)
        return 1
    rows: list[Row] = []
    parts = {"rtt": rtt_rows, "loss": loss_rows, "rate": rate_rows, "idle": idle_rows}
    for name in args.only.split(","):
        rows += parts[name](args.quick)
    netem = "netem" if qdisc_available("netem") else "kernel without netem (CONFIG_NET_SCH_NETEM unset): n/a"
    lines = ["| measure | setting | ours (wirefilter://) | kernel |", "| --- | --- | --- | --- |", *(f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows), "", f"kernel reference: {netem}"]
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

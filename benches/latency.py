#!/usr/bin/env python3
"""Latency: per-packet round-trip times through every relay path users
build, ours against Debian's C (vdeplug4, vde_switch, libvdeplug) and the
kernel's own vxlan, bridge and veth as the floor, in one run.

Two hosts (network namespaces joined by a veth underlay, as in
benches/tcp_overlay.py, whose paths this reuses), each with a tap t0 on the
path under test. A UDP echo runs on host 2; a Rust probe on host 1
(benches/traffic.rs, `vdeplug-bench rtt`) sends at a fixed rate, each
datagram with a sequence number and a CLOCK_MONOTONIC send time, and keeps
every reply's round-trip time. p50/p99/p99.9 come from those samples.

    python3 benches/latency.py --quick RESULTS_DIR    # under 3 minutes
    python3 benches/latency.py RESULTS_DIR            # full run, under 10

Rates: 1, 100 and 10 000 datagrams/s (64-byte payloads). Samples per path
and rate (full; --quick in brackets): 16 (5) at 1/s, so its p99 and p99.9
are the slowest sample, 1000 (200) at 100/s, 20 000 (5000) at 10 000/s.
Full runs go in two repetitions of half the samples each, ours and C
alternated (the order reversed in the second), so both share the machine's
noise. Writes latency.json, latency.md and latency.png (matplotlib: pip
install '.[bench]') into RESULTS_DIR. Needs root, Debian's vdeplug,
vde-switch and libvdeplug-dev, and gcc (the C relay, tests/c/vdepeer.c).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import report  # benches/report.py: what a run writes
import run as bench  # benches/run.py: the C relay on libvdeplug, vde_switch
import tcp_overlay as tcp  # the two hosts and the overlay paths

ROOT = Path(__file__).resolve().parent.parent
GEN = Path(os.environ.get("CARGO_TARGET_DIR") or ROOT / "target") / "release" / "examples" / "vdeplug-bench"
PID = os.getpid()
PORT = 7777
SW = Path(f"/tmp/vdplat{PID}.sw")  # the switch's directory
PTP = Path(f"/tmp/vdplat{PID}.ptp")
BRIDGE_NS = f"vdplat{PID}br"  # the kernel bridge's namespace
RATES = (1, 100, 10000)
SAMPLES = {False: {1: 16, 100: 1000, 10000: 20000}, True: {1: 5, 100: 200, 10000: 5000}}  # by --quick


@dataclass
class Case:
    """One path between the hosts' t0: an overlay or plug pair brought up by
    tcp_overlay.bring_up (after `switch`, when one is given), or the
    kernel's bridge or bare veth."""

    family: str  # the row group: what users build
    impl: str  # ours, C or kernel
    path: tcp.Path_ | None = None
    switch: list[str] | None = None  # a switch process to start first (argv)
    kind: str = "plug"  # plug, bridge or veth
    target: str = tcp.OVER[1]

    @property
    def name(self) -> str:
        return f"{self.family} ({self.impl})"


def our_lib_env() -> dict[str, str]:
    import vdeplug

    return dict(os.environ, LD_LIBRARY_PATH=vdeplug.libdir())


def cases() -> list[Case]:
    by = {p.name: p for p in tcp.PATHS}
    out = []
    for scheme in ("vxvde", "vxlan", "udp"):
        out += [Case(f"tap↔{scheme}↔tap", "ours", by[f"ours {scheme}"]), Case(f"tap↔{scheme}↔tap", "C", by[f"C {scheme}"])]
    out += [
        Case("tap↔ptp↔tap", "ours", tcp.Path_("ours ptp", tcp.OURS, f"ptp://{PTP}")),
        Case("tap↔ptp↔tap", "C", tcp.Path_("C ptp", tcp.C_PLUG, f"ptp://{PTP}")),
        # A VM-style client: vde:// plugs (tap on the other side) on one switch.
        Case("switch + vde:// plugs", "ours", tcp.Path_("ours switch", tcp.OURS, f"vde://{SW}"), [tcp.OURS, "null://", f"switch://{SW}"]),
        Case("switch + vde:// plugs", "C", tcp.Path_("C vde_switch", tcp.C_PLUG, f"vde://{SW}"), [bench.VDE_SWITCH, "-s", str(SW)]),
        # A C program (vde_recv/vde_send relay) on our libvdeplug.so.2 or Debian's.
        Case("C relay on libvdeplug (udp)", "ours", tcp.Path_("ours lib udp", str(bench.LIB_RELAY), "udp", kind="lib", env=our_lib_env())),
        Case("C relay on libvdeplug (udp)", "C", tcp.Path_("C lib udp", str(bench.LIB_RELAY), "udp", kind="lib")),
        Case("kernel vxlan", "kernel", by["kernel vxlan"]),
        Case("kernel bridge", "kernel", kind="bridge"),
        Case("kernel veth", "kernel", kind="veth", target=tcp.UNDER[1]),
    ]
    return out


def sh(*argv: str) -> None:
    subprocess.run(argv, capture_output=True, text=True, check=True)


def bridge_up() -> None:
    """t0 in each host is a veth to a kernel bridge in a third namespace."""
    sh("ip", "netns", "add", BRIDGE_NS)
    sh("ip", "-n", BRIDGE_NS, "link", "add", "br0", "type", "bridge")
    sh("ip", "-n", BRIDGE_NS, "link", "set", "br0", "up")
    for i, n in enumerate((tcp.H1, tcp.H2)):
        sh("ip", "-n", BRIDGE_NS, "link", "add", f"p{i}", "type", "veth", "peer", "name", "t0", "netns", n)
        sh("ip", "-n", BRIDGE_NS, "link", "set", f"p{i}", "master", "br0", "up")
        sh("ip", "-n", n, "link", "set", "t0", "mtu", "1500", "up")
        sh("ip", "-n", n, "addr", "add", f"{tcp.OVER[i]}/24", "dev", "t0")


def bring_up(c: Case) -> list[subprocess.Popen]:
    procs: list[subprocess.Popen] = []
    if c.kind == "bridge":
        bridge_up()
    elif c.path is not None:
        if c.switch:
            procs.append(subprocess.Popen(c.switch, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE))
            deadline = time.monotonic() + 10
            while not (SW / "ctl").exists():
                if time.monotonic() > deadline or procs[0].poll() is not None:
                    raise RuntimeError(f"switch did not start: {c.switch}")
                time.sleep(0.02)
        procs += tcp.bring_up(c.path, settle_tries=3)
    return procs


def tear_down(c: Case, procs: list[subprocess.Popen]) -> None:
    tcp.tear_down(c.path or tcp.PATHS[0], procs)  # also removes t0 (and so the bridge's veths)
    subprocess.run(["ip", "netns", "del", BRIDGE_NS], capture_output=True)
    shutil.rmtree(SW, ignore_errors=True)
    PTP.unlink(missing_ok=True)


def probe(target: str, rate: int, count: int) -> dict:
    """One `vdeplug-bench rtt` run from host 1: the samples in µs and the losses."""
    r = subprocess.run(tcp.ns(tcp.H1, str(GEN), "rtt", f"{target}:{PORT}", "--rate", str(rate), "--count", str(count)), capture_output=True, text=True, timeout=count / rate + 30)
    if r.returncode:
        raise RuntimeError(r.stderr.strip() or f"rtt exited {r.returncode}")
    out = json.loads(r.stdout)
    return {"sent": out["sent"], "received": out["received"], "rtt_us": [ns / 1e3 for ns in out["rtt_ns"]]}


def pct(sorted_us: list[float], q: float) -> float:
    """Nearest-rank percentile of sorted samples."""
    return sorted_us[max(0, math.ceil(q * len(sorted_us)) - 1)]


def summarize(sent: int, samples: list[float]) -> dict:
    s = sorted(samples)
    if not s:
        return {"sent": sent, "received": 0}
    return {
        "sent": sent,
        "received": len(s),
        "lost": sent - len(s),
        "mean_us": statistics.fmean(s),
        **{f"p{k}_us": pct(s, q) for k, q in (("10", 0.10), ("50", 0.50), ("90", 0.90), ("99", 0.99), ("99.9", 0.999))},
        "max_us": s[-1],
    }


def measure(all_cases: list[Case], samples: dict[int, int], reps: int) -> tuple[dict, dict]:
    raw: dict[str, dict[int, list[float]]] = {}
    sent: dict[str, dict[int, int]] = {}
    failed: dict[str, str] = {}
    t0 = time.monotonic()
    for rep in range(reps):
        # Ours and C of each family back to back, the order reversed every other repetition.
        order = all_cases if rep % 2 == 0 else [c for i in range(0, len(all_cases), 2) for c in reversed(all_cases[i : i + 2])]
        for c in order:
            if c.name in failed:
                continue
            procs: list[subprocess.Popen] = []
            try:
                procs = bring_up(c)
                for rate in RATES:
                    r = probe(c.target, rate, max(1, samples[rate] // reps))
                    raw.setdefault(c.name, {}).setdefault(rate, []).extend(r["rtt_us"])
                    sent.setdefault(c.name, {}).setdefault(rate, 0)
                    sent[c.name][rate] += r["sent"]
                    s = sorted(r["rtt_us"]) or [math.nan]
                    print(f"[{time.monotonic() - t0:4.0f}s] rep {rep + 1} {c.name:38} {rate:6}/s  {r['received']:6}/{r['sent']:<6} p50 {pct(s, 0.5):7.1f}  p99 {pct(s, 0.99):7.1f} µs", file=sys.stderr)
            except (RuntimeError, subprocess.CalledProcessError, subprocess.TimeoutExpired, json.JSONDecodeError) as e:
                why = (getattr(e, "stderr", None) or str(e)).strip().splitlines()
                failed[c.name] = why[-1][:160] if why else type(e).__name__
                print(f"rep {rep + 1} {c.name:38} FAILED: {failed[c.name]}", file=sys.stderr)
            finally:
                tear_down(c, procs)
    res: dict[str, dict] = {}
    for c in all_cases:
        entry: dict = {"family": c.family, "impl": c.impl}
        if c.name in failed:
            entry["failed"] = failed[c.name]
        if c.name in raw:
            entry["rates"] = {str(rate): summarize(sent[c.name][rate], raw[c.name][rate]) for rate in raw[c.name]}
        res[c.name] = entry
    return res, {name: {str(k): v for k, v in by.items()} for name, by in raw.items()}


def fmt(us: float) -> str:
    return f"{us / 1e3:.2f} ms" if us >= 10000 else f"{us:.0f}"


def table(res: dict, samples: dict[int, int]) -> str:
    head = " | ".join(f"{r:,}/s p50 / p99 / p99.9 µs ({samples[r]} samples)".replace(",", " ") for r in RATES)
    lines = [f"| path | impl | {head} | ours p50 ÷ C (100/s) | lost |", "|---|---|" + "---|" * len(RATES) + "---|---|"]
    for name, r in res.items():
        cells = []
        for rate in RATES:
            s = r.get("rates", {}).get(str(rate))
            cells.append(f"{fmt(s['p50_us'])} / {fmt(s['p99_us'])} / {fmt(s['p99.9_us'])}" if s and s.get("received") else "—")
        if "failed" in r and "rates" not in r:
            cells = [f"fails: {r['failed']}"] + [""] * (len(RATES) - 1)
        ratio = "—"
        if r["impl"] == "ours":
            c = res.get(name.replace("(ours)", "(C)"), {}).get("rates", {}).get("100")
            o = r.get("rates", {}).get("100")
            if c and o and c.get("received") and o.get("received"):
                ratio = f"{o['p50_us'] / c['p50_us']:.2f}×"
        lost = sum(s["sent"] - s["received"] for s in r.get("rates", {}).values())
        total = sum(s["sent"] for s in r.get("rates", {}).values())
        lines.append(f"| {r['family']} | {r['impl']} | " + " | ".join(cells) + f" | {ratio} | {lost}/{total} |" if total else f"| {r['family']} | {r['impl']} | " + " | ".join(cells) + " | — | — |")
    return "\n".join(lines)


def chart(res: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    names = [n for n, r in res.items() if r.get("rates")]
    colors = {"ours": "tab:blue", "C": "tab:orange", "kernel": "tab:gray"}
    fig, axes = plt.subplots(1, len(RATES), figsize=(13, 0.42 * len(names) + 1.6), sharex=True, sharey=True)
    for ax, rate in zip(axes, RATES):
        for y, n in enumerate(names):
            s = res[n]["rates"].get(str(rate))
            if not s or not s.get("received"):
                continue
            col = colors.get(res[n]["impl"], "black")
            ax.plot([s["p50_us"], s["p99.9_us"]], [y, y], color=col, lw=1.5)
            ax.plot(s["p50_us"], y, "o", color=col, ms=5)
            ax.plot(s["p99_us"], y, "|", color=col, ms=10, mew=2)
            ax.plot(s["p99.9_us"], y, "x", color=col, ms=6)
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
        ax.set_title(f"{rate:,}/s".replace(",", " "))
        ax.set_xlabel("round trip µs (o p50, | p99, x p99.9)")
        ax.grid(axis="x", which="both", alpha=0.3)
    axes[0].set_yticks(range(len(names)), names, fontsize=8)
    axes[0].invert_yaxis()
    fig.suptitle("UDP round trip between two namespaces, per-packet samples: ours (blue), C (orange), kernel (gray)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("results", type=Path, help="folder for latency.json, latency.md, latency.png")
    ap.add_argument("--quick", action="store_true", help="fewer samples, one repetition (under 3 minutes)")
    ap.add_argument("--only", help="comma-separated path families, e.g. 'tap↔vxvde↔tap,kernel veth'")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("needs root (network namespaces)", file=sys.stderr)
        return 2
    samples, reps = SAMPLES[args.quick], 1 if args.quick else 2
    args.results.mkdir(parents=True, exist_ok=True)
    print("building the probe (cargo build --release --example vdeplug-bench)...", file=sys.stderr)
    subprocess.run(["cargo", "build", "--quiet", "--release", "--example", "vdeplug-bench"], cwd=ROOT, check=True)
    all_cases = cases()
    if args.only:
        keep = {s.strip() for s in args.only.split(",")}
        all_cases = [c for c in all_cases if c.family in keep]
    skipped = {}
    why = bench.build_lib_relay()
    if why:
        skipped["C relay on libvdeplug (udp)"] = why
    for c in list(all_cases):
        exe = c.path.plug if c.path else None
        if c.family in skipped or (c.path and c.path.kind != "kernel" and not (exe and os.path.exists(exe))) or (c.switch and not os.path.exists(c.switch[0])):
            skipped.setdefault(c.name, f"{exe or c.switch} is missing")
            all_cases.remove(c)
    t0 = time.monotonic()
    # SIGTERM (e.g. timeout(1)) unwinds through the finally below: no namespaces left behind.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    tcp.setup()
    echo = subprocess.Popen(tcp.ns(tcp.H2, str(GEN), "echo", f"0.0.0.0:{PORT}"), stderr=subprocess.PIPE)
    try:
        res, _ = measure(all_cases, samples, reps)
    finally:
        echo.kill()
        echo.wait()
        tcp.teardown()
        bench.LIB_RELAY.unlink(missing_ok=True)
    took = time.monotonic() - t0
    out = {
        "command": " ".join(["python3", "benches/latency.py", *sys.argv[1:]]),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": {"cpus": os.cpu_count(), "uname": " ".join(os.uname())},
        "seconds": round(took),
        "reps": reps,
        "samples": samples,
        "payload_bytes": 64,
        "skipped": skipped,
        "results": res,
    }
    md = table(res, samples)
    written = report.write(args.results, "latency.json", out, "latency.md", md, [("latency.png", lambda path: chart(res, path))])
    print(md)
    for k, v in skipped.items():
        print(f"skipped {k}: {v}")
    print(f"\n{took:.0f} s; results in {args.results}/ ({', '.join(written)})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

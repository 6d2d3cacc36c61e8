#!/usr/bin/env python3
"""Benchmarks: our vde_plug against Debian's C vdeplug4 (and vde_switch),
alternated in one run on the same machine, same generator.

    python3 benches/run.py --quick RESULTS_DIR     # about 4 minutes
    python3 benches/run.py RESULTS_DIR             # full run, < 15 minutes

Writes RESULTS_DIR/results.json, table.md and bench.png, and prints the
table. The generator/sink is benches/traffic.rs (Rust, batched), built here.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import report  # benches/ is this script's directory
import tcp_overlay

ROOT = Path(__file__).resolve().parent.parent
GEN = ROOT / "target" / "release" / "examples" / "vdeplug-bench"
OURS = shutil.which("vde_plug", path=str(Path(sys.executable).parent)) or "vde_plug"
C_PLUG = "/usr/bin/vde_plug"
VDE_SWITCH = shutil.which("vde_switch") or "/usr/bin/vde_switch"
NETNS = f"vdpbench{os.getpid()}"


@dataclass
class Setup:
    """Processes to start (argv lists, in order) and generator endpoint args."""

    procs: list[list[str]]
    gen: list[str]
    ready: list[Path] = field(default_factory=list)
    netns: bool = False
    env: dict[str, str] | None = None


Impl = Callable[[Path, int], Setup]


def udp_impl(exe: str) -> Impl:
    def make(tmp: Path, k: int) -> Setup:
        base = 20000 + (k * 4) % 20000
        a, g, b, s = base, base + 1, base + 2, base + 3
        return Setup(
            [[exe, f"udp://{a}->127.0.0.1:{g}", f"udp://{b}->127.0.0.1:{s}"]],
            ["--flow", f"udp:{g}:{a}", f"udp:{s}:{b}"],
        )

    return make


def ptp_impl(exe: str) -> Impl:
    def make(tmp: Path, k: int) -> Setup:
        l1, l2 = tmp / "l1", tmp / "l2"
        return Setup([[exe, f"ptp://{l1}", f"ptp://{l2}"]], ["--flow", f"ptp:{l1}", f"ptp:{l2}"], [l1, l2])

    return make


def vxvde_impl(exe: str) -> Impl:
    """generator -ptp-> relay's ptp end | relay's vxvde end -UDP-> generator's
    vxvde endpoint. This direction puts the VXLAN encapsulation and the UDP
    send (on loopback the kernel runs the receive path on the sender's CPU)
    in the relay under test, not in the generator."""

    def make(tmp: Path, k: int) -> Setup:
        l2 = tmp / "l2"
        group = f"239.77.{k % 250}.1"
        return Setup([[exe, f"vxvde://{group}", f"ptp://{l2}"]], ["--flow", f"ptp:{l2}", f"vxvde:{group}"], [l2], netns=True)

    return make


def switch_impl(argv: Callable[[Path], list[str]]) -> Impl:
    def make(tmp: Path, k: int) -> Setup:
        d = tmp / "sw"
        flows = ["--flow", f"vde:{d}", f"vde:{d}", "--flow", f"vde:{d}", f"vde:{d}"]
        return Setup([argv(d)], flows, [d / "ctl"])

    return make


# A C client on libvdeplug.so.2 (ours, via LD_LIBRARY_PATH, or Debian's):
# tests/c/vdepeer.c's relay mode, vde_recv/vde_send frame by frame as C
# vde_plug does, between the scheme under test and a ptp link.
LIB_RELAY = Path(tempfile.gettempdir()) / f"vdpbench-vdepeer-{os.getpid()}"


def lib_impl(scheme: str, ours: bool) -> Impl:
    def make(tmp: Path, k: int) -> Setup:
        l2 = tmp / "l2"
        env = dict(os.environ)
        if ours:
            import vdeplug

            env["LD_LIBRARY_PATH"] = vdeplug.libdir()
        procs, ready, netns = [], [l2], False
        if scheme == "udp":
            base = 20000 + (k * 4) % 20000
            a, g = base, base + 1
            vnl, flow = f"udp://{a}->127.0.0.1:{g}", f"udp:{g}:{a}"
        elif scheme == "ptp":
            l1 = tmp / "l1"
            vnl, flow = f"ptp://{l1}", f"ptp:{l1}"
            ready.append(l1)
        elif scheme == "vde":
            d = tmp / "sw"
            procs.append([VDE_SWITCH, "-s", str(d)])
            vnl, flow = f"vde://{d}", f"vde:{d}"
        else:
            group = f"239.78.{k % 250}.1"
            vnl, flow, netns = f"vxvde://{group}", f"vxvde:{group}", True
        procs.append([str(LIB_RELAY), vnl, "relay", f"ptp://{l2}"])
        return Setup(procs, ["--flow", flow, f"ptp:{l2}"] if scheme != "vxvde" else ["--flow", f"ptp:{l2}", flow], ready, netns, env)

    return make


def build_lib_relay() -> str | None:
    """Build the C relay against Debian's libvdeplug.h; None, or why not."""
    gcc = shutil.which("gcc")
    if gcc is None or not os.path.exists("/usr/include/libvdeplug.h"):
        return "needs gcc and libvdeplug-dev"
    r = subprocess.run([gcc, "-O2", "-o", str(LIB_RELAY), str(ROOT / "tests" / "c" / "vdepeer.c"), "-lvdeplug", "-lpthread", "-ldl"], capture_output=True, text=True)
    return r.stderr.strip() if r.returncode else None


ECHO = "import vdeplug, sys\nc = vdeplug.open(sys.argv[1])\nwhile True:\n    c.send(c.recv())\n"


def py_echo(tmp: Path, k: int) -> Setup:
    p = tmp / "echo"
    return Setup([[sys.executable, "-c", ECHO, f"ptp://{p}"]], ["--echo", f"ptp:{p}"], [p])


SCENARIOS: dict[str, dict[str, Impl]] = {
    "udp->udp": {"ours": udp_impl(OURS), "C": udp_impl(C_PLUG)},
    "ptp<->ptp": {"ours": ptp_impl(OURS), "C": ptp_impl(C_PLUG)},
    "vxvde pair": {"ours": vxvde_impl(OURS), "C": vxvde_impl(C_PLUG)},
    "switch 4 ports": {
        "ours": switch_impl(lambda d: [OURS, "null://", f"switch://{d}"]),
        "C": switch_impl(lambda d: [C_PLUG, "null://", f"switch://{d}"]),
        "vde_switch": switch_impl(lambda d: [VDE_SWITCH, "-s", str(d)]),
    },
    "python echo": {"ours": py_echo},
    **{f"lib {s}": {"ours": lib_impl(s, True), "C": lib_impl(s, False)} for s in ("udp", "ptp", "vde", "vxvde")},
}


def startup(runs: int = 15) -> dict:
    """Wall time to start (median of `runs`): a bare interpreter, our
    vde_plug failing on a missing switch and printing --version, and C
    vde_plug failing the same way."""
    py = sys.executable
    missing = str(Path(tempfile.gettempdir()) / f"vdpbench-no-switch-{os.getpid()}")
    cmds = {
        "python -c pass": [py, "-c", "pass"],
        "python -c 'import vdeplug'": [py, "-c", "import vdeplug"],
        "vde_plug --version": [OURS, "--version"],
        "vde_plug MISSING (fails)": [OURS, missing],
        "C vde_plug MISSING (fails)": [C_PLUG, missing],
    }
    out = {}
    for name, argv in cmds.items():
        if not os.path.exists(argv[0]):
            continue
        times = []
        for _ in range(runs):
            t = time.perf_counter()
            subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            times.append(time.perf_counter() - t)
        out[name] = statistics.median(times) * 1e3
    return out


def startup_table(ms: dict) -> str:
    base = ms.get("python -c pass")
    lines = ["| start-up (median wall time) | ms | × python -c pass |", "|---|---|---|"]
    for name, v in ms.items():
        ratio = f"{v / base:.1f}×" if base else "—"
        if base and name.startswith("vde_plug"):
            ratio += " (target ≤ 3× ✅)" if v <= 3 * base else " (target ≤ 3× ❌)"
        lines.append(f"| `{name}` | {v:.0f} | {ratio} |")
    return "\n".join(lines)


# --quick's TCP paths: ours, the C's and the kernel's vxvde/vxlan (the
# encrypted and vxlan/udp rows are in `benches/tcp_overlay.py`'s full run).
QUICK_TCP = ("ours vxvde", "C vxvde", "kernel vxlan")


def tcp_overlay_scenario(reps: int, seconds: float, quick: bool = False) -> dict:
    """TCP through the overlays (benches/tcp_overlay.py): iperf3 between two
    namespaces, ours vs C vde_plug vs the kernel's vxlan (vs tinc and
    wireguard-go in the full run)."""
    if os.geteuid() != 0 or not shutil.which("iperf3"):
        return {"skipped": "needs root and iperf3 (apt-get install iperf3)"}
    tcp_overlay.setup()
    try:
        paths = [p for p in tcp_overlay.PATHS if p.name in QUICK_TCP] if quick else tcp_overlay.PATHS
        return {"reps": reps, "seconds": seconds, "results": tcp_overlay.run(paths, seconds, reps)}
    finally:
        tcp_overlay.teardown()


def tcp_chart(res: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [n for n, r in res.items() if "gbps" in r]
    fig, ax = plt.subplots(figsize=(8, 3.8))
    vals = [res[n]["gbps"] for n in names]
    err = [[res[n]["gbps"] - res[n]["min"] for n in names], [res[n]["max"] - res[n]["gbps"] for n in names]]
    colors = ["tab:blue" if n.startswith("ours") else "tab:orange" if n.startswith("C") else "tab:gray" for n in names]
    ax.bar(names, vals, yerr=err, capsize=3, color=colors)
    ax.set_ylabel("TCP Gbit/s (iperf3, median, min–max)")
    ax.set_title("TCP over the overlay: vde_plug OVERLAY tap:// on two hosts")
    ax.tick_params(axis="x", labelsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def in_ns(argv: list[str], netns: bool) -> list[str]:
    return ["ip", "netns", "exec", NETNS, *argv] if netns else argv


def setup_netns() -> str | None:
    if os.geteuid() != 0:
        return "vxvde needs root for a network namespace"
    cmds = [
        ["ip", "netns", "add", NETNS],
        ["ip", "-n", NETNS, "link", "set", "lo", "up"],
        ["ip", "-n", NETNS, "link", "set", "lo", "multicast", "on"],
        ["ip", "-n", NETNS, "route", "add", "224.0.0.0/4", "dev", "lo"],
    ]
    for c in cmds:
        r = subprocess.run(c, capture_output=True, text=True)
        if r.returncode:
            return f"{' '.join(c)}: {r.stderr.strip()}"
    return None


def run_one(impl: Impl, size: int, seconds: float, k: int) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="vdpbench"))
    s = impl(tmp, k)
    procs = []
    try:
        for argv in s.procs:
            procs.append(subprocess.Popen(in_ns(argv, s.netns), stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=s.env))
            time.sleep(0.2 if len(s.procs) > 1 else 0)  # e.g. a vde_switch before its client
        deadline = time.monotonic() + 10
        while not all(p.exists() for p in s.ready):
            if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
                raise RuntimeError(f"relay did not start: {procs[0].stderr.read().decode() if procs[0].stderr else ''}")
            time.sleep(0.02)
        time.sleep(0.1)
        cmd = in_ns([str(GEN), "traffic", *s.gen, "--size", str(size), "--seconds", str(seconds), "--warmup", str(WARMUP)], s.netns)
        gen = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(WARMUP + 0.2)  # learning phase + warm-up of the generator
        cpu0, t0 = tcp_overlay.cpu_seconds(procs), time.monotonic()
        out, err = gen.communicate(timeout=seconds + 30)
        cpu1, t1 = tcp_overlay.cpu_seconds(procs), time.monotonic()
        if gen.returncode:
            raise RuntimeError(err.strip())
        r = json.loads(out)
        # The relay's share of a core while traffic ran, and so its rate per core.
        busy = max((cpu1 - cpu0) / max(t1 - t0, 1e-6), 1e-3)
        r["relay_cpu"] = busy
        r["fps_per_core"] = r["fps"] / busy
        return r
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(tmp, ignore_errors=True)


WARMUP = 0.3 + 0.5  # the generator's learning phase (~0.5 s) + warm-up


def summarize(runs: list[dict]) -> dict:
    fps = [r["fps"] for r in runs]
    med = statistics.median(fps)
    return {
        "fps": med,
        "fps_min": min(fps),
        "fps_max": max(fps),
        "spread_pct": 100 * (max(fps) - min(fps)) / med if med else 0,
        "mbps": statistics.median(r["mbps"] for r in runs),
        "lat_p50_us": statistics.median(r["lat_p50_us"] for r in runs),
        "lat_p99_us": statistics.median(r["lat_p99_us"] for r in runs),
        "relay_cpu": statistics.median(r["relay_cpu"] for r in runs),
        "fps_per_core": statistics.median(r["fps_per_core"] for r in runs),
        # Frames the relay dropped (the generator's sequence gaps): a relay
        # that drops keeps a shorter queue, so its closed-loop latency reads
        # lower; the table says so next to it.
        "lost_pct": statistics.median(100 * r.get("lost", 0) / max(r["frames"] + r.get("lost", 0), 1) for r in runs),
        "runs": runs,
    }


def fmt_lat(r: dict) -> str:
    """p50/p99 µs, and the share of frames lost when there is one."""
    lost = r.get("lost_pct", 0)
    return f"{r['lat_p50_us']:.0f}/{r['lat_p99_us']:.0f}" + (f" ({lost:.0f} % lost)" if lost >= 0.5 else "")


def fmt_rate(x: float) -> str:
    return f"{x / 1e6:.2f} M" if x >= 1e6 else f"{x / 1e3:.0f} k"


def table(results: dict, micro: dict) -> str:
    lines = [
        "| scenario | size | ours fps | C fps | ratio | ours p50/p99 µs | C p50/p99 µs | target | ours/C per relay core |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, by_size in results.items():
        for size, impls in by_size.items():
            ours = impls.get("ours")
            if not ours:
                continue
            if name == "python echo":
                c = results.get("ptp<->ptp", {}).get(size, {}).get("C")
                target, tgt_txt = 0.5, "≥ 0.5× C ptp"
            else:
                c = impls.get("C")
                target = 1.5 if (size == "64" or name.startswith("switch")) else 1.0
                tgt_txt = f"≥ {target}×"
            if not c:
                continue
            ratio = ours["fps"] / c["fps"] if c["fps"] else float("inf")
            ok = "✅" if ratio >= target else "❌"
            lat_ok = "" if name == "python echo" or ours["lat_p99_us"] <= c["lat_p99_us"] else " (p99 ❌)"
            per_core = f"{fmt_rate(ours['fps_per_core'])} / {fmt_rate(c['fps_per_core'])} = {ours['fps_per_core'] / c['fps_per_core']:.2f}×"
            lines.append(
                f"| {name} | {size} B | {fmt_rate(ours['fps'])} (±{ours['spread_pct']:.0f}%) | {fmt_rate(c['fps'])} (±{c['spread_pct']:.0f}%) "
                f"| {ratio:.2f}× | {fmt_lat(ours)} | {fmt_lat(c)} | {tgt_txt} {ok}{lat_ok} | {per_core} |"
            )
            if name.startswith("switch") and "vde_switch" in impls:
                v = impls["vde_switch"]
                lines.append(
                    f"| switch vs vde_switch | {size} B | {fmt_rate(ours['fps'])} | {fmt_rate(v['fps'])} (vde_switch) | {ours['fps'] / v['fps']:.2f}× "
                    f"| {ours['lat_p50_us']:.0f}/{ours['lat_p99_us']:.0f} | {v['lat_p50_us']:.0f}/{v['lat_p99_us']:.0f} | — "
                    f"| {ours['fps_per_core'] / v['fps_per_core']:.2f}× |"
                )
    if micro:
        lines.append("")
        lines.append(
            f"MAC table: {micro['mac_lookups_per_s_1k'] / 1e6:.1f} M lookups/s at 1 K entries, "
            f"{micro['mac_lookups_per_s_64k'] / 1e6:.1f} M at 64 K (target ≥ 20 M at 64 K: "
            f"{'✅' if micro['mac_lookups_per_s_64k'] >= 20e6 else '❌'}). VXLAN encap/decap per frame: "
            f"{micro['vxlan_encap_ns_64']:.1f}/{micro['vxlan_decap_ns_64']:.1f} ns at 64 B, "
            f"{micro['vxlan_encap_ns_1500']:.1f}/{micro['vxlan_decap_ns_1500']:.1f} ns at 1500 B."
        )
    return "\n".join(lines)


def chart(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels, series = [], {}
    impls = ["ours", "C", "vde_switch"]
    for name, by_size in results.items():
        for size, by_impl in by_size.items():
            labels.append(f"{name}\n{size} B")
            for i in impls:
                series.setdefault(i, []).append(by_impl.get(i))
    fig, ax = plt.subplots(figsize=(max(8, len(labels) * 1.1), 4.5))
    width = 0.27
    for j, i in enumerate(impls):
        xs = [k + (j - 1) * width for k in range(len(labels))]
        vals = [(v["fps"] / 1e3 if v else 0) for v in series[i]]
        lo = [((v["fps"] - v["fps_min"]) / 1e3 if v else 0) for v in series[i]]
        hi = [((v["fps_max"] - v["fps"]) / 1e3 if v else 0) for v in series[i]]
        ax.bar(xs, vals, width, yerr=[lo, hi], capsize=2, label=i)
    ax.set_xticks(range(len(labels)), labels, fontsize=8)
    ax.set_ylabel("k frames/s (median, min–max)")
    ax.set_title("vdeplug (Rust) vs vdeplug4 (C), same machine, same run")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("results", type=Path, help="folder for results.json, table.md, bench.png")
    ap.add_argument("--quick", action="store_true", help="fewer, shorter runs (about 4 minutes)")
    ap.add_argument("--only", help="comma-separated scenario names to run ('startup' for the start-up times, 'tcp overlay' for iperf3 through the overlays)")
    args = ap.parse_args()
    reps, seconds = (2, 0.8) if args.quick else (5, 3.0)
    args.results.mkdir(parents=True, exist_ok=True)

    print("building the generator (cargo build --release --example vdeplug-bench)...", file=sys.stderr)
    subprocess.run(["cargo", "build", "--quiet", "--release", "--example", "vdeplug-bench"], cwd=ROOT, check=True)
    micro = json.loads(subprocess.run([str(GEN), "micro"], capture_output=True, text=True, check=True).stdout)

    scenarios = dict(SCENARIOS)
    keep = {s.strip() for s in args.only.split(",")} if args.only else None
    if keep is not None:
        scenarios = {k: v for k, v in scenarios.items() if k in keep}
    start_ms = startup() if keep is None or "startup" in keep else {}
    tcp: dict = {}
    if keep is None or "tcp overlay" in keep:
        tcp = tcp_overlay_scenario(reps=5 if not args.quick else 1, seconds=4 if not args.quick else 2, quick=args.quick)
    skipped = {}
    if any("vxvde" in n for n in scenarios):
        why = setup_netns()
        if why:
            for n in [n for n in scenarios if "vxvde" in n]:
                skipped[n] = why
                del scenarios[n]
    if any(n.startswith("lib ") for n in scenarios):
        why = build_lib_relay()
        if why:
            for n in [n for n in scenarios if n.startswith("lib ")]:
                skipped[n] = why
                del scenarios[n]
    if not os.path.exists(C_PLUG):
        print("C vde_plug missing (apt-get install vdeplug): only our numbers", file=sys.stderr)

    jobs = []
    for name, impls in scenarios.items():
        for size in (64, 1500):
            for rep in range(reps):
                for impl in impls:  # alternate implementations inside each repetition
                    if impl != "ours" and not os.path.exists(C_PLUG):
                        continue
                    jobs.append((name, size, impl, rep))
    raw: dict = {}
    t0 = time.monotonic()
    try:
        for k, (name, size, impl, rep) in enumerate(jobs):
            try:
                r = run_one(scenarios[name][impl], size, seconds, k)
                msg = f"{fmt_rate(r['fps'])} fps"
                raw.setdefault(name, {}).setdefault(str(size), {}).setdefault(impl, []).append(r)
            except (RuntimeError, subprocess.TimeoutExpired, json.JSONDecodeError) as e:
                msg = f"FAILED: {e}"
            print(f"[{k + 1:3}/{len(jobs)} {time.monotonic() - t0:5.0f}s] {name:15} {size:5} B {impl:10} rep {rep + 1}: {msg}", file=sys.stderr)
    finally:
        subprocess.run(["ip", "netns", "del", NETNS], capture_output=True)

    results = {n: {s: {i: summarize(rs) for i, rs in by_i.items()} for s, by_i in by_s.items()} for n, by_s in raw.items()}
    out = {
        "command": " ".join(["python3", "benches/run.py", *sys.argv[1:]]),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": {"cpus": os.cpu_count(), "uname": " ".join(os.uname())},
        "reps": reps,
        "seconds": seconds,
        "skipped": skipped,
        "micro": micro,
        "startup_ms": start_ms,
        "tcp_overlay": tcp,
        "results": results,
    }
    md = table(results, micro)
    if start_ms:
        md += "\n\n" + startup_table(start_ms)
    charts: list[report.Chart] = []
    if tcp.get("results"):
        md += "\n\n" + tcp_overlay.table(tcp["results"])
        charts.append(("tcp_overlay.png", lambda path: tcp_chart(tcp["results"], path)))
    elif tcp.get("skipped"):
        md += f"\n\nTCP over overlay skipped: {tcp['skipped']}"
    if results:
        charts.append(("bench.png", lambda path: chart(results, path)))
    written = report.write(args.results, "results.json", out, "table.md", md, charts)
    print(md)
    for k, v in skipped.items():
        print(f"skipped {k}: {v}")
    print(f"\nresults in {args.results}/ ({', '.join(written)})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

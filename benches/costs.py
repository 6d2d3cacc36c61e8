#!/usr/bin/env python3
"""How costs grow: one curve per resource, ours beside the C tools where
they have the same feature, all in one run on this machine.

    python3 benches/costs.py --quick            # about a minute
    python3 benches/costs.py                    # the full run, a few minutes
    python3 benches/costs.py --only flood,mac   # some curves (flood, switch, mac, idle)
    python3 benches/costs.py --before VENV      # flood also through VENV's vde_plug (an older install)

Curves:
  flood   CPU per broadcast frame of `vde_plug vxvde://PEERS ptp://` vs the
          number of unicast peers (head-end replication), and of one copy to
          a multicast group (ours and C vde_plug). Peers sit behind a veth
          into a namespace where nothing listens (UDP segmentation offload
          off, as on a NIC without one), so the cost is the relay's.
  switch  unicast throughput between two learned ports vs connected ports,
          and the switch's memory (ours `vde_plug null:// switch://`, C vde_switch).
  mac     the MAC table at its bound (hashsize = stations, 1 K .. 1 M):
          lookups/s, learn ns, hit ratio, resident bytes.
  idle    start-up time and memory (PSS) of idle endpoints
          (`vde_plug null:// ptp://`, ours and C), 1 .. N at once.

Writes RESULTS/costs.json, costs.md and costs.png (matplotlib; without it
the tables only: pip install '.[bench]'). RESULTS defaults to benches/results.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import report  # benches/ is this script's directory
import tcp_overlay

ROOT = Path(__file__).resolve().parent.parent
TARGET = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
GEN = TARGET / "release" / "examples" / "vdeplug-bench"
OURS = shutil.which("vde_plug", path=str(Path(sys.executable).parent)) or "vde_plug"
C_PLUG = "/usr/bin/vde_plug"
VDE_SWITCH = shutil.which("vde_switch") or "/usr/bin/vde_switch"
NETNS = f"vdpcost{os.getpid()}"
SIZE = 64


def ns(*argv: str) -> list[str]:
    return ["ip", "netns", "exec", NETNS, *argv]


def wait_for(path: Path, proc: subprocess.Popen, timeout: float = 10) -> float:
    """Seconds until `path` exists (the endpoint is ready)."""
    t0 = time.monotonic()
    while not path.exists():
        if proc.poll() is not None or time.monotonic() - t0 > timeout:
            raise RuntimeError(f"{proc.args} did not start")
        time.sleep(0.002)
    return time.monotonic() - t0


def stop(*procs: subprocess.Popen) -> None:
    for p in procs:
        if p.poll() is None:
            p.terminate()
    for p in procs:
        try:
            p.wait(5)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def memory(pid: int) -> tuple[int, int]:
    """(RSS, PSS) in bytes, all of the process."""
    out = {}
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            k, _, v = line.partition(":")
            if k in ("Rss", "Pss"):
                out[k] = int(v.split()[0]) * 1024
    except OSError:
        pass
    return out.get("Rss", 0), out.get("Pss", 0)


def counters(text: str, url_part: str) -> dict[str, int]:
    """The last SIGUSR1 report of our vde_plug for the end whose URL has `url_part`."""
    lines = [ln for ln in text.splitlines() if url_part in ln and "Stats(" in ln]
    return {k: int(v) for k, v in re.findall(r"'?(\w+)'?[=:] ?(\d+)", lines[-1].split("Stats(", 1)[1])} if lines else {}


# ---------------------------------------------------------------- flood


def setup_netns() -> None:
    """Our namespace, its veth d0 (10.77.0.1/16, no ARP) into a second one
    where nothing listens: every datagram crosses the veth and is dropped
    at the far end's IP layer, the cheapest receiver there is."""
    far = NETNS + "b"
    cmds = [
        ["ip", "netns", "add", NETNS],
        ["ip", "netns", "add", far],
        ["ip", "-n", NETNS, "link", "set", "lo", "up"],
        ["ip", "-n", NETNS, "link", "add", "d0", "type", "veth", "peer", "name", "d1", "netns", far],
        ["ip", "-n", NETNS, "addr", "add", "10.77.0.1/16", "dev", "d0"],
        ["ip", "-n", NETNS, "link", "set", "d0", "arp", "off", "multicast", "on", "up"],
        ["ip", "-n", far, "link", "set", "d1", "up"],
        ["ip", "-n", NETNS, "route", "add", "224.0.0.0/4", "dev", "d0"],
    ]
    for c in cmds:
        subprocess.run(c, check=True, capture_output=True)
    # Software segmentation, as behind a NIC without UDP segmentation offload.
    subprocess.run(ns("ethtool", "-K", "d0", "tx-udp-segmentation", "off"), capture_output=True)


def teardown_netns() -> None:
    for n in (NETNS, NETNS + "b"):
        subprocess.run(["ip", "netns", "del", n], capture_output=True)


def peers(n: int) -> str:
    return ",".join(f"10.77.{1 + i // 250}.{1 + i % 250}" for i in range(n))


def flood_point(exe: str, vnl: str, seconds: float, warmup: float = 0.5) -> dict:
    """CPU the relay spends per broadcast frame it floods (schedstat: softirq
    work in its context included) while the generator keeps it busy."""
    tmp = Path(tempfile.mkdtemp(prefix="vdpcost"))
    with open(tmp / "stderr", "w+") as err:
        relay = subprocess.Popen(ns(exe, vnl, f"ptp://{tmp}/l"), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err)
        gen = None
        try:
            wait_for(tmp / "l", relay)
            argv = [str(GEN), "blast", f"ptp:{tmp}/l", "--size", str(SIZE), "--seconds", str(seconds), "--warmup", str(warmup)]
            gen = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            time.sleep(warmup + 0.05)
            c0 = tcp_overlay.run_seconds([relay.pid])
            out, gerr = gen.communicate(timeout=seconds + 30)
            c1 = tcp_overlay.run_seconds([relay.pid])
            if gen.returncode:
                raise RuntimeError(gerr.strip())
            r = json.loads(out)
            point = {"frames": r["sent"], "fps": r["fps"], "cpu_s": c1 - c0, "us_per_frame": 1e6 * (c1 - c0) / max(r["sent"], 1)}
            if exe != C_PLUG:  # C vde_plug has no counters (SIGUSR1 would end it)
                relay.send_signal(signal.SIGUSR1)
                time.sleep(0.3)
                err.seek(0)
                s = counters(err.read(), "vxvde://")
                floods = s.get("peer_floods_out", 0) + s.get("multicast_out", 0)
                point["copies_per_flood"] = s.get("flood_copies", 0) / floods if floods else None
            return point
        finally:
            stop(*[p for p in (gen, relay) if p])
            shutil.rmtree(tmp, ignore_errors=True)


def flood_curve(counts: list[int], seconds: float, reps: int, before: str | None) -> dict:
    impls = {"ours": OURS, **({"before": before} if before else {})}
    rows: dict = {"peers": {}, "multicast": {}}
    setup_netns()
    try:
        for n in counts:
            for rep in range(reps):
                for name, exe in impls.items():  # alternated inside each repetition
                    p = flood_point(exe, f"vxvde://{peers(n)}", seconds)
                    rows["peers"].setdefault(str(n), {}).setdefault(name, []).append(p)
                    log(f"flood {n:4} peers {name:7} rep {rep + 1}: {p['us_per_frame']:8.2f} µs/frame, copies/flood {p.get('copies_per_flood')}")
        mc = {**impls, **({"C": C_PLUG} if os.path.exists(C_PLUG) else {})}
        for rep in range(reps):
            for name, exe in mc.items():
                p = flood_point(exe, "vxvde://239.77.0.1", seconds)
                rows["multicast"].setdefault(name, []).append(p)
                log(f"flood multicast {name:7} rep {rep + 1}: {p['us_per_frame']:8.2f} µs/frame")
    finally:
        teardown_netns()
    med = {n: {i: med_point(ps) for i, ps in by.items()} for n, by in rows["peers"].items()}
    return {"peers": med, "multicast": {i: med_point(ps) for i, ps in rows["multicast"].items()}, "raw": rows}


def med_point(ps: list[dict]) -> dict:
    out = {k: statistics.median(p[k] for p in ps) for k in ("us_per_frame", "fps")}
    c = [p["copies_per_flood"] for p in ps if p.get("copies_per_flood") is not None]
    out["copies_per_flood"] = statistics.median(c) if c else None
    return out


# ---------------------------------------------------------------- switch


def switch_point(kind: str, ports: int, seconds: float) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="vdpcost"))
    d = tmp / "sw"
    argv = [OURS, "null://", f"switch://{d}"] if kind == "ours" else [VDE_SWITCH, "-s", str(d), "-n", str(ports + 8)]
    sw = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    hold = None
    try:
        wait_for(d / "ctl", sw)
        if ports > 2:
            hold = subprocess.Popen([str(GEN), "hold", f"vde:{d}", "--count", str(ports - 2)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            assert hold.stdout is not None
            if not hold.stdout.readline().startswith("ready"):
                raise RuntimeError("idle ports did not connect")
        time.sleep(0.2)
        rss, pss = memory(sw.pid)
        warm = 0.8
        gen = subprocess.Popen(
            [str(GEN), "traffic", "--flow", f"vde:{d}", f"vde:{d}", "--size", str(SIZE), "--seconds", str(seconds), "--warmup", str(warm)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        time.sleep(warm + 0.2)
        c0, t0 = tcp_overlay.run_seconds([sw.pid]), time.monotonic()
        out, err = gen.communicate(timeout=seconds + 30)
        c1, t1 = tcp_overlay.run_seconds([sw.pid]), time.monotonic()
        if gen.returncode:
            raise RuntimeError(err.strip())
        r = json.loads(out)
        busy = max((c1 - c0) / max(t1 - t0, 1e-6), 1e-3)
        return {"fps": r["fps"], "fps_per_core": r["fps"] / busy, "rss": rss, "pss": pss}
    finally:
        if hold:
            stop(hold)
        stop(sw)
        shutil.rmtree(tmp, ignore_errors=True)


def switch_curve(counts: list[int], seconds: float, reps: int) -> dict:
    kinds = ["ours"] + (["vde_switch"] if os.path.exists(VDE_SWITCH) else [])
    raw: dict = {}
    for n in counts:
        for rep in range(reps):
            for k in kinds:
                p = switch_point(k, n, seconds)
                raw.setdefault(str(n), {}).setdefault(k, []).append(p)
                log(f"switch {n:4} ports {k:10} rep {rep + 1}: {p['fps'] / 1e3:7.0f} k fps, {p['fps_per_core'] / 1e3:7.0f} k/core, PSS {p['pss'] / 1e6:.1f} MB")
    return {n: {k: {f: statistics.median(p[f] for p in ps) for f in ps[0]} for k, ps in by.items()} for n, by in raw.items()}


# ---------------------------------------------------------------- MAC table


def mac_curve(sizes: list[int]) -> list[dict]:
    out = subprocess.run([str(GEN), "mac-curve", *map(str, sizes)], capture_output=True, text=True, check=True).stdout
    rows = [json.loads(ln) for ln in out.splitlines() if ln.startswith("{")]
    for r in rows:
        log(f"mac {r['stations']:8} stations: {r['lookups_per_s'] / 1e6:6.1f} M lookups/s, hit {r['hit_ratio']:.3f}, {r['bytes_switch'] / r['stations']:.1f} B/station")
    return rows


# ---------------------------------------------------------------- idle endpoints


def idle_curve(counts: list[int]) -> dict:
    impls = {"ours": OURS, **({"C": C_PLUG} if os.path.exists(C_PLUG) else {})}
    res: dict = {}
    for n in counts:
        for name, exe in impls.items():
            tmp = Path(tempfile.mkdtemp(prefix="vdpcost"))
            procs, starts = [], []
            try:
                for i in range(n):
                    p = subprocess.Popen([exe, "null://", f"ptp://{tmp}/p{i}"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                    procs.append(p)
                    starts.append(wait_for(tmp / f"p{i}", p))
                time.sleep(0.5)
                mem = [memory(p.pid) for p in procs]
                res.setdefault(str(n), {})[name] = {
                    "startup_ms": 1e3 * statistics.median(starts),
                    "rss_each": statistics.median(m[0] for m in mem),
                    "pss_total": sum(m[1] for m in mem),
                }
                r = res[str(n)][name]
                log(f"idle {n:3} x {name:4}: start {r['startup_ms']:.0f} ms, RSS {r['rss_each'] / 1e6:.1f} MB each, PSS {r['pss_total'] / 1e6:.1f} MB total")
            finally:
                stop(*procs)
                shutil.rmtree(tmp, ignore_errors=True)
    return res


# ---------------------------------------------------------------- readings


def fit(xs: list[float], ys: list[float]) -> tuple[float, float]:
    """Least squares y = a + b x."""
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    b = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx if sxx else 0.0
    return my - b * mx, b


def exponent(xs: list[float], ys: list[float]) -> float:
    """Growth exponent between the two largest points after subtracting the
    fixed cost (1: linear; above ~1.2: worse than linear)."""
    a, _ = fit(xs, ys)
    (x1, y1), (x2, y2) = sorted(zip(xs, ys))[-2:]
    y1, y2 = max(y1 - a, 1e-9), max(y2 - a, 1e-9)
    return math.log(y2 / y1) / math.log(x2 / x1) if x2 > x1 else 1.0


def size_text(n: int) -> str:
    return f"{n >> 20} M" if n >= 1 << 20 else f"{n >> 10} K"


def readings(res: dict) -> list[tuple[str, str, str, str]]:
    """(curve, what grows linearly, what stays flat, knee) rows."""
    rows = []
    fl = res.get("flood")
    if fl and fl["peers"]:
        ns_ = sorted(int(n) for n in fl["peers"])
        for impl in [i for i in ("before", "ours") if i in fl["peers"][str(ns_[0])]]:
            ys = [fl["peers"][str(n)][impl]["us_per_frame"] for n in ns_]
            a, b = fit([float(n) for n in ns_], ys)
            e = exponent([float(n) for n in ns_], ys)
            a = max(a, 0.0)
            knee = f"N ≈ {max(a / b, 1):.0f}: beyond it the copies cost more than the frame" if b > 0 else "none"
            mc = fl["multicast"].get(impl if impl in fl["multicast"] else "ours", {}).get("us_per_frame")
            rows.append(
                (
                    f"flood to N peers ({impl})",
                    f"{b * 1e3:.0f} ns per peer per frame (growth exponent {e:.2f})",
                    f"{a:.1f} µs per frame whatever N; one multicast copy {mc:.1f} µs" if mc else f"{a:.1f} µs per frame whatever N",
                    knee,
                )
            )
    sw = res.get("switch")
    if sw:
        ports = sorted(int(n) for n in sw)
        for k in [k for k in ("ours", "vde_switch") if k in sw[str(ports[0])]]:
            fps = [sw[str(n)][k]["fps_per_core"] for n in ports]
            pss = [sw[str(n)][k]["pss"] for n in ports]
            _, per_port = fit([float(n) for n in ports], [float(p) for p in pss])
            # CPU per forwarded frame against ports: the slope is what each idle port costs every frame.
            _, ns_port = fit([float(n) for n in ports], [1e9 / f for f in fps])
            drop = next((n for n, f in zip(ports, fps) if f < 0.75 * fps[0]), None)
            grows = f"memory {per_port / 1e3:.1f} kB per port" + (f"; CPU {ns_port:.0f} ns per frame per connected port" if ns_port > 5 else "")
            rows.append(
                (
                    f"switch, unicast vs ports ({k})",
                    grows,
                    f"{fps[0] / 1e3:.0f} k frames/s per core at 2 ports, {fps[-1] / 1e3:.0f} k at {ports[-1]}",
                    f"none up to {ports[-1]}" if drop is None else f"{drop} ports (below 75 % of the 2-port rate)",
                )
            )
    mac = res.get("mac")
    if mac:
        first = mac[0]["lookups_per_s"]
        knee = next((r["stations"] for r in mac if r["lookups_per_s"] < 0.5 * first), None)
        per = statistics.median(r["bytes_switch"] / r["stations"] for r in mac if r["stations"] >= 1 << 14)
        per_ov = statistics.median(r["bytes_overlay"] / r["stations"] for r in mac if r["stations"] >= 1 << 14)
        rows.append(
            (
                "MAC table, stations",
                f"memory {per:.0f} B per station (switch), {per_ov:.0f} B (overlay peers); forgetting a port/peer {mac[-1]['forget_us'] / mac[-1]['stations'] * 1e3:.1f} ns per slot",
                f"one bucket per lookup: {mac[-1]['lookups_per_s'] / 1e6:.0f}–{first / 1e6:.0f} M lookups/s; holds {min(r['hit_ratio'] for r in mac):.0%}+ at the bound",
                f"{size_text(knee)} stations ({knee * 16 >> 20} MB: the table leaves the caches, half the 1 K rate)" if knee else "none (within 2× of 1 K)",
            )
        )
    idle = res.get("idle")
    if idle:
        counts = sorted(int(n) for n in idle)
        for impl in [i for i in ("ours", "C") if i in idle[str(counts[0])]]:
            tot = [idle[str(n)][impl]["pss_total"] for n in counts]
            _, each = fit([float(n) for n in counts], [float(t) for t in tot])
            rows.append(
                (
                    f"idle endpoints ({impl})",
                    f"memory {each / 1e6:.2f} MB PSS per endpoint",
                    f"start-up {statistics.median(idle[str(n)][impl]['startup_ms'] for n in counts):.0f} ms each; no CPU while idle",
                    "none",
                )
            )
    return rows


def markdown(res: dict) -> str:
    out = ["| curve | grows linearly | stays flat | knee |", "|---|---|---|---|"]
    out += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in readings(res)]
    fl = res.get("flood")
    if fl and fl["peers"]:
        impls = [i for i in ("before", "ours") if i in next(iter(fl["peers"].values()))]
        out += ["", "Flood, CPU µs per 64-byte broadcast frame (copies per flood from the counters):", ""]
        out += ["| peers | " + " | ".join(impls) + (" | before/ours |" if len(impls) > 1 else " |"), "|---|" + "---|" * (len(impls) + (len(impls) > 1))]
        for n in sorted(fl["peers"], key=int):
            r = fl["peers"][n]
            cells = [f"{r[i]['us_per_frame']:.2f} (×{r[i]['copies_per_flood'] or 0:.0f})" for i in impls]
            ratio = f" | {r['before']['us_per_frame'] / r['ours']['us_per_frame']:.2f}×" if len(impls) > 1 else ""
            out.append(f"| {n} | " + " | ".join(cells) + ratio + " |")
        mc = fl["multicast"]
        out.append("| multicast | " + " | ".join(f"{mc[i]['us_per_frame']:.2f}" for i in impls if i in mc) + (" | |" if len(impls) > 1 else " |"))
        if "C" in mc:
            out.append(f"\nC vde_plug, multicast: {mc['C']['us_per_frame']:.2f} µs per frame (Debian's vxvde has no unicast peers).")
    sw = res.get("switch")
    if sw:
        kinds = list(next(iter(sw.values())))
        out += ["", "Switch, unicast between two learned ports, 64 B (k frames/s per switch core; PSS MB):", ""]
        out += ["| ports | " + " | ".join(f"{k} k/core | {k} PSS" for k in kinds) + " |", "|---|" + "---|---|" * len(kinds)]
        for n in sorted(sw, key=int):
            out.append(f"| {n} | " + " | ".join(f"{sw[n][k]['fps_per_core'] / 1e3:.0f} | {sw[n][k]['pss'] / 1e6:.1f}" for k in kinds) + " |")
    mac = res.get("mac")
    if mac:
        out += [
            "",
            "MAC table at its bound (hashsize = stations; forget: one port or peer's MACs, a whole-table scan):",
            "",
            "| stations | M lookups/s | learn ns | held | forget µs | bytes/station (switch, overlay) |",
            "|---|---|---|---|---|---|",
        ]
        for r in mac:
            out.append(
                f"| {r['stations']:,} | {r['lookups_per_s'] / 1e6:.1f} | {r['learn_ns']:.0f} | {r['hit_ratio']:.1%} | {r['forget_us']:.0f} "
                f"| {r['bytes_switch'] / r['stations']:.0f}, {r['bytes_overlay'] / r['stations']:.0f} |"
            )
    idle = res.get("idle")
    if idle:
        impls = list(next(iter(idle.values())))
        out += ["", "Idle endpoints (`vde_plug null:// ptp://`), start-up ms (median) and PSS MB in total:", ""]
        out += ["| endpoints | " + " | ".join(f"{i} start | {i} PSS" for i in impls) + " |", "|---|" + "---|---|" * len(impls)]
        for n in sorted(idle, key=int):
            out.append(f"| {n} | " + " | ".join(f"{idle[n][i]['startup_ms']:.0f} | {idle[n][i]['pss_total'] / 1e6:.1f}" for i in impls) + " |")
    return "\n".join(out)


def chart(res: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axs = plt.subplots(2, 2, figsize=(11, 7.5))
    fl = res.get("flood")
    ax = axs[0][0]
    if fl and fl["peers"]:
        ns_ = sorted(int(n) for n in fl["peers"])
        color = {"ours": "tab:blue", "before": "tab:orange", "C": "tab:gray"}
        for impl in next(iter(fl["peers"].values())):
            ax.plot(ns_, [fl["peers"][str(n)][impl]["us_per_frame"] for n in ns_], "o-", color=color[impl], label=f"{impl}: N unicast peers")
        for impl, r in fl["multicast"].items():
            ax.axhline(r["us_per_frame"], ls="--", lw=1, color=color[impl], label=f"{impl}: multicast (one copy)")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.legend(fontsize=7)
    ax.set(title="flood: CPU per broadcast frame", xlabel="peers", ylabel="µs per frame")
    sw = res.get("switch")
    ax = axs[0][1]
    if sw:
        ports = sorted(int(n) for n in sw)
        color = {"ours": "tab:blue", "vde_switch": "tab:orange"}
        for k in next(iter(sw.values())):
            ax.plot(ports, [sw[str(n)][k]["fps_per_core"] / 1e3 for n in ports], "o-", color=color[k], label=f"{k} k frames/s per core")
        ax2 = ax.twinx()
        for k in next(iter(sw.values())):
            ax2.plot(ports, [sw[str(n)][k]["pss"] / 1e6 for n in ports], "x:", color=color[k], label=f"{k} PSS MB")
        ax2.set_ylabel("PSS MB")
        ax2.legend(fontsize=7, loc="center right")
        ax.set_xscale("log", base=2)
        ax.legend(fontsize=7, loc="lower left")
    ax.set(title="switch: unicast throughput vs connected ports", xlabel="ports", ylabel="k frames/s per switch core")
    mac = res.get("mac")
    ax = axs[1][0]
    if mac:
        xs = [r["stations"] for r in mac]
        ax.plot(xs, [r["lookups_per_s"] / 1e6 for r in mac], "o-", label="M lookups/s")
        ax2 = ax.twinx()
        ax2.plot(xs, [r["bytes_switch"] / 1e6 for r in mac], "x:", color="tab:red", label="MB (switch)")
        ax2.plot(xs, [r["bytes_overlay"] / 1e6 for r in mac], "x:", color="tab:orange", label="MB (overlay)")
        ax2.set_yscale("log")
        ax2.set_ylabel("resident MB")
        ax2.legend(fontsize=7, loc="center right")
        ax.set_xscale("log", base=2)
        ax.legend(fontsize=7, loc="lower left")
    ax.set(title="MAC table at its bound", xlabel="stations", ylabel="M lookups/s")
    idle = res.get("idle")
    ax = axs[1][1]
    if idle:
        counts = sorted(int(n) for n in idle)
        for i in next(iter(idle.values())):
            ax.plot(counts, [idle[str(n)][i]["pss_total"] / 1e6 for n in counts], "o-", label=f"{i}: PSS MB total")
        ax.legend(fontsize=7)
    ax.set(title="idle endpoints: memory", xlabel="endpoints", ylabel="PSS MB")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def log(msg: str) -> None:
    print(f"[{time.monotonic() - T0:5.0f}s] {msg}", file=sys.stderr, flush=True)


T0 = time.monotonic()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("results", type=Path, nargs="?", default=ROOT / "benches" / "results", help="folder for costs.json, costs.md, costs.png")
    ap.add_argument("--quick", action="store_true", help="fewer points, shorter runs (about a minute)")
    ap.add_argument("--only", help="comma-separated curves: flood, switch, mac, idle")
    ap.add_argument("--before", help="a venv with an older install: the flood curve through its vde_plug too")
    args = ap.parse_args()
    keep = {s.strip() for s in args.only.split(",")} if args.only else {"flood", "switch", "mac", "idle"}
    if os.geteuid() != 0 and keep & {"flood"}:
        print("the flood curve needs root (a network namespace): skipped", file=sys.stderr)
        keep.discard("flood")
    before = str(Path(args.before) / "bin" / "vde_plug") if args.before else None
    q = args.quick
    log("building the generator (cargo build --release --example vdeplug-bench)...")
    subprocess.run(["cargo", "build", "--quiet", "--release", "--example", "vdeplug-bench"], cwd=ROOT, check=True)
    res: dict = {
        "command": " ".join(["python3", "benches/costs.py", *sys.argv[1:]]),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": {"cpus": os.cpu_count(), "uname": " ".join(os.uname())},
    }
    if "mac" in keep:
        res["mac"] = mac_curve([1 << 10, 1 << 14, 1 << 17, 1 << 20] if q else [1 << k for k in range(10, 21, 2)])
    if "flood" in keep:
        res["flood"] = flood_curve([1, 16, 256] if q else [1, 4, 16, 64, 128, 256], 1.0 if q else 2.0, 1 if q else 3, before)
    if "switch" in keep:
        res["switch"] = switch_curve([2, 32, 512] if q else [2, 8, 32, 128, 512], 1.0 if q else 2.0, 1 if q else 2)
    if "idle" in keep:
        res["idle"] = idle_curve([1, 8] if q else [1, 4, 16])
    md = f"`{res['command']}` ({res['date']}, {os.cpu_count()} CPUs)\n\n" + markdown(res) + "\n"
    written = report.write(args.results, "costs.json", res, "costs.md", md, [("costs.png", lambda path: chart(res, path))])
    print(md)
    log(f"results in {args.results}/ ({', '.join(written)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

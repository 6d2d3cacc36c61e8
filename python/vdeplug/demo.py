"""``vde_plug --demo``: vdeplug doing its job in a few seconds, with no
arguments to invent. A private switch with two ports plugged in; frames
cross both ways (broadcast, then unicast once the switch has learned);
a burst with live counters. Where network namespaces can be built (root,
or unprivileged user namespaces), two hosts on a ``vxvde://`` overlay ping
each other. Everything lives in a private directory and namespaces that
are removed at the end."""

from __future__ import annotations

import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time

from .connection import Connection
from .connection import open as vde_open

BURST = 4000
SLICE = 16  # frames in flight each way: a switch has no flow control
ETHERTYPE = b"\x88\xb5"  # IEEE local experimental


def mac(n: int) -> bytes:
    return bytes([0x02, 0x76, 0x64, 0x65, 0, n])  # locally administered


def frame(dst: bytes, src: bytes, size: int, seq: int = 0) -> bytes:
    body = seq.to_bytes(4, "big") + bytes(size - 18)
    return dst + src + ETHERTYPE + body


def recv_frames(c: Connection, want: int, timeout: float = 2) -> list[bytes]:
    got: list[bytes] = []
    deadline = time.monotonic() + timeout
    while len(got) < want and time.monotonic() < deadline:
        try:
            batch = c.recv_many(256, timeout=max(0.0, deadline - time.monotonic()))
        except TimeoutError:
            break
        got += [f for f in batch or () if f[12:14] == ETHERTYPE]
    return got


def say(line: str) -> None:
    print(line, flush=True)


def switch_part(tmp: str) -> bool:
    sw = os.path.join(tmp, "sw")
    # The switch runs as `vde_plug null:// switch://DIR`, the way users start one.
    switch = subprocess.Popen([sys.executable, "-m", "vdeplug", "null://", f"switch://{sw}"], stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 5
        while not os.path.exists(os.path.join(sw, "ctl")):
            if switch.poll() is not None or time.monotonic() > deadline:
                say("  the switch did not start")
                return False
            time.sleep(0.02)
        with vde_open(f"vde://{sw}") as a, vde_open(f"vde://{sw}") as b, vde_open(f"vde://{sw}") as c:
            say(f"  switch://{sw}      a learning switch (vde_plug null:// switch://…)")
            say(f"  vde://{sw}  x3     ports a, b and c, plugged in")
            a.send(frame(b"\xff" * 6, mac(1), 60))
            seen_b, seen_c = recv_frames(b, 1), recv_frames(c, 1)
            say(f"  a -> everyone  broadcast, 60 bytes    b got it: {yes(seen_b)}, c got it: {yes(seen_c)}")
            b.send(frame(mac(1), mac(2), 1514))
            seen_a, leaked = recv_frames(a, 1), recv_frames(c, 1, timeout=0.2)
            say(f"  b -> a         unicast, 1514 bytes    a got it: {yes(seen_a)}; c did not (the switch learned where a is): {yes(not leaked)}")
            return bool(seen_b and seen_c and seen_a and not leaked) & burst(a, b)
    finally:
        switch.terminate()
        switch.wait(5)


def yes(x: object) -> str:
    return "yes" if x else "NO"


def burst(a: Connection, b: Connection) -> bool:
    """BURST frames each way, sent in slices while counting what crossed."""
    live = sys.stdout.isatty()
    got = {"a": 0, "b": 0}
    start = time.monotonic()
    shown = 0.0
    for k in range(0, BURST, SLICE):
        a.send_many([frame(mac(2), mac(1), 1000, k + i) for i in range(SLICE)])
        b.send_many([frame(mac(1), mac(2), 1000, k + i) for i in range(SLICE)])
        got["b"] += len(recv_frames(b, SLICE, timeout=1))
        got["a"] += len(recv_frames(a, SLICE, timeout=1))
        if live and time.monotonic() - shown > 0.05:
            shown = time.monotonic()
            print(f"\r  a <-> b        {k + SLICE:5} frames each way sent, crossed: to b {got['b']:5}, to a {got['a']:5}", end="", flush=True)
    took = time.monotonic() - start
    print("\r" if live else "", end="")
    ok = got["a"] == got["b"] == BURST
    say(f"  a <-> b        {BURST} frames of 1000 bytes each way in {took:.2f} s: {got['b']}/{BURST} reached b, {got['a']}/{BURST} reached a")
    sa, sb = a.stats, b.stats
    say(f"  counters       a: {sa.frames_out} out, {sa.frames_in} in, {sa.drops_out} dropped; b: {sb.frames_out} out, {sb.frames_in} in, {sb.drops_out} dropped")
    return ok


def overlay_part() -> bool | None:
    """Two namespaces on vxvde://, pinging; None when they cannot be built here."""
    from .lab import Lab, LabError, can_build

    why = can_build()
    if why is None and shutil.which("ping") is None:
        why = "ping is not installed"
    if why:
        say(f"  (skipped: two hosts pinging over a vxvde:// overlay, as this {why})")
        return None
    r = random.Random()
    group = f"239.{r.randrange(1, 255)}.{r.randrange(1, 255)}.{r.randrange(1, 255)}"
    port = r.randrange(20000, 30000)
    url = f"vxvde://{group}/port={port}"
    spec = {"hosts": {"a": {"plug": url, "ip": "10.213.0.1/24"}, "b": {"plug": url, "ip": "10.213.0.2/24"}}}
    try:
        with Lab(spec) as lab:
            say(f"  hosts a and b: network namespaces, each with eth0 plugged into {url}")
            out = lab.hosts["a"].run("ping", "-c", "3", "-i", "0.2", "-W", "1", "10.213.0.2", check=False)
    except LabError as e:
        say(f"  the lab failed: {e}")
        return False
    m = re.search(r"(\d+) received", out.stdout)
    rtt = re.search(r"= [\d.]+/([\d.]+)/", out.stdout)
    replies = int(m.group(1)) if m else 0
    say(f"  a pings b      {replies}/3 replies" + (f", {rtt.group(1)} ms on average" if rtt else "") + " (namespaces removed)")
    return replies > 0


def main() -> int:
    tmp = tempfile.mkdtemp(prefix="vdeplug-demo-")
    try:
        say("vdeplug demo: a private virtual LAN (removed at the end)")
        ok = switch_part(tmp)
        over = overlay_part()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    ok = ok and over is not False
    say("all crossed: vdeplug works here." if ok else "something did not cross: see above.")
    say("next: `vde_plug --help`, `man vde_plug`, README.md (labs, overlays, encryption).")
    return 0 if ok else 1

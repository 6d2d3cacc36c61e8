"""A tiny Linux guest for tests that need kernel features this machine's
kernel lacks (802.1Q VLAN interfaces): Debian's kernel and busybox, booted
by qemu with a generated initramfs whose /init runs a test script and
prints its output on the serial console. Its NIC is an e1000 plugged into
a VDE switch (``-nic vde,sock=...``), so the guest is just another host on
one of our switches.

The two Debian packages are fetched with ``apt-get download`` into
``$VDEPLUG_GUEST_CACHE`` (default ``~/.cache/vdeplug-guest``) once."""

from __future__ import annotations

import glob
import gzip
import io
import os
import re
import shutil
import subprocess
from pathlib import Path

CACHE = Path(os.environ.get("VDEPLUG_GUEST_CACHE", Path.home() / ".cache" / "vdeplug-guest"))
PACKAGES = ("linux-image-amd64", "busybox-static")
MODULES = ("e1000", "8021q")
APPLETS = ("sh", "ip", "ping", "insmod", "mount", "poweroff", "sleep", "cat", "ifconfig", "vconfig", "echo")
QEMU = "qemu-system-x86_64"


def why_not() -> str | None:
    """None if a guest can be booted here, else why not."""
    if shutil.which(QEMU) is None:
        return "qemu-system-x86_64 is not installed"
    try:
        fetch()
    except (OSError, subprocess.SubprocessError) as e:
        return f"cannot fetch the guest's Debian packages: {e}"
    return None


def fetch() -> Path:
    """The unpacked packages (downloaded and unpacked once)."""
    root = CACHE / "root"
    if (root / "done").exists():
        return root
    CACHE.mkdir(parents=True, exist_ok=True)
    debs = CACHE / "debs"
    debs.mkdir(exist_ok=True)
    # linux-image-amd64 is a metapackage: download what it depends on.
    dep = subprocess.run(["apt-cache", "depends", PACKAGES[0]], capture_output=True, text=True, check=True).stdout
    image = re.search(r"Depends: (linux-image-[0-9][^\s]*)", dep)
    if not image:
        raise OSError(f"no kernel package behind {PACKAGES[0]}")
    for pkg in (image.group(1), PACKAGES[1]):
        if not glob.glob(str(debs / f"{pkg}_*.deb")):
            subprocess.run(["apt-get", "download", "-q", pkg], cwd=debs, check=True, capture_output=True, timeout=600)
    tmp = CACHE / "root.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    for deb in debs.glob("*.deb"):
        subprocess.run(["dpkg-deb", "-x", str(deb), str(tmp)], check=True)
    (tmp / "done").write_text("")
    shutil.rmtree(root, ignore_errors=True)
    tmp.rename(root)
    return root


def kernel() -> Path:
    return Path(sorted(glob.glob(str(fetch() / "boot" / "vmlinuz-*")))[-1])


def _module_files(root: Path) -> list[Path]:
    """MODULES and what they depend on, dependencies first."""
    index = {p.name.split(".ko")[0]: p for p in root.glob("lib/modules/*/kernel/**/*.ko")}
    order: list[Path] = []

    def add(name: str) -> None:
        path = index[name.replace("-", "_")] if name.replace("-", "_") in index else index[name]
        if path in order:
            return
        m = re.search(rb"depends=([^\0]*)", path.read_bytes())
        for d in m.group(1).decode().split(",") if m and m.group(1) else []:
            add(d)
        order.append(path)

    for name in MODULES:
        add(name)
    return order


CONSOLE = (5, 1)  # /dev/console's device number


def _cpio(entries: list[tuple[str, int, bytes]]) -> bytes:
    """A newc cpio archive of (name, mode, data); character devices are /dev/console."""
    out = io.BytesIO()
    for ino, (name, mode, data) in enumerate([*entries, ("TRAILER!!!", 0, b"")], start=1):
        nb = name.encode() + b"\0"
        rdev = CONSOLE if mode & 0o170000 == 0o020000 else (0, 0)
        fields = [ino, mode, 0, 0, 1, 0, len(data), 0, 0, *rdev, len(nb), 0]
        out.write(b"070701" + b"".join(b"%08x" % f for f in fields) + nb)
        out.write(b"\0" * (-(110 + len(nb)) % 4))
        out.write(data + b"\0" * (-len(data) % 4))
    return out.getvalue()


def initramfs(script: str, dest: Path) -> Path:
    """An initramfs whose /init loads the NIC and VLAN modules, runs
    ``script`` (busybox sh) and powers off."""
    root = fetch()
    init = "\n".join(
        [
            "#!/bin/sh",
            "mount -t proc proc /proc; mount -t sysfs sys /sys",
            *[f"insmod /lib/{p.name}" for p in _module_files(root)],
            "ip link set lo up",
            script,
            "echo GUEST-DONE",
            "poweroff -f",
        ]
    )
    entries: list[tuple[str, int, bytes]] = [(d, 0o40755, b"") for d in ("bin", "lib", "proc", "sys", "dev")]
    entries.append(("bin/busybox", 0o100755, (root / "bin" / "busybox").read_bytes()))
    entries += [(f"bin/{a}", 0o120777, b"busybox") for a in APPLETS]
    entries += [(f"lib/{p.name}", 0o100644, p.read_bytes()) for p in _module_files(root)]
    entries.append(("init", 0o100755, init.encode()))
    entries.append(("dev/console", 0o20600, b""))
    dest.write_bytes(gzip.compress(_cpio(entries), compresslevel=1))
    return dest


def boot(script: str, workdir: Path, nic: str, timeout: float = 120) -> subprocess.Popen[str]:
    """Start the guest under software emulation (about 6 s to boot here;
    this machine's /dev/kvm hangs nested guests); its console is the
    returned process's stdout. ``nic`` is a qemu -nic value."""
    initrd = initramfs(script, workdir / "initrd.gz")
    cmd = [
        QEMU,
        "-accel",
        "tcg",
        "-m",
        "256",
        "-nodefaults",
        "-no-reboot",
        "-display",
        "none",
        "-serial",
        "stdio",
        "-kernel",
        str(kernel()),
        "-initrd",
        str(initrd),
        "-append",
        "console=ttyS0 panic=-1 quiet loglevel=3",
        "-nic",
        nic,
    ]
    return subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

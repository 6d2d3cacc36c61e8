"""The PEP 517 build backend of vdeplug: maturin, after building the C face.

maturin builds one extension per wheel (the PyO3 module ``vdeplug._core``);
the C libraries qemu and C plugins load, ``libvdeplug.so.2`` and
``libvdeplug_mod.so.2`` (rust/libvdeplug*, no Python inside), are built here
with cargo and copied, with their headers, into ``python/vdeplug/lib/``,
which maturin then packs with the rest of the package; so is
``vdeplug/lib/vde_plug`` (rust/login_shell), the native entry point a login
shell needs. Everything else is maturin's own hook.

A wheel for PyPI (one abi3 wheel, manylinux_2_28: RHEL 8, Debian 11,
Ubuntu 20.04 and later): ``VDEPLUG_MANYLINUX=2_28 pip wheel . --no-deps``.
All three libraries are then linked with zig against glibc 2.28
(cargo-zigbuild for the C libraries, ``maturin --zig`` for the extension),
which this backend adds to the build requirements.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from typing import Any

import maturin
from maturin import (  # noqa: F401  (the hooks pip calls, as maturin's)
    build_sdist,
    get_requires_for_build_sdist,
    prepare_metadata_for_build_wheel,
)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LIBS = {"libvdeplug": "libvdeplug.so.2", "libvdeplug_mod": "libvdeplug_mod.so.2"}


TRIPLE = "x86_64-unknown-linux-gnu"


def manylinux() -> str | None:
    """The glibc version asked for (``VDEPLUG_MANYLINUX=2_28``), or None."""
    v = os.environ.get("VDEPLUG_MANYLINUX", "").strip()
    if v and not all(p.isdigit() for p in v.split("_")):
        raise RuntimeError(f"VDEPLUG_MANYLINUX={v!r}: expected a glibc version such as 2_28")
    return v or None


def build_clibs() -> str:
    """cargo build the C libraries; copy them (with their SONAME as file
    name) and the headers into python/vdeplug/lib. Returns that directory."""
    # By manifest path, not -p: maturin's sdist drops the [workspace] table.
    target = os.environ.get("CARGO_TARGET_DIR") or os.path.join(ROOT, "target")
    env = dict(os.environ, CARGO_TARGET_DIR=target)
    glibc = manylinux()
    build = ["cargo", "zigbuild", "--target", f"{TRIPLE}.{glibc.replace('_', '.')}"] if glibc else ["cargo", "build"]
    out = os.path.join(target, TRIPLE, "release") if glibc else os.path.join(target, "release")
    for crate in LIBS:
        manifest = os.path.join(ROOT, "rust", crate, "Cargo.toml")
        subprocess.run([*build, "--release", "--manifest-path", manifest], cwd=ROOT, env=env, check=True)
    dest = os.path.join(ROOT, "python", "vdeplug", "lib")
    os.makedirs(dest, exist_ok=True)
    for crate, soname in LIBS.items():
        shutil.copyfile(os.path.join(out, f"{crate}.so"), os.path.join(dest, soname))
        os.chmod(os.path.join(dest, soname), 0o755)
    # vde_plug as a login shell: a native entry point that sees argv[0].
    subprocess.run([*build, "--release", "--manifest-path", os.path.join(ROOT, "rust", "login_shell", "Cargo.toml")], cwd=ROOT, env=env, check=True)
    shutil.copyfile(os.path.join(out, "vde_plug"), os.path.join(dest, "vde_plug"))
    os.chmod(os.path.join(dest, "vde_plug"), 0o755)
    include = os.path.join(ROOT, "rust", "include")
    for header in os.listdir(include):
        shutil.copyfile(os.path.join(include, header), os.path.join(dest, header))
    return dest


def get_requires_for_build_wheel(config_settings: Any = None) -> list[str]:
    extra = ["ziglang", "cargo-zigbuild"] if manylinux() else []
    return [*maturin.get_requires_for_build_wheel(config_settings), *extra]


def build_wheel(wheel_directory: str, config_settings: Any = None, metadata_directory: Any = None) -> str:
    build_clibs()
    glibc = manylinux()
    if glibc and not config_settings:
        config_settings = {"maturin.build-args": f"--zig --compatibility manylinux_{glibc} --target {TRIPLE}"}
    return str(maturin.build_wheel(wheel_directory, config_settings, metadata_directory))


def build_editable(wheel_directory: str, config_settings: Any = None, metadata_directory: Any = None) -> str:
    build_clibs()
    return str(maturin.build_editable(wheel_directory, config_settings, metadata_directory))


def get_requires_for_build_editable(config_settings: Any = None) -> list[str]:
    return list(maturin.get_requires_for_build_editable(config_settings))


def prepare_metadata_for_build_editable(metadata_directory: str, config_settings: Any = None) -> str:
    return str(maturin.prepare_metadata_for_build_editable(metadata_directory, config_settings))

"""The PEP 517 build backend of vdeplug: maturin, after building the C face.

maturin builds one extension per wheel (the PyO3 module ``vdeplug._core``);
the C libraries qemu and C plugins load, ``libvdeplug.so.2`` and
``libvdeplug_mod.so.2`` (rust/libvdeplug*, no Python inside), are built here
with cargo and copied, with their headers, into ``python/vdeplug/lib/``,
which maturin then packs with the rest of the package. Everything else is
maturin's own hook.
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
    get_requires_for_build_wheel,
    prepare_metadata_for_build_wheel,
)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LIBS = {"libvdeplug": "libvdeplug.so.2", "libvdeplug_mod": "libvdeplug_mod.so.2"}


def build_clibs() -> str:
    """cargo build the C libraries; copy them (with their SONAME as file
    name) and the headers into python/vdeplug/lib. Returns that directory."""
    # By manifest path, not -p: maturin's sdist drops the [workspace] table.
    target = os.environ.get("CARGO_TARGET_DIR") or os.path.join(ROOT, "target")
    env = dict(os.environ, CARGO_TARGET_DIR=target)
    for crate in LIBS:
        manifest = os.path.join(ROOT, "rust", crate, "Cargo.toml")
        subprocess.run(["cargo", "build", "--release", "--manifest-path", manifest], cwd=ROOT, env=env, check=True)
    dest = os.path.join(ROOT, "python", "vdeplug", "lib")
    os.makedirs(dest, exist_ok=True)
    for crate, soname in LIBS.items():
        shutil.copyfile(os.path.join(target, "release", f"{crate}.so"), os.path.join(dest, soname))
        os.chmod(os.path.join(dest, soname), 0o755)
    include = os.path.join(ROOT, "rust", "include")
    for header in os.listdir(include):
        shutil.copyfile(os.path.join(include, header), os.path.join(dest, header))
    return dest


def build_wheel(wheel_directory: str, config_settings: Any = None, metadata_directory: Any = None) -> str:
    build_clibs()
    return str(maturin.build_wheel(wheel_directory, config_settings, metadata_directory))


def build_editable(wheel_directory: str, config_settings: Any = None, metadata_directory: Any = None) -> str:
    build_clibs()
    return str(maturin.build_editable(wheel_directory, config_settings, metadata_directory))


def get_requires_for_build_editable(config_settings: Any = None) -> list[str]:
    return list(maturin.get_requires_for_build_editable(config_settings))


def prepare_metadata_for_build_editable(metadata_directory: str, config_settings: Any = None) -> str:
    return str(maturin.prepare_metadata_for_build_editable(metadata_directory, config_settings))

"""The C face of vdeplug shipped in the package: ``libvdeplug.so.2`` (what
qemu, VirtualBox and every libvdeplug program load), ``libvdeplug_mod.so.2``
(for C plugins) and their headers, all in one directory.

    LD_LIBRARY_PATH=$(vde_plug --libdir) qemu-system-x86_64 ... -nic vde,sock=vxvde://
"""

from __future__ import annotations

import os

LIBRARY = "libvdeplug.so.2"


def libdir() -> str:
    """The directory holding libvdeplug.so.2, libvdeplug_mod.so.2 and the
    headers (``vde_plug --libdir`` prints it)."""
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib")


def library_path() -> str | None:
    """Our libvdeplug.so.2, if this installation has it."""
    path = os.path.join(libdir(), LIBRARY)
    return path if os.path.exists(path) else None

"""capture://FILE[[limit=64M/files=4]]{VNL} — everything crossing VNL, both
ways, is written to FILE in pcap format (tcpdump -r / tshark -r read it).
FILE is rotated at ``limit`` bytes (FILE.1, FILE.2, …, ``files`` in all),
so a capture never fills the disk. ``vde_plug --pcap FILE`` does the same
for its first VNL. (Debian's separate libvdeplug-pcap uses ``pcap://`` for
plugging into an interface through libpcap, hence another name here.)"""

from __future__ import annotations

import os
from typing import Any

from .. import _core
from ..registry import OpenArgs, Plugin, open_nested
from ..vnl import Option, Target, VNLError, integer, size

DEFAULT_LIMIT = 64 << 20
DEFAULT_FILES = 4


def limit_size(text: str) -> int:
    """A rotation size (K/M/G suffixes), at least 1K."""
    v = size(text)
    if v < 1024:
        raise ValueError("must be at least 1K")
    return v


file_count = integer(1, 1000)


def capture(endpoint: Any, path: str, limit: int = DEFAULT_LIMIT, files: int = DEFAULT_FILES) -> Any:
    """Wrap a built-in endpoint so every frame crossing it is captured."""
    return _core.open_capture(endpoint, os.path.abspath(path), limit, files)


class Capture(Plugin):
    scheme = "capture"
    syntax = "path"
    nests = True
    options = (
        Option("limit", limit_size, DEFAULT_LIMIT, "rotate after this many bytes (K/M/G)"),
        Option("files", file_count, DEFAULT_FILES, "files kept: FILE, FILE.1, …"),
    )
    summary = "pcap capture around a VNL: capture:///tmp/x.pcap{vxvde://}"

    def open(self, target: Target, args: OpenArgs) -> Any:
        t = target
        if not t.address:
            raise VNLError("capture:// needs a file name", t.vnl, t.vnl)
        inner = open_nested(t, args)
        try:
            return capture(inner, t.address, t["limit"], t["files"])
        except OSError:
            inner.close()
            raise


PLUGIN = Capture

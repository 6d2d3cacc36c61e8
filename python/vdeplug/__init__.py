"""vdeplug: Virtual Distributed Ethernet plugs, vdeplug4-compatible, with a
Rust data plane. ``vdeplug.open(url)`` returns a ``Connection``."""

from .aio import AsyncConnection, aopen
from .clibrary import libdir
from .connection import ETH_BUFSIZE, Connection, Stats, open
from .forward import join
from .registry import OpenArgs, Plugin, UnknownScheme, available
from .vnl import Option, Target, VNLError

__all__ = [
    "ETH_BUFSIZE",
    "AsyncConnection",
    "Connection",
    "OpenArgs",
    "Option",
    "Plugin",
    "Stats",
    "Target",
    "UnknownScheme",
    "VNLError",
    "aopen",
    "available",
    "join",
    "libdir",
    "open",
]
__version__ = "0.1.0"

"""vdeplug: Virtual Distributed Ethernet plugs, vdeplug4-compatible, with a
Rust data plane. ``vdeplug.open(url)`` returns a ``Connection``."""

from __future__ import annotations

from .clibrary import libdir
from .connection import ETH_BUFSIZE, Connection, Stats, open
from .forward import join
from .registry import OpenArgs, Plugin, UnknownScheme, available
from .vnl import Option, Target, VNLError

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing (start-up time)

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
if TYPE_CHECKING:
    from typing import Any

    from .aio import AsyncConnection, aopen

    __version__: str


def __getattr__(name: str) -> Any:
    """asyncio is imported only when the asyncio API is used: it is most of
    ``import vdeplug``'s time, and vde_plug, dpipe and cmd:// never need it."""
    if name == "__version__":  # one place: Cargo.toml (built into the core)
        from . import _core

        return _core.VERSION
    if name in ("AsyncConnection", "aopen"):
        from . import aio

        return getattr(aio, name)
    raise AttributeError(f"module 'vdeplug' has no attribute {name!r}")

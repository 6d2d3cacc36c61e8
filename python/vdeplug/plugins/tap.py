"""tap://name — a Linux tap interface (created if missing; needs CAP_NET_ADMIN)."""

from __future__ import annotations

from typing import Any

from .. import _core
from ..registry import OpenArgs, Plugin
from ..vnl import Target, VNLError


class Tap(Plugin):
    scheme = "tap"
    syntax = "raw"
    summary = "Linux tap interface: tap://t0"

    def open(self, target: Target, args: OpenArgs) -> Any:
        if len(target.address.encode()) > 15:
            raise VNLError("interface name longer than 15 bytes", target.vnl, target.address)
        if "/" in target.address:
            raise VNLError("interface name with '/'", target.vnl, target.address)
        return _core.open_tap(target.address)


PLUGIN = Tap

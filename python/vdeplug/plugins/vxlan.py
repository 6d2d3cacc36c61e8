"""vxlan://[group][/v4][/v6][/port=4789][/vni=1][/ttl=1][/hashsize=][/expiretime=][/if=]
— a VXLAN segment, interoperable with Linux vxlan devices. One process per
host and port (the socket is bound to ANY:port)."""

from __future__ import annotations

from typing import Any

from .. import _core
from ..registry import OpenArgs, Plugin
from ..vnl import Target
from ._overlay import common, group_address


class Vxlan(Plugin):
    scheme = "vxlan"
    syntax = "net"
    options = common(4789)
    summary = "VXLAN segment: vxlan://239.0.0.1/vni=5"

    def open(self, target: Target, args: OpenArgs) -> Any:
        t = target
        return _core.open_vxlan(
            group_address(t), t["port"], t["vni"], t["ttl"], t["if"], t["rcvbuf"], t["hashsize"], t["expiretime"]
        )


PLUGIN = Vxlan

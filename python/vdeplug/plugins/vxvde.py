"""vxvde://[group][/options] — vdeplug4's distributed switch over IP
multicast: any number of endpoints per host, known unicast goes straight to
the endpoint that owns the MAC. Options as vxlan plus ``grp=`` (VNI and the
last 3 bytes of the group from a group id) and ``bind=``; ``vni`` also
accepts a group name (its gid)."""

from __future__ import annotations

import ipaddress
from typing import Any

from .. import _core
from ..registry import OpenArgs, Plugin
from ..vnl import Option, Target, VNLError, group_id, text
from ._overlay import common, group_address


def vni_or_group(value: str) -> int:
    """A number, or a group name whose gid is the VNI."""
    if value.isdigit():
        v = int(value)
    else:
        v = group_id(value)
    if not 0 <= v <= 0xFFFFFF:
        raise ValueError("must fit in 24 bits")
    return v


def _options() -> tuple[Option, ...]:
    base = common(14789)
    # vdeplug4's table order: port, vni, grp, ... so "v=5" still means vni.
    opts = [Option("vni", vni_or_group, 1, o.help) if o.name == "vni" else o for o in base]
    opts.insert(2, Option("grp", group_id, None, "group: sets VNI and the group's last 3 bytes"))
    opts.append(Option("bind", text, None, "local address of the unicast socket"))
    return tuple(opts)


def with_gid(group: str, gid: int) -> str:
    """Write the gid's low 24 bits into the last 3 bytes of the group."""
    ip = ipaddress.ip_address(group)
    raw = bytearray(ip.packed)
    raw[-3:] = (gid & 0xFFFFFF).to_bytes(3, "big")
    return str(ipaddress.ip_address(bytes(raw)))


class Vxvde(Plugin):
    scheme = "vxvde"
    syntax = "net"
    options = _options()
    summary = "distributed switch: vxvde://239.1.2.3"

    def open(self, target: Target, args: OpenArgs) -> Any:
        t = target
        group, vni = group_address(t), t["vni"]
        if t["grp"] is not None:
            group = with_gid(group, t["grp"])
            if "vni" not in t.given:
                vni = t["grp"] & 0xFFFFFF
        bind = t["bind"]
        if bind is not None:
            try:
                bind = str(ipaddress.ip_address(bind))
            except ValueError:
                raise VNLError(f"bad bind address {bind!r}", t.vnl, bind) from None
        return _core.open_vxvde(
            group, t["port"], vni, t["ttl"], t["if"], t["rcvbuf"], t["hashsize"], t["expiretime"], bind
        )


PLUGIN = Vxvde

"""Options shared by vxlan:// and vxvde:// (vdeplug4 names and defaults)."""

from __future__ import annotations

import ipaddress

from ..vnl import Option, Target, VNLError, flag, integer, size, text

DEFAULT_V4 = "239.0.0.1"
DEFAULT_V6 = "ff05:56de::1"


def common(port: int) -> tuple[Option, ...]:
    return (
        Option("port", integer(1, 65535), port, "UDP port"),
        Option("vni", integer(0, 0xFFFFFF), 1, "VXLAN network identifier"),
        Option("ttl", integer(0, 255), 1, "multicast TTL / hop limit"),
        Option("rcvbuf", size, None, "SO_RCVBUF size (K/M/G suffixes)"),
        Option("v4", flag, False, "use IPv4"),
        Option("v6", flag, False, "use IPv6"),
        Option("hashsize", integer(1, 1 << 24), 1024, "MAC table size"),
        Option("expiretime", integer(1), 128, "MAC table entry lifetime (s)"),
        Option("if", text, None, "network interface for multicast"),
    )


def group_address(target: Target) -> str:
    """The multicast group: the address part, else the default of the family
    (``v6`` selects ff05:56de::1; unlike vdeplug4, ``v4``/``v6`` also check
    an explicit address)."""
    if target["v4"] and target["v6"]:
        raise VNLError("v4 and v6 together", target.vnl, "v6")
    addr = target.address.strip("[]")
    if not addr:
        return DEFAULT_V6 if target["v6"] else DEFAULT_V4
    try:
        ip = ipaddress.ip_address(addr)
    except ValueError:
        raise VNLError(f"not an IP multicast address: {addr!r}", target.vnl, target.address) from None
    if not ip.is_multicast:
        raise VNLError(f"{addr} is not a multicast address", target.vnl, target.address)
    if (target["v6"] and ip.version == 4) or (target["v4"] and ip.version == 6):
        raise VNLError(f"{addr} is not an IPv{'6' if target['v6'] else '4'} address", target.vnl, target.address)
    return str(ip)

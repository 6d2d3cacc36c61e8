"""udp://[src_addr:]src_port->dst_addr:dst_port — frames as raw UDP payloads
(quote the ``>`` in a shell). The last ``:`` separates the port, so bare
IPv6 literals work; ``[v6]:port`` is accepted too."""

from __future__ import annotations

import socket
from dataclasses import dataclass
from typing import Any

from .. import _core
from ..registry import OpenArgs, Plugin
from ..vnl import Target, VNLError


@dataclass(frozen=True)
class UdpAddress:
    src_host: str
    src_port: int
    dst_host: str
    dst_port: int


def _host_port(text: str, vnl: str, need_host: bool) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep:
        host, port = "", text
    if need_host and not host:
        raise VNLError("destination needs host:port", vnl, text)
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise VNLError(f"bad port {port!r}", vnl, text)
    return host, int(port)


def parse_address(address: str, vnl: str) -> UdpAddress:
    src, arrow, dst = address.partition("->")
    if not arrow:
        raise VNLError("udp:// needs [src_addr:]src_port->dst_addr:dst_port", vnl, address)
    sh, sp = _host_port(src, vnl, need_host=False)
    dh, dp = _host_port(dst, vnl, need_host=True)
    return UdpAddress(sh, sp, dh, dp)


def _resolve(host: str, port: int, family: int, passive: bool, vnl: str) -> tuple[int, str]:
    flags = socket.AI_PASSIVE if passive else 0
    try:
        info = socket.getaddrinfo(host or None, port, family, socket.SOCK_DGRAM, 0, flags)
    except socket.gaierror as e:
        raise VNLError(f"cannot resolve {host!r}: {e.strerror}", vnl, host) from None
    fam, _, _, _, sa = info[0]
    return fam, str(sa[0])


class Udp(Plugin):
    scheme = "udp"
    syntax = "raw"
    summary = 'UDP tunnel: udp://"[src_addr:]src_port->dst_addr:dst_port"'

    def open(self, target: Target, args: OpenArgs) -> Any:
        a = parse_address(target.address, target.vnl)
        fam, dst_ip = _resolve(a.dst_host, a.dst_port, socket.AF_UNSPEC, False, target.vnl)
        _, src_ip = _resolve(a.src_host, a.src_port, fam, True, target.vnl)
        return _core.open_udp(src_ip, a.src_port, dst_ip, a.dst_port)


PLUGIN = Udp

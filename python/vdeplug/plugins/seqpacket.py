"""seqpacket://FD — frames as packets on an inherited SOCK_SEQPACKET fd
(vdeplug4's static libvdeplug.a forks ``vde_plug seqpacket://FD URL``)."""

from __future__ import annotations

from typing import Any

from .. import _core
from ..registry import OpenArgs, Plugin
from ..vnl import Target, VNLError


class SeqPacket(Plugin):
    scheme = "seqpacket"
    syntax = "raw"
    summary = "inherited SOCK_SEQPACKET fd"

    def open(self, target: Target, args: OpenArgs) -> Any:
        if not target.address.isdigit():
            raise VNLError("seqpacket:// needs a file descriptor number", target.vnl, target.address)
        return _core.open_seqpacket(int(target.address))


PLUGIN = SeqPacket

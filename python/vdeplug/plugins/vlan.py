"""vlan://[vlan][/untag=N][/tag=A:B-C][/trunk][/qinq]{VNL} — 802.1Q tagging
done by the plug around any built-in VNL, as Debian's libvdeplug_vlan.
Frames we send untagged join VLAN ``vlan`` on the inner network; ``untag``
is the tag untagged network traffic gets on our side; ``tag`` lists VLANs
we see tagged (``A-B``: our A is the network's B); ``trunk`` passes other
tags; ``qinq`` (``ad``) uses the 802.1ad TPID 0x88a8. Debian's tool takes
options as ``/opt``; the ``[opt/...]`` form of its man page works too here."""

from __future__ import annotations

import re
from typing import Any

from .. import _core
from ..registry import OpenArgs, Plugin, open_nested
from ..vnl import Option, Target, VNLError, flag, integer

VID = integer(0, 4095)


def tag_map(text: str) -> tuple[tuple[int, int], ...]:
    """"10:11-12" → ((10, 10), (11, 12)); tokens split by ':' or '.'."""
    pairs = []
    for tok in re.split(r"[:.]", text):
        if not tok:
            continue
        ours, _, net = tok.partition("-")
        pairs.append((VID(ours), VID(net or ours)))
    return tuple(pairs)


class Vlan(Plugin):
    scheme = "vlan"
    syntax = "net"
    nests = True
    options = (
        Option("untag", VID, 0, "tag that untagged network traffic gets on our side"),
        Option("tag", tag_map, (), "VLANs seen tagged: 10:11-12 (ours-network)"),
        Option("trunk", flag, False, "pass tags not listed"),
        Option("x", flag, False, "same as trunk"),
        Option("qinq", flag, False, "802.1ad TPID 0x88a8"),
        Option("ad", flag, False, "same as qinq"),
    )
    summary = "802.1Q tagging around a VNL: vlan://3{vde:///tmp/sw}"

    def open(self, target: Target, args: OpenArgs) -> Any:
        t = target
        try:
            vlan = VID(t.address or "0")
        except ValueError as e:
            raise VNLError(f"bad VLAN {t.address!r}: {e}", t.vnl, t.address) from None
        inner = open_nested(t, args)
        return _core.open_vlan(inner, vlan, t["untag"], list(t["tag"]), t["trunk"] or t["x"], t["qinq"] or t["ad"])


PLUGIN = Vlan

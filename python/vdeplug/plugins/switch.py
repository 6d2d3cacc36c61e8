"""switch://[path][[mode=/dirmode=/grp=/hashsize=256/hashseed=/expiretime=120]] — a
learning switch owned by this process (it is one of its ports), serving the
vde_switch protocol so qemu, C vde_plug and vde:// clients plug in.
``vde_plug null:// switch:///tmp/sw`` is a stand-alone switch."""

from __future__ import annotations

from ._netnode import SWITCH_OPTIONS, NetNode


class Switch(NetNode):
    scheme = "switch"
    options = SWITCH_OPTIONS
    summary = "learning switch (802.1Q trunk)"


PLUGIN = Switch

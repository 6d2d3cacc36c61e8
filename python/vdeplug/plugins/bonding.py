"""bonding://[path][[mode=/dirmode=/grp=]] — frames from this process go to one
port at a time, round robin; frames from the ports go to this process."""

from __future__ import annotations

from ._netnode import NetNode


class Bonding(NetNode):
    scheme = "bonding"
    summary = "round-robin bonding of ports"


PLUGIN = Bonding

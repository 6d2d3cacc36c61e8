"""multi://[path][[mode=/dirmode=/grp=]] — a multiplexer: frames from the ports
go to this process only; frames from this process go to every port."""

from __future__ import annotations

from ._netnode import NetNode


class Multi(NetNode):
    scheme = "multi"
    summary = "multiplexer: ports <-> host"


PLUGIN = Multi

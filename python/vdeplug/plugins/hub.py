"""hub://[path][[mode=/dirmode=/grp=]] — like switch:// but floods every frame."""

from __future__ import annotations

from ._netnode import NetNode


class Hub(NetNode):
    scheme = "hub"
    summary = "hub: floods every frame"


PLUGIN = Hub

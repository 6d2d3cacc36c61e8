"""ptp://path — point-to-point link over unix datagram sockets (either end
may start first; wire-compatible with Debian's vdeplug4 4.0.1)."""

from __future__ import annotations

import os
from typing import Any

from .. import _core
from ..registry import OpenArgs, Plugin
from ..vnl import Target, VNLError, group_id


class Ptp(Plugin):
    scheme = "ptp"
    syntax = "raw"
    summary = "point-to-point link: ptp:///tmp/link"

    def open(self, target: Target, args: OpenArgs) -> Any:
        if not target.address:
            raise VNLError("ptp:// needs a path", target.vnl, target.vnl)
        gid = group_id(args.group) if args.group is not None else None
        return _core.open_ptp(os.path.abspath(target.address), args.mode, gid)


PLUGIN = Ptp

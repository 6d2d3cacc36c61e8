"""vde://path[port] or a bare path — a client of a vde_switch (Debian's
vde-switch, or our switch://). ``[3]`` asks for port 3, ``[name]`` for a
port group; ``mode``/``group`` set our data socket's permissions."""

from __future__ import annotations

import os
from typing import Any

from .. import _core
from ..registry import OpenArgs, Plugin
from ..vnl import Option, Target, VNLError, group_id, integer, octal, text


class Vde(Plugin):
    scheme = "vde"
    syntax = "path"
    options = (
        Option("port", text, None, "port number, or a port group name"),
        Option("portgroup", text, None, "port group"),
        Option("group", text, None, "group owning our data socket"),
        Option("mode", octal, None, "mode of our data socket (default 0700)"),
    )
    bare = "port"
    summary = "client of a vde_switch: vde:///tmp/sw[3]"

    def open(self, target: Target, args: OpenArgs) -> Any:
        port, portgroup = target["port"], target["portgroup"]
        if port is not None and not port.isdigit():
            port, portgroup = None, port  # vde:///sw[mygroup]
        if port is not None:
            try:
                port = integer(0, 65535)(port)
            except ValueError as e:
                raise VNLError(f"bad port: {e}", target.vnl, port) from None
        if args.port is not None:
            port = args.port
        group = args.group if args.group is not None else target["group"]
        mode = args.mode if args.mode is not None else target["mode"]
        gid = None
        if group is not None:
            try:
                gid = group_id(group)
            except ValueError as e:
                raise VNLError(str(e), target.vnl, group) from None
        path = os.path.abspath(target.address) if target.address else ""
        return _core.open_vde(path, port, portgroup, mode, gid, args.full_descr())


PLUGIN = Vde

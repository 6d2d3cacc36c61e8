"""What switch://, hub://, multi:// and bonding:// share: the syntax
``scheme://[path][[opt/...]]``, options and defaults of vdeplug4's netnode."""

from __future__ import annotations

import getpass
import os
from typing import Any, ClassVar

from .. import _core
from ..registry import OpenArgs, Plugin
from ..vnl import Option, Target, VNLError, group_id, integer, octal, text

NODE_OPTIONS = (
    Option("mode", octal, 0o600, "permissions of the switch sockets"),
    Option("dirmode", octal, None, "permissions of the directory (default from mode)"),
    Option("grp", text, None, "group owning the switch"),
)
SWITCH_OPTIONS = NODE_OPTIONS + (
    Option("hashsize", integer(1, 1 << 24), 256, "MAC table size"),
    Option("hashseed", integer(0), 0, "MAC table hash seed"),
    Option("expiretime", integer(1), 120, "MAC table entry lifetime (s)"),
)


def default_path() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = f"u{os.geteuid()}"
    return f"/tmp/vdenode_{user}"


class NetNode(Plugin):
    syntax = "path"
    options: ClassVar[tuple[Option, ...]] = NODE_OPTIONS

    def open(self, target: Target, args: OpenArgs) -> Any:
        t = target
        path = os.path.abspath(t.address) if t.address else default_path()
        grp = args.group if args.group is not None else t["grp"]
        try:
            gid = group_id(grp) if grp is not None else None
        except ValueError as e:
            raise VNLError(str(e), t.vnl, grp or "") from None
        mode = args.mode if args.mode is not None and "mode" not in t.given else t["mode"]
        o = t.options
        return _core.open_netnode(
            self.scheme, path, mode, t["dirmode"], gid,
            o.get("hashsize", 256), o.get("expiretime", 120), o.get("hashseed", 0),
        )

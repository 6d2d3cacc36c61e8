"""cmd://command args — run a command (no shell; words split like a shell
would) and exchange frames with it as a vdeplug byte stream on its
stdin/stdout, e.g. ``cmd://"ssh host vde_plug tap://t0"``."""

from __future__ import annotations

import shlex
from typing import Any

from .. import _core
from ..registry import OpenArgs, Plugin
from ..vnl import Target, VNLError


class Cmd(Plugin):
    scheme = "cmd"
    syntax = "raw"
    summary = "run a command speaking the stream framing on stdin/stdout"

    def parse(self, vnl: str, rest: str) -> Target:
        # Quotes group words of the command, so they are kept for shlex.
        try:
            argv = shlex.split(rest)
        except ValueError as e:
            raise VNLError(f"bad command line: {e}", vnl, rest) from None
        if not argv:
            raise VNLError("cmd:// needs a command", vnl, vnl)
        return Target(vnl, self.scheme, rest, {"argv": tuple(argv)}, frozenset())

    def open(self, target: Target, args: OpenArgs) -> Any:
        return _core.open_cmd(list(target["argv"]))


PLUGIN = Cmd

"""null:// — a plug that swallows frames and never delivers any."""

from __future__ import annotations

from typing import Any

from .. import _core
from ..registry import OpenArgs, Plugin
from ..vnl import Target


class Null(Plugin):
    scheme = "null"
    syntax = "raw"
    summary = "discard everything; never receive"

    def open(self, target: Target, args: OpenArgs) -> Any:
        return _core.open_null()


PLUGIN = Null

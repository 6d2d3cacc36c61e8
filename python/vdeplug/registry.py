"""Plugin registry: scheme name → plugin. Built-ins live in
``vdeplug.plugins.<scheme>``; third-party plugins register a class under the
``vdeplug.plugins`` entry point group (our libvdeplug_<scheme>.so)."""

from __future__ import annotations

import importlib
import os
import pkgutil
import sys
from dataclasses import dataclass, replace
from importlib.metadata import entry_points
from typing import Any, ClassVar, Protocol, runtime_checkable

from .vnl import (
    Option,
    Syntax,
    Target,
    VNLError,
    parse_rest,
    split_nested,
    split_scheme,
)

ENTRY_POINT_GROUP = "vdeplug.plugins"



def _builtin_schemes() -> frozenset[str]:
    from . import plugins

    return frozenset(m.name for m in pkgutil.iter_modules(plugins.__path__) if not m.name.startswith("_"))


BUILTIN = _builtin_schemes()


@dataclass(frozen=True)
class OpenArgs:
    """What vde_open's ``vde_open_args`` and description carry."""

    descr: str = "vdeplug:"
    mode: int | None = None
    group: str | None = None
    port: int | None = None

    def full_descr(self) -> str:
        """vdeplug4 appends user, pid and the ssh client to the description."""
        d = f"{self.descr} user={os.geteuid()} pid={os.getpid()}"
        ssh = os.environ.get("SSH_CLIENT", "").split()
        if ssh:
            d += f" SSH={ssh[0]}"
        return d[:128]


@runtime_checkable
class Endpoint(Protocol):
    """What a plugin's ``open`` returns: a ``vdeplug._core.Endpoint`` for
    built-ins, or any Python object with these methods."""

    def recv(self, max: int = ..., timeout: float | None = None) -> bytes | None: ...
    def recv_nowait(self) -> bytes | None: ...
    def send(self, frame: bytes) -> int: ...
    def fileno(self) -> int: ...
    def close(self) -> None: ...


class Plugin:
    """Base of every plugin. Subclasses set ``scheme``, ``syntax`` and
    ``options`` and implement ``open``."""

    scheme: ClassVar[str] = ""
    syntax: ClassVar[Syntax] = "net"
    options: ClassVar[tuple[Option, ...]] = ()
    #: path syntax: the option a bare ``[item]`` sets (vde: ``[3]`` is the port)
    bare: ClassVar[str | None] = None
    summary: ClassVar[str] = ""
    #: nested plugin: ``scheme://head{inner VNL}`` (head in ``syntax``, or ``[...]`` options)
    nests: ClassVar[bool] = False

    def parse(self, vnl: str, rest: str) -> Target:
        """The text after ``scheme://`` → a typed ``Target`` (raises VNLError)."""
        if not self.nests:
            return parse_rest(vnl, self.scheme, rest, self.syntax, self.options, self.bare)
        head, inner = split_nested(vnl, rest)
        syntax: Syntax = "path" if "[" in head else self.syntax
        return replace(parse_rest(vnl, self.scheme, head, syntax, self.options, self.bare), nested=inner)

    def open(self, target: Target, args: OpenArgs) -> Any:
        """Open the network: return an object with the ``Endpoint`` methods."""
        raise NotImplementedError


class UnknownScheme(VNLError):
    pass


def _load_builtin(scheme: str) -> type[Plugin]:
    mod = importlib.import_module(f"vdeplug.plugins.{scheme}")
    cls: type[Plugin] = mod.PLUGIN
    return cls


_EP_CACHE: tuple[tuple[str, ...], dict[str, Any]] | None = None


def _third_party() -> dict[str, Any]:
    """Installed plugins' entry points; scanning distributions is slow, so
    the result is kept until ``sys.path`` changes."""
    global _EP_CACHE
    key = tuple(sys.path)
    if _EP_CACHE is None or _EP_CACHE[0] != key:
        _EP_CACHE = (key, {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)})
    return _EP_CACHE[1]


def available() -> list[str]:
    """Every scheme that can be opened: built-ins and installed plugins."""
    return sorted(set(BUILTIN) | set(_third_party()))


def get(scheme: str, vnl: str = "") -> Plugin:
    """The plugin for ``scheme``; built-ins first, then entry points."""
    if scheme in BUILTIN:
        return _load_builtin(scheme)()
    ep = _third_party().get(scheme)
    if ep is None:
        raise UnknownScheme(
            f"unknown scheme {scheme!r} (available: {', '.join(available())})", vnl, scheme
        )
    cls = ep.load()
    if not (isinstance(cls, type) and issubclass(cls, Plugin)):
        raise UnknownScheme(f"entry point {scheme!r} is not a vdeplug Plugin class", vnl, scheme)
    return cls()


def open_nested(target: Target, args: OpenArgs) -> Any:
    """Open a nested plugin's inner VNL. Only built-in (Rust) transports can
    be wrapped, since the wrapper runs in the Rust data plane."""
    from . import _core

    assert target.nested is not None
    plugin, inner = resolve(target.nested)
    ep = plugin.open(inner, args)
    if not isinstance(ep, _core.Endpoint):
        ep.close()
        raise VNLError(f"{target.scheme}:// can only wrap built-in transports, not {plugin.scheme}://", target.vnl, target.nested)
    return ep


def resolve(vnl: str) -> tuple[Plugin, Target]:
    """Parse ``vnl`` and find its plugin; raises VNLError naming the bad part."""
    scheme, rest = split_scheme(vnl)
    plugin = get(scheme, vnl)
    return plugin, plugin.parse(vnl, rest)

"""Plugin registry: scheme name → plugin. Built-ins are Rust (their
grammar, options and transports in ``rust/plugins.rs`` and one
``rust/transport/<scheme>.rs`` each); third-party plugins are Python
classes registered under the ``vdeplug.plugins`` entry point group, or C
plugins ``libvdeplug_<scheme>.so`` (vdeplug4's ABI) found in the system's
plugin directories before LD_LIBRARY_PATH's (``rust/cplugin.rs``)."""

from __future__ import annotations

import sys

from . import _core
from ._record import record
from .clibrary import library_path
from .vnl import (
    Option,
    Target,
    VNLError,
    parse_rest,
    split_nested,
    split_scheme,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, ClassVar

    from .vnl import Syntax

ENTRY_POINT_GROUP = "vdeplug.plugins"

#: scheme → (syntax, nests, summary, options) of the Rust plugins
_BUILTIN_INFO = {scheme: (syntax, nests, summary, tuple(Option(n, str, d, h) for n, d, h in opts)) for scheme, syntax, nests, summary, opts in _core.builtin_plugins()}
BUILTIN = frozenset(_BUILTIN_INFO)

# Nested C plugins (vlan, agno) call the global vde_open_real: ours.
_lib = library_path()
if _lib is not None:
    _core.set_library(_lib)


def builtin_default(scheme: str, option: str) -> Any:
    """The default of a built-in plugin's option (one home: Rust)."""
    return next(o.default for o in _BUILTIN_INFO[scheme][3] if o.name == option)


@record(frozen=True)
class OpenArgs:
    """What vde_open's ``vde_open_args`` and description carry. Options in
    the URL win over these, as in vdeplug4."""

    descr: str = "vdeplug:"
    mode: int | None = None
    group: str | None = None
    port: int | None = None

    def full_descr(self) -> str:
        """vdeplug4 appends user, pid and the ssh client to the description."""
        return str(_core.full_descr(self.descr))


def __getattr__(name: str) -> Any:
    """``Endpoint`` (a typing.Protocol) is built on first use: typing is not
    imported at start-up."""
    if name == "Endpoint":
        from ._types import Endpoint

        return Endpoint
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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
        t = parse_rest(vnl, self.scheme, head, syntax, self.options, self.bare)
        return Target(t.vnl, t.scheme, t.address, t.options, t.given, inner)

    def open(self, target: Target, args: OpenArgs) -> Any:
        """Open the network: return an object with the ``Endpoint`` methods."""
        raise NotImplementedError


class UnknownScheme(VNLError):
    pass


def unknown_scheme(scheme: str, vnl: str = "") -> UnknownScheme:
    """The error for a scheme no plugin has, listing those available (and
    the closest one: ``ptpp://`` → did you mean ``ptp://``?)."""
    import difflib

    names = available()
    close = difflib.get_close_matches(scheme, names, n=1)
    hint = f"; did you mean {close[0]}://?" if close else ""
    return UnknownScheme(f"unknown scheme {scheme!r}{hint} (available: {', '.join(names)})", vnl, scheme)


def missing_slashes(vnl: str) -> str | None:
    """``ptp:/x`` or ``udp:5000->…`` (no ``//``) reads as a vde switch path;
    the scheme the user probably meant, or None."""
    head, colon, rest = vnl.partition(":")
    if colon and not rest.startswith("//") and head.lower() in available():
        return f"{head}://{rest.lstrip('/')}" if head.lower() in ("udp", "cmd", "null", "seqpacket", "tap") else f"{head}://{rest}"
    return None


class Builtin(Plugin):
    """A built-in plugin: its VNL is parsed and opened in Rust."""

    def __init__(self, scheme: str) -> None:
        self.scheme = scheme  # type: ignore[misc]
        syntax, nests, summary, options = _BUILTIN_INFO[scheme]
        self.syntax = syntax  # type: ignore[misc,assignment]
        self.nests, self.summary, self.options = nests, summary, options  # type: ignore[misc]

    def parse(self, vnl: str, rest: str) -> Target:
        got = _core.resolve_builtin(vnl)
        assert got is not None
        scheme, address, options, given, nested = got
        return Target(vnl, scheme, address, options, frozenset(given), nested)

    def open(self, target: Target, args: OpenArgs) -> Any:
        return _core.open(target.vnl, descr=args.descr, mode=args.mode, group=args.group, port=args.port)


class CPlugin(Plugin):
    """A C plugin, ``libvdeplug_<scheme>.so`` (vdeplug4's plugin ABI),
    opened by the Rust core; its text is the plugin's to parse."""

    syntax = "raw"

    def __init__(self, scheme: str, path: str) -> None:
        self.scheme = scheme  # type: ignore[misc]
        self.path = path
        self.summary = f"C plugin {path}"  # type: ignore[misc]

    def parse(self, vnl: str, rest: str) -> Target:
        return Target(vnl, self.scheme, rest)

    def open(self, target: Target, args: OpenArgs) -> Any:
        return _core.open(target.vnl, descr=args.descr, mode=args.mode, group=args.group, port=args.port)


_EP_CACHE: tuple[tuple[str, ...], dict[str, Any]] | None = None


def _third_party() -> dict[str, Any]:
    """Installed plugins' entry points; scanning distributions is slow, so
    the result is kept until ``sys.path`` changes."""
    global _EP_CACHE
    key = tuple(sys.path)
    if _EP_CACHE is None or _EP_CACHE[0] != key:
        from importlib.metadata import entry_points  # 20 ms: only when needed

        eps: Any = entry_points()
        group = eps.select(group=ENTRY_POINT_GROUP) if hasattr(eps, "select") else eps.get(ENTRY_POINT_GROUP, ())  # 3.9: a dict
        _EP_CACHE = (key, {ep.name: ep for ep in group})
    return _EP_CACHE[1]


def c_plugins() -> dict[str, str]:
    """C plugins found in the search order of ``rust/cplugin.rs`` (first one wins)."""
    return {scheme: str(path) for scheme, path in reversed(_core.c_plugins())}


def available() -> list[str]:
    """Every scheme that can be opened: built-ins, Python and C plugins."""
    return sorted(set(BUILTIN) | set(_third_party()) | set(c_plugins()))


def get(scheme: str, vnl: str = "") -> Plugin:
    """The plugin for ``scheme``: built-ins first, then entry points, then C plugins."""
    if scheme in BUILTIN:
        return Builtin(scheme)
    ep = _third_party().get(scheme)
    if ep is not None:
        cls = ep.load()
        if not (isinstance(cls, type) and issubclass(cls, Plugin)):
            raise UnknownScheme(f"entry point {scheme!r} is not a vdeplug Plugin class", vnl, scheme)
        return cls()
    path = c_plugins().get(scheme)
    if path is not None:
        return CPlugin(scheme, path)
    raise unknown_scheme(scheme, vnl)


def resolve(vnl: str) -> tuple[Plugin, Target]:
    """Parse ``vnl`` and find its plugin; raises VNLError naming the bad part."""
    scheme, rest = split_scheme(vnl)
    plugin = get(scheme, vnl)
    return plugin, plugin.parse(vnl, rest)

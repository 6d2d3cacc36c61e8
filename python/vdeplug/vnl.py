"""Virtual Network Locators (VNLs): the ``scheme://address/opt=value`` URLs
of vdeplug4, parsed with the same rules (quotes, backslash escapes, %XX,
prefix-matched option keys, ``[...]`` options for path plugins).

The grammar lives once, in Rust (``rust/vnl.rs``; built-in plugins'
option tables in ``rust/plugins.rs``); this module is its Python face, plus
the converters third-party plugins use in their own option tables.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping

from . import _core
from ._record import field, record

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any, Literal

    Syntax = Literal["net", "path", "raw", "verbatim"]


class VNLError(ValueError):
    """A malformed VNL. ``part`` is the offending piece of text."""

    def __init__(self, message: str, vnl: str = "", part: str = "") -> None:
        self.vnl = vnl
        self.part = part
        if part and part not in message and part not in vnl:
            message = f"{message}: {part!r}"  # a decoded part: show it as well
        super().__init__(f"{message} in {vnl!r}" if vnl else message)


@record(frozen=True)
class Option:
    """One ``/name=value`` option a plugin accepts. ``convert`` turns the text
    into a typed value and raises ``ValueError`` with a reason when it cannot."""

    name: str
    convert: Callable[[str], Any]
    default: Any = None
    help: str = ""


@record(frozen=True)
class Target:
    """A parsed VNL: what a plugin's ``open`` receives."""

    vnl: str
    scheme: str
    address: str
    options: Mapping[str, Any] = field(default_factory=dict)
    given: frozenset[str] = frozenset()
    #: nested plugins (``vlan://3{vde:///tmp/sw}``): the VNL inside the braces
    nested: str | None = None

    def __getitem__(self, name: str) -> Any:
        return self.options[name]


# --------------------------------------------------------------- grammar (in Rust: rust/vnl.rs)


def _b(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


def _s(data: bytes) -> str:
    return data.decode("utf-8", "surrogateescape")


def split(text: str, delims: str = "", vnl: str = "") -> list[str]:
    """Split ``text`` at unquoted delimiters, removing quotes and escapes and
    decoding unquoted %XX, as vdeplug4's tokenizer does."""
    return [_s(p) for p in _core.vnl_split(_b(text), _b(delims), vnl or text)]


def typed_options(items: Iterable[tuple[str, str | None]], table: tuple[Option, ...], vnl: str, scheme: str, bare: str | None = None) -> tuple[dict[str, Any], frozenset[str]]:
    """Turn ``(key, value)`` items (value None for a bare ``key``) into typed
    values with a plugin's converters, defaults filled in. Keys match by
    prefix, as in vdeplug4 (Rust decides which option a key names)."""
    names = [o.name for o in table]
    values: dict[str, Any] = {o.name: o.default for o in table}
    given: set[str] = set()
    for key, value in items:
        item = key if value is None else f"{key}={value}"
        try:
            opt, text = table[_core.vnl_match(_b(key), names, scheme, vnl)], value or ""
        except VNLError:
            if value is not None or bare is None:
                raise
            opt, text = next(o for o in table if o.name == bare), key  # vde:///sw[3]: the port
        try:
            values[opt.name] = opt.convert(text)
        except (ValueError, KeyError) as e:
            reason = e.args[0] if e.args else "bad value"
            raise VNLError(f"bad value {text!r} for option {opt.name!r}: {reason}", vnl, item) from None
        given.add(opt.name)
    return values, frozenset(given)


def default_vnl() -> str:
    """What the empty VNL means: the first line of ``~/.vdeplug/default`` or
    ``~/.vde2/default.switch`` when those are regular files, the switch at
    ``~/.vde2/default.switch`` when it is a switch directory, else the system
    switch (vde plugin: /run/vde.ctl, then /tmp/vde.ctl)."""
    return _s(_core.vnl_default())


def split_scheme(vnl: str) -> tuple[str, str]:
    """(scheme, rest). No ``://`` means a vde switch path; empty means the default."""
    scheme, rest = _core.vnl_split_scheme(_b(vnl), vnl)
    return scheme, _s(rest)


def parse_rest(vnl: str, scheme: str, rest: str, syntax: Syntax, table: tuple[Option, ...], bare: str | None = None) -> Target:
    """Parse the text after ``scheme://`` by the plugin's syntax (``net``:
    ``address/opt=value``; ``path``: ``path[opt/opt]``; ``raw``: all address)."""
    address, items = _core.vnl_parse(_b(rest), syntax, vnl)
    pairs = [(_s(k), None if v is None else _s(v)) for k, v in items]
    values, given = typed_options(pairs, table, vnl, scheme, bare)
    return Target(vnl, scheme, _s(address), values, given)


def split_nested(vnl: str, rest: str) -> tuple[str, str]:
    """``head{inner}`` → (head, inner), as vdeplug4's vde_parsenestparms:
    the inner VNL is the text between the first ``{`` and the last ``}``,
    quotes kept (it is parsed again when opened)."""
    head, inner = _core.vnl_split_nested(_b(rest), vnl)
    return _s(head), _s(inner)


# --------------------------------------------------------------- value converters


def integer(lo: int = 0, hi: int = 2**63) -> Callable[[str], int]:
    def conv(text: str) -> int:
        try:
            v = int(text, 0) if text.lower().startswith(("0x", "0o", "0b")) else int(text, 10)
        except ValueError:
            raise ValueError("not an integer") from None
        if not lo <= v <= hi:
            raise ValueError(f"must be between {lo} and {hi}")
        return v

    return conv


def size(text: str) -> int:
    """A size with an optional K/M/G/T suffix (powers of 1024), like strtoullm."""
    return int(_core.vnl_size(text))


def octal(text: str) -> int:
    try:
        v = int(text, 8)
    except ValueError:
        raise ValueError("not an octal mode") from None
    if not 0 <= v <= 0o7777:
        raise ValueError("mode out of range")
    return v


def flag(text: str) -> bool:
    if text == "":
        return True
    raise ValueError("takes no value")


def text(t: str) -> str:
    return t


def group_id(name: str) -> int:
    """vde_grnam2gid: '' is our egid, digits are a gid, else a group name."""
    import grp

    if name == "":
        return os.getegid()
    if name.isdigit():
        return int(name)
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        raise ValueError(f"no such group {name!r}") from None

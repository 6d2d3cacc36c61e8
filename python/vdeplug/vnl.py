"""Virtual Network Locators (VNLs): the ``scheme://address/opt=value`` URLs
of vdeplug4, parsed with the same rules (quotes, backslash escapes, %XX,
prefix-matched option keys, ``[...]`` options for path plugins).

Parsing happens once, here; transports receive typed values, never text.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Callable, Literal

Syntax = Literal["net", "path", "raw"]

_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9_+.-]*\Z")


class VNLError(ValueError):
    """A malformed VNL. ``part`` is the offending piece of text."""

    def __init__(self, message: str, vnl: str = "", part: str = "") -> None:
        self.vnl = vnl
        self.part = part
        if part and part not in message and part not in vnl:
            message = f"{message}: {part!r}"  # a decoded part: show it as well
        super().__init__(f"{message} in {vnl!r}" if vnl else message)


@dataclass(frozen=True)
class Option:
    """One ``/name=value`` option a plugin accepts. ``convert`` turns the text
    into a typed value and raises ``ValueError`` with a reason when it cannot."""

    name: str
    convert: Callable[[str], Any]
    default: Any = None
    help: str = ""


@dataclass(frozen=True)
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


# --------------------------------------------------------------- tokenizer


def _scan(text: str, vnl: str) -> Iterable[tuple[int, str, bool]]:
    """Yield (index, char, quoted_or_escaped) for every character that is
    content; quote characters and escaping backslashes are consumed."""
    quote = ""
    i = 0
    while i < len(text):
        c = text[i]
        if quote:
            if c == quote:
                quote = ""
            elif c == "\\" and quote == '"' and i + 1 < len(text):
                i += 1
                yield i, text[i], True
            else:
                yield i, c, True
        elif c in "'\"":
            quote = c
        elif c == "\\":
            if i + 1 >= len(text):
                raise VNLError("dangling backslash at the end", vnl, text)
            i += 1
            yield i, text[i], True
        else:
            yield i, c, False
        i += 1
    if quote:
        raise VNLError(f"unterminated {quote} quote", vnl, text)


def split(text: str, delims: str = "", vnl: str = "") -> list[str]:
    """Split ``text`` at unquoted delimiters, removing quotes and escapes and
    decoding unquoted %XX, as vdeplug4's tokenizer does."""
    vnl = vnl or text
    parts: list[bytearray] = [bytearray()]
    pending_hex: list[str] = []
    for _i, c, quoted in _scan(text, vnl):
        if pending_hex and not quoted:
            pending_hex.append(c)
            if len(pending_hex) == 3:
                code = "".join(pending_hex[1:])
                if not re.fullmatch(r"[0-9A-Fa-f]{2}", code):
                    raise VNLError(f"bad percent escape {'%' + code!r}", vnl, "%" + code)
                parts[-1].append(int(code, 16))
                pending_hex = []
            continue
        if pending_hex:
            raise VNLError("bad percent escape", vnl, "".join(pending_hex) + c)
        if not quoted and c == "%":
            pending_hex = ["%"]
        elif not quoted and c in delims:
            parts.append(bytearray())
        else:
            parts[-1].extend(c.encode("utf-8", "surrogateescape"))
    if pending_hex:
        raise VNLError("truncated percent escape", vnl, "".join(pending_hex))
    return [p.decode("utf-8", "surrogateescape") for p in parts]


def _unquoted_positions(text: str, ch: str, vnl: str) -> list[int]:
    return [i for i, c, quoted in _scan(text, vnl) if c == ch and not quoted]


# --------------------------------------------------------------- options


def _match(key: str, table: tuple[Option, ...], vnl: str, scheme: str) -> Option:
    """vdeplug4 matches keys by prefix, first option in table order wins."""
    if key:
        for opt in table:
            if opt.name.startswith(key):
                return opt
    known = ", ".join(o.name for o in table) or "none"
    raise VNLError(f"unknown option {key!r} for {scheme}:// (known: {known})", vnl, key)


def typed_options(
    items: Iterable[str], table: tuple[Option, ...], vnl: str, scheme: str, bare: str | None = None
) -> tuple[dict[str, Any], frozenset[str]]:
    """Turn ``key=value`` / ``key`` items into typed values, defaults filled in."""
    values: dict[str, Any] = {o.name: o.default for o in table}
    given: set[str] = set()
    for item in items:
        if item == "":
            continue
        key, eq, value = item.partition("=")
        if not eq and bare is not None and not any(o.name.startswith(key) for o in table):
            key, value = bare, item
        opt = _match(key, table, vnl, scheme)
        try:
            values[opt.name] = opt.convert(value)
        except (ValueError, KeyError) as e:
            reason = e.args[0] if e.args else "bad value"
            raise VNLError(f"bad value {value!r} for option {opt.name!r}: {reason}", vnl, item) from None
        given.add(opt.name)
    return values, frozenset(given)


# --------------------------------------------------------------- VNL level


def default_vnl() -> str:
    """What the empty VNL means: the first line of ``~/.vdeplug/default`` or
    ``~/.vde2/default.switch`` when those are regular files, the switch at
    ``~/.vde2/default.switch`` when it is a switch directory, else the system
    switch (vde plugin: /run/vde.ctl, then /tmp/vde.ctl)."""
    home = os.environ.get("HOME", "")
    for name in (".vdeplug/default", ".vde2/default.switch"):
        path = os.path.join(home, name) if home else ""
        try:
            st = os.lstat(path)
        except OSError:
            continue
        if stat.S_ISREG(st.st_mode):
            with open(path, encoding="utf-8", errors="surrogateescape") as f:
                line = f.readline().strip()
            return line or "vde://"
        return "vde://" + path
    return "vde://"


def split_scheme(vnl: str) -> tuple[str, str]:
    """(scheme, rest). No ``://`` means a vde switch path; empty means the default."""
    if vnl == "":
        vnl = default_vnl()
        if "://" not in vnl:
            return "vde", vnl
    scheme, sep, rest = vnl.partition("://")
    if not sep:
        return "vde", vnl
    if not _SCHEME.match(scheme):
        raise VNLError(f"bad scheme {scheme!r}", vnl, scheme)
    return scheme.lower(), rest


def parse_rest(
    vnl: str, scheme: str, rest: str, syntax: Syntax, table: tuple[Option, ...], bare: str | None = None
) -> Target:
    """Parse the text after ``scheme://`` by the plugin's syntax."""
    if syntax == "raw":
        address = "".join(split(rest, "", vnl)) if rest else ""
        return Target(vnl, scheme, address, *typed_options((), table, vnl, scheme))
    if syntax == "net":
        tokens = split(rest, "/", vnl)
        values, given = typed_options(tokens[1:], table, vnl, scheme, bare)
        return Target(vnl, scheme, tokens[0], values, given)
    # path syntax: path[opt/opt] — path to the first unquoted '[', options to the last ']'.
    opens = _unquoted_positions(rest, "[", vnl)
    if not opens:
        closes = _unquoted_positions(rest, "]", vnl)
        if closes:
            raise VNLError("']' without '['", vnl, rest[closes[0]:])
        return Target(vnl, scheme, "".join(split(rest, "", vnl)), *typed_options((), table, vnl, scheme, bare))
    start = opens[0]
    closes = [i for i in _unquoted_positions(rest, "]", vnl) if i > start]
    if not closes:
        raise VNLError("unterminated '['", vnl, rest[start:])
    path = "".join(split(rest[:start], "", vnl))
    items = split(rest[start + 1 : closes[-1]], "/", vnl)
    values, given = typed_options(items, table, vnl, scheme, bare)
    return Target(vnl, scheme, path, values, given)


def split_nested(vnl: str, rest: str) -> tuple[str, str]:
    """``head{inner}`` → (head, inner), as vdeplug4's vde_parsenestparms:
    the inner VNL is the text between the first ``{`` and the last ``}``,
    quotes kept (it is parsed again when opened)."""
    opens = _unquoted_positions(rest, "{", vnl)
    if not opens:
        raise VNLError("needs a nested VNL in braces, e.g. vlan://3{vde:///tmp/sw}", vnl, rest)
    closes = [i for i in _unquoted_positions(rest, "}", vnl) if i > opens[0]]
    if not closes:
        raise VNLError("unterminated '{'", vnl, rest[opens[0]:])
    tail = rest[closes[-1] + 1 :]
    if tail.strip():
        raise VNLError("text after the nested VNL", vnl, tail)
    inner = rest[opens[0] + 1 : closes[-1]]
    if not inner.strip():
        raise VNLError("empty nested VNL", vnl, rest[opens[0]:])
    return rest[: opens[0]], inner


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


_SUFFIX = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def size(text: str) -> int:
    """A size with an optional K/M/G/T suffix (powers of 1024), like strtoullm."""
    m = re.fullmatch(r"\s*(\d+)\s*([kKmMgGtT]?)\s*", text)
    if not m:
        raise ValueError("not a size (digits with optional K/M/G/T)")
    return int(m.group(1)) * _SUFFIX.get(m.group(2).lower(), 1)


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

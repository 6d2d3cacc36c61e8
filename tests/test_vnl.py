"""VNL parsing: vdeplug4's rules, clear errors, and property tests."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from vdeplug import registry
from vdeplug.vnl import (
    Option,
    VNLError,
    default_vnl,
    integer,
    parse_rest,
    size,
    split,
    split_scheme,
)

TABLE = (
    Option("port", integer(0, 65535), 4789),
    Option("vni", integer(0, 0xFFFFFF), 1),
    Option("v4", lambda t: t == "" or (_ for _ in ()).throw(ValueError("takes no value")), False),
    Option("v6", lambda t: True, False),
    Option("expiretime", integer(1), 128),
)


def net(rest: str):
    return parse_rest("x://" + rest, "x", rest, "net", TABLE)


def test_scheme_split():
    assert split_scheme("vxvde://239.1.2.3/ttl=2") == ("vxvde", "239.1.2.3/ttl=2")
    assert split_scheme("/tmp/sw") == ("vde", "/tmp/sw")
    assert split_scheme("VXVDE://x") == ("vxvde", "x")
    with pytest.raises(VNLError) as e:
        split_scheme("bad scheme://x")
    assert e.value.part == "bad scheme"


def test_default_vnl(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    assert default_vnl() == "vde://"
    (tmp_path / ".vde2").mkdir()
    (tmp_path / ".vde2" / "default.switch").write_text("vxvde://239.9.9.9\nignored\n")
    assert split_scheme("") == ("vxvde", "239.9.9.9")
    (tmp_path / ".vde2" / "default.switch").unlink()
    (tmp_path / ".vde2" / "default.switch").mkdir()
    assert split_scheme("") == ("vde", str(tmp_path / ".vde2" / "default.switch"))


def test_net_options_prefix_and_defaults():
    t = net("239.1.2.3/vni=5/exp=60/v6")
    assert t.address == "239.1.2.3"
    assert t["vni"] == 5 and t["expiretime"] == 60 and t["v6"] is True
    assert t["port"] == 4789 and t["v4"] is False
    assert t.given == {"vni", "expiretime", "v6"}
    # First match in table order wins: "v" is vni, like vdeplug4.
    assert net("/v=7")["vni"] == 7
    # Repeated key: last wins.
    assert net("/port=1/port=2")["port"] == 2


def test_errors_name_the_bad_part():
    with pytest.raises(VNLError) as e:
        net("239.1.2.3/colour=blue")
    assert e.value.part == "colour" and "colour" in str(e.value) and "known: port" in str(e.value)
    with pytest.raises(VNLError) as e:
        net("239.1.2.3/port=99999")
    assert e.value.part == "port=99999" and "65535" in str(e.value)
    with pytest.raises(VNLError) as e:
        net("239.1.2.3/vni=abc")
    assert "vni" in str(e.value) and "abc" in str(e.value)
    with pytest.raises(VNLError, match="unterminated"):
        net('"239.1.2.3')
    with pytest.raises(VNLError, match="percent"):
        net("a%zz")


def test_quotes_escapes_percent():
    assert split('a"/b"/c', "/") == ["a/b", "c"]
    assert split("a\\/b/c", "/") == ["a/b", "c"]
    assert split("a%2Fb/c", "/") == ["a/b", "c"]
    assert split("'%41'%41", "") == ["%41A"]
    assert split('udp"2000->h:3"', "") == ["udp2000->h:3"]


def test_path_syntax():
    table = (Option("port", integer(0, 65535)), Option("group", str), Option("mode", lambda t: int(t, 8)))
    t = parse_rest("vde:///tmp/sw[3]", "vde", "/tmp/sw[3]", "path", table, bare="port")
    assert t.address == "/tmp/sw" and t["port"] == 3
    t = parse_rest("s", "switch", "/tmp/sw[mode=0666/group=x]trailing", "path", table)
    assert t.address == "/tmp/sw" and t["mode"] == 0o666 and t["group"] == "x"
    t = parse_rest("s", "switch", '"/tmp/a[b"[port=1]', "path", table)
    assert t.address == "/tmp/a[b" and t["port"] == 1
    with pytest.raises(VNLError, match="unterminated"):
        parse_rest("s", "switch", "/tmp/sw[port=1", "path", table)


def test_size_suffixes():
    assert size("2M") == 2 << 20 and size("10") == 10 and size("1k") == 1024
    with pytest.raises(ValueError):
        size("two")


def test_unknown_scheme_lists_available():
    with pytest.raises(registry.UnknownScheme) as e:
        registry.resolve("nosuch://x")
    assert e.value.part == "nosuch"
    assert "ptp" in str(e.value) and "udp" in str(e.value)
    assert isinstance(e.value, ValueError)


# ------------------------------------------------------------------ properties

word = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=20)


@given(st.text(max_size=200))
@settings(max_examples=300, deadline=None)
def test_never_crashes_on_arbitrary_text(text):
    """Any text either resolves or raises VNLError (a ValueError)."""
    for candidate in (text, "vxvde://" + text, "udp://" + text, "ptp://" + text, "null://" + text):
        try:
            registry.resolve(candidate)
        except ValueError:
            pass


def _quote(s: str) -> str:
    return "".join("\\" + c if c in "/\\'\"%[]" else c for c in s)


@given(st.lists(word, min_size=1, max_size=6))
@settings(max_examples=300, deadline=None)
def test_split_round_trip(parts):
    """Escaping each part and joining with '/' splits back to the parts."""
    assert split("/".join(_quote(p) for p in parts), "/") == parts


@given(st.integers(0, 65535), st.integers(0, 0xFFFFFF), st.booleans())
@settings(max_examples=200, deadline=None)
def test_options_round_trip(port, vni, v6):
    text = f"239.0.0.1/port={port}/vni={vni}" + ("/v6" if v6 else "")
    t = net(text)
    assert (t["port"], t["vni"], t["v6"]) == (port, vni, v6)

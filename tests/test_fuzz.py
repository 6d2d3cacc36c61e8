"""Fuzzing the URL (VNL) parser with hypothesis: 100 000 inputs per CI run
(``VDEPLUG_FUZZ_CASES`` changes it), random text and VNL-shaped text built
from real schemes, option names, quotes, escapes, brackets and braces.
Every input either parses into a Target of a known plugin or raises
``VNLError`` naming a part of the input; nothing else may escape.
The Rust parsers are fuzzed by ``cargo test fuzz_`` (rust/fuzz.rs)."""

from __future__ import annotations

import os
import random

import vdeplug
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from vdeplug.registry import resolve

CASES = int(os.environ.get("VDEPLUG_FUZZ_CASES", "100000"))

SCHEMES = [*vdeplug.available(), "VXVDE", "nosuch", "1bad", ""]
PIECES = [
    "/",
    "//",
    "[",
    "]",
    "{",
    "}",
    "=",
    "'",
    '"',
    "\\",
    "%",
    "%4",
    "%41",
    "%zz",
    "->",
    ":",
    ",",
    ".",
    "port=",
    "vni=",
    "ttl=",
    "exp=",
    "mode=",
    "grp=",
    "hash=",
    "untag=",
    "tag=",
    "trunk",
    "v6",
    "x",
    "limit=",
    "files=",
    "239.1.2.3",
    "::1",
    "[::1]:5000",
    "5000",
    "/tmp/sw",
    "65536",
    "-1",
    "0x10",
    "10:11-12",
    "null://",
    "ptp:///tmp/l",
    "\x00",
    "é",
    " ",
]

vnl_text = st.builds(
    lambda scheme, sep, parts: scheme + sep + "".join(parts),
    st.sampled_from(SCHEMES),
    st.sampled_from(["://", "://", ":/", ""]),
    st.lists(st.one_of(st.sampled_from(PIECES), st.text(max_size=6)), max_size=12),
)


def check(vnl: str) -> None:
    """The invariant: a Target of a known plugin, or a VNLError naming the bad part."""
    try:
        plugin, target = resolve(vnl)
    except vdeplug.VNLError as e:
        assert str(e)
        if e.part:  # the message names the bad part
            assert e.part in e.vnl or e.part in str(e) or repr(e.part) in str(e), (e.part, str(e))
        return
    assert plugin.scheme == target.scheme
    assert target.scheme in vdeplug.available()
    if plugin.nests:
        assert target.nested


@settings(max_examples=min(CASES, 5000), deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(st.one_of(st.text(max_size=120), vnl_text))
def test_vnl_parser_hypothesis_structured(vnl):
    """hypothesis explores (and shrinks) VNL-shaped and random text."""
    check(vnl)


BATCH = 5000


@settings(max_examples=max(1, CASES // BATCH), deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(st.integers(0, 2**64))
def test_vnl_parser_100k_inputs(seed):
    """The bulk: hypothesis picks seeds, each seed drives BATCH inputs
    (hypothesis costs ~1 ms per example, the parser ~15 µs per input).
    A failure names the input."""
    rnd = random.Random(seed)
    alphabet = "".join(PIECES) + "abcxyz019:/[]{}'\"%=\x00\xff"
    for _ in range(BATCH):
        head = rnd.choice(SCHEMES) + rnd.choice(["://", "://", ""])
        if rnd.random() < 0.3:
            body = "".join(rnd.choice(alphabet) for _ in range(rnd.randrange(40)))
        else:
            body = "".join(rnd.choice(PIECES) for _ in range(rnd.randrange(14)))
        vnl = head + body
        try:
            check(vnl)
        except AssertionError as e:
            raise AssertionError(f"input {vnl!r}: {e}") from None

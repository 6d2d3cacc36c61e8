"""Property tests (hypothesis) of the Rust per-frame code through its
Python bindings: arbitrary bytes never crash, valid input round-trips."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from vdeplug import VNLError, _core, registry

macs = st.binary(min_size=6, max_size=6)


@given(st.binary(max_size=10000))
@settings(max_examples=400, deadline=None)
def test_frame_info_arbitrary_bytes(data):
    try:
        info = _core.frame_info(data)
    except ValueError as e:
        assert len(data) < 18 or len(data) > _core.ETH_BUFSIZE, e
        return
    assert 14 <= len(data) <= _core.ETH_BUFSIZE
    assert info["src"] == ":".join(f"{b:02x}" for b in data[6:12])
    assert info["multicast"] == bool(data[0] & 1)
    tagged = data[12:14] == b"\x81\x00"
    assert info["vlan"] == ((int.from_bytes(data[14:16], "big") & 0xFFF) if tagged else None)
    assert info["payload_len"] == len(data) - (18 if tagged else 14)


@given(st.integers(0, 0xFFFFFF), st.binary(max_size=2000))
@settings(max_examples=300, deadline=None)
def test_vxlan_round_trip(vni, payload):
    enc = _core.vxlan_encap(vni, payload)
    assert enc[:8] == bytes([8, 0, 0, 0]) + vni.to_bytes(3, "big") + b"\x00"
    assert _core.vxlan_decap(enc, vni, True) == payload
    with pytest.raises(ValueError, match="VNI"):
        _core.vxlan_decap(enc, (vni + 1) & 0xFFFFFF, False)


@given(st.binary(max_size=64), st.integers(0, 0xFFFFFF), st.booleans())
@settings(max_examples=400, deadline=None)
def test_vxlan_decap_arbitrary_bytes(data, vni, strict):
    try:
        out = _core.vxlan_decap(data, vni, strict)
    except ValueError:
        return
    assert len(data) >= 8 and data[0] & 0x08 and int.from_bytes(data[4:7], "big") == vni
    assert out == data[8:]


@given(st.lists(st.tuples(macs, st.integers(0, 4095), st.integers(0, 100)), max_size=300), st.integers(4, 256))
@settings(max_examples=150, deadline=None)
def test_mac_table_model(ops, size):
    """Against a dict model: a lookup returns the last value learned for that
    (mac, vlan), or nothing (evicted); never a wrong value; bounded size."""
    t = _core.MacTable(size, 1000, 7)
    model: dict[tuple[bytes, int], int] = {}
    for now, (mac, vlan, value) in enumerate(ops):
        r = t.learn(mac, vlan, value, now)
        if mac[0] & 1:
            assert r == "ignored"
            continue
        if r == "full":  # its bucket holds only recently active stations
            assert t.lookup(mac, vlan, now) in (None, model.get((mac, vlan)))
            continue
        model[(mac, vlan)] = value
        assert t.lookup(mac, vlan, now) == value, "just learned"
    for (mac, vlan), value in model.items():
        assert t.lookup(mac, vlan, len(ops)) in (None, value)
    assert t.len(len(ops)) <= t.capacity


def test_mac_table_expiry_and_forget():
    t = _core.MacTable(64, 10, 0)
    m = bytes([2, 0, 0, 0, 0, 1])
    assert t.learn(m, 0, 5, 100) == "new"
    assert t.lookup(m, 0, 110) == 5 and t.lookup(m, 0, 111) is None
    t.learn(m, 0, 5, 200)
    assert t.forget_value(5) == 1 and t.lookup(m, 0, 200) is None


def test_vxvde_grp_sets_vni_and_group():
    # The group's last 3 bytes: rust/transport/vxvde.rs grp_sets_the_last_three_bytes.
    _, t = registry.resolve("vxvde://239.1.2.3/grp=1000")
    assert t["grp"] == 1000
    _, t = registry.resolve("vxvde://239.1.2.3/v=12/exp=30/hash=64")
    assert (t["vni"], t["expiretime"], t["hashsize"]) == (12, 30, 64)


@pytest.mark.parametrize(
    "url,part",
    [
        ("vxvde://10.0.0.1,239.1.1.1", "239.1.1.1"),
        ("vxlan://239.0.0.1/vni=16777216", "vni=16777216"),
        ("vxlan://not-an-ip", "not-an-ip"),
        ("vxvde://239.0.0.1/v6", "239.0.0.1"),
        ("vxvde://239.0.0.1/bogus=1", "bogus"),
        ("tap://a/b", "a/b"),
    ],
)
def test_overlay_url_errors(url, part):
    import vdeplug

    with pytest.raises(VNLError) as e:
        vdeplug.open(url)
    assert e.value.part == part

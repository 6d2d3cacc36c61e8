"""vdeplug._record behaves as the dataclasses it stands in for (start-up
time: it imports neither dataclasses nor typing)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from vdeplug._record import field, fields, record


@record
class Plain:
    a: int
    b: str = "x"
    c: list[int] = field(default_factory=list)


@record(frozen=True)
class Frozen:
    a: int
    b: tuple[int, ...] = ()


def test_init_defaults_factories_repr_eq():
    p = Plain(1)
    assert (p.a, p.b, p.c) == (1, "x", [])
    assert Plain(1).c is not Plain(1).c, "a fresh default per instance"
    assert Plain(2, b="y", c=[3]) == Plain(2, "y", [3])
    assert Plain(1) != Plain(2) and Plain(1) != Frozen(1)
    assert repr(Plain(1, "q")) == "Plain(a=1, b='q', c=[])"
    assert [f.name for f in fields(Plain)] == ["a", "b", "c"] == [f.name for f in fields(p)]
    p.a = 5
    assert p.a == 5
    with pytest.raises(TypeError):
        hash(p)


@pytest.mark.parametrize(
    "make",
    [lambda: Plain(), lambda: Plain(1, "x", [], 4), lambda: Plain(1, d=2), lambda: Plain(1, a=2)],
)
def test_bad_arguments_are_type_errors(make):
    with pytest.raises(TypeError):
        make()


def test_frozen_is_immutable_and_hashable():
    f = Frozen(1, (2,))
    with pytest.raises(AttributeError):
        f.a = 2  # type: ignore[misc]
    with pytest.raises(AttributeError):
        del f.a  # type: ignore[misc]
    assert hash(f) == hash(Frozen(1, (2,)))
    assert {f, Frozen(1, (2,))} == {f}


def test_import_vdeplug_loads_neither_typing_nor_dataclasses():
    import vdeplug

    # -S: no site (its .pth files may import typing themselves); vdeplug's own directory only.
    where = os.path.dirname(os.path.dirname(vdeplug.__file__))
    code = f"import sys; sys.path.insert(0, {where!r}); import vdeplug; print(sorted(m for m in ('typing', 'dataclasses', 'inspect', 'asyncio') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", out

"""A light ``dataclass`` for start-up time.

``dataclasses`` imports ``inspect`` (and with it ``ast``, ``dis``,
``tokenize``), about 8 ms, and ``typing`` another 8: together more than
``vde_plug``'s own work at start-up. Our records need only ``__init__`` from
the annotated fields (with defaults and ``field(default_factory=...)``),
``__repr__``, ``__eq__`` and, when frozen, immutability and ``__hash__``.
Type checkers see the real ``dataclass`` (``TYPE_CHECKING`` below), so the
classes are checked exactly as dataclasses.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing
if TYPE_CHECKING:
    from dataclasses import dataclass as record
    from dataclasses import field, fields
else:
    _MISSING = object()

    class _Factory:
        __slots__ = ("make",)

        def __init__(self, make):
            self.make = make

    def field(*, default_factory):
        """``dataclasses.field(default_factory=...)``."""
        return _Factory(default_factory)

    def fields(obj):
        """The fields of a record (objects with a ``name``), in order."""
        klass = obj if isinstance(obj, type) else type(obj)
        return tuple(_Field(n) for n in klass.__record_fields__)

    class _Field:
        __slots__ = ("name",)

        def __init__(self, name):
            self.name = name

    def _names(cls):
        names = []
        for klass in reversed(cls.__mro__):
            for name, ann in vars(klass).get("__annotations__", {}).items():
                if not str(ann).startswith(("ClassVar", "typing.ClassVar")) and name not in names:
                    names.append(name)
        return names

    def _build(cls, frozen):
        names = _names(cls)
        defaults = {}
        for base in reversed(cls.__mro__[1:]):
            defaults.update(vars(base).get("__record_defaults__", {}))
        own = {n: vars(cls)[n] for n in names if n in vars(cls)}
        for n, d in own.items():
            if isinstance(d, _Factory):
                delattr(cls, n)  # as dataclasses: plain defaults stay class attributes
        defaults.update(own)
        required = [n for n in names if n not in defaults]
        first_default = next((i for i, n in enumerate(names) if n in defaults), len(names))
        if any(n in required for n in names[first_default:]):
            raise TypeError(f"{cls.__name__}: a field without a default follows one with a default")
        setter = object.__setattr__

        def __init__(self, *args, **kw):
            if len(args) > len(names):
                raise TypeError(f"{cls.__name__}() takes {len(names)} arguments, {len(args)} given")
            values = dict(zip(names, args))
            for k, v in kw.items():
                if k not in names:
                    raise TypeError(f"{cls.__name__}() got an unexpected keyword argument {k!r}")
                if k in values:
                    raise TypeError(f"{cls.__name__}() got multiple values for argument {k!r}")
                values[k] = v
            for n in names:
                if n in values:
                    v = values[n]
                elif n in defaults:
                    d = defaults[n]
                    v = d.make() if isinstance(d, _Factory) else d
                else:
                    raise TypeError(f"{cls.__name__}() missing required argument {n!r}")
                setter(self, n, v)
            post = getattr(self, "__post_init__", None)
            if post is not None:
                post()

        def __repr__(self):
            inner = ", ".join(f"{n}={getattr(self, n)!r}" for n in names)
            return f"{cls.__qualname__}({inner})"

        def __eq__(self, other):
            if other.__class__ is not self.__class__:
                return NotImplemented
            return all(getattr(self, n) == getattr(other, n) for n in names)

        cls.__init__ = __init__
        cls.__repr__ = __repr__
        cls.__eq__ = __eq__
        cls.__record_fields__ = tuple(names)
        cls.__record_defaults__ = defaults
        if frozen:

            def __setattr__(self, name, value):
                raise AttributeError(f"cannot assign to field {name!r} of frozen {cls.__name__}")

            def __delattr__(self, name):
                raise AttributeError(f"cannot delete field {name!r} of frozen {cls.__name__}")

            def __hash__(self):
                return hash(tuple(getattr(self, n) for n in names))

            cls.__setattr__ = __setattr__
            cls.__delattr__ = __delattr__
            cls.__hash__ = __hash__
        else:
            cls.__hash__ = None
        return cls

    def record(cls=None, *, frozen=False):
        """``@record`` or ``@record(frozen=True)``, as ``@dataclass``."""
        if cls is None:
            return lambda c: _build(c, frozen)
        return _build(cls, frozen)


__all__ = ["field", "fields", "record"]

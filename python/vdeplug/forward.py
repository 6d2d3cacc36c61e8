"""``join(a, b)``: the cable between two connections (``vde_plug A B``).
Two built-in endpoints are joined by the Rust loop with the GIL released;
a third-party Python endpoint falls back to a selectors loop here."""

from __future__ import annotations

from . import _core
from ._record import record
from .connection import Connection


@record(frozen=True)
class JoinEnd:
    """Why the join stopped: which side (0 or 1) and, unless that side
    just hung up, the error."""

    side: int
    error: str | None = None

    @property
    def closed(self) -> bool:
        """The side hung up (no error)."""
        return self.error is None

    @property
    def reason(self) -> str:
        """``"closed"`` or the error, for messages."""
        return "closed" if self.error is None else self.error


def join(a: Connection, b: Connection, iplog: bool = False) -> JoinEnd:
    """Forward frames both ways until one side hangs up or fails. With
    ``iplog``, each source IP address seen in frames from ``b`` is logged to
    syslog once (``vde_plug -L``; built-in endpoints only)."""
    ea, eb = a.endpoint, b.endpoint
    if isinstance(ea, _core.Endpoint) and isinstance(eb, _core.Endpoint):
        side, error = _core.forward(ea, eb, iplog)
        return JoinEnd(side, error)
    return _join_python(a, b)


def _join_python(a: Connection, b: Connection) -> JoinEnd:
    # Slow path, only for plugins written in Python.
    ends = (a, b)
    import selectors  # only Python endpoints need it: not at start-up

    with selectors.DefaultSelector() as sel:
        for side, c in enumerate(ends):
            sel.register(c.fileno(), selectors.EVENT_READ, side)
        while True:
            for key, _ in sel.select(0.2):
                side = key.data
                src, dst = ends[side], ends[1 - side]
                try:
                    while (frame := src.recv_nowait()) is not None:
                        if frame == b"":
                            return JoinEnd(side)
                        dst.send(frame)
                except BrokenPipeError:
                    return JoinEnd(1 - side)
                except OSError as e:
                    return JoinEnd(side, str(e))

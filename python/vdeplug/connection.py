"""The user-facing ``Connection``: one plugged-in endpoint with
send/recv/fileno/close and counters. Frames move in Rust; this only wraps."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Iterator, Mapping

from . import _core
from .registry import OpenArgs, resolve

ETH_BUFSIZE: int = _core.ETH_BUFSIZE


@dataclass(frozen=True)
class Stats:
    frames_in: int = 0
    bytes_in: int = 0
    frames_out: int = 0
    bytes_out: int = 0
    drops_in: int = 0
    drops_out: int = 0
    #: transport-specific counters, e.g. vxvde's unicast_out / multicast_out
    extra: Mapping[str, int] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: Mapping[str, int]) -> "Stats":
        names = {f.name for f in fields(cls)} - {"extra"}
        return cls(**{k: v for k, v in d.items() if k in names}, extra={k: v for k, v in d.items() if k not in names})


class Connection:
    """A plug into a virtual network. Use as a context manager."""

    def __init__(self, endpoint: Any, url: str = "") -> None:
        self.endpoint = endpoint
        self.url = url

    def send(self, frame: bytes) -> int:
        """Send one Ethernet frame (no FCS). Returns its length, or 0 when it
        was dropped (shorter than 14 bytes, oversized, or no room now)."""
        return int(self.endpoint.send(bytes(frame)))

    def recv(self, max: int = ETH_BUFSIZE, timeout: float | None = None) -> bytes:
        """The next frame (at most ``max`` bytes of it). Blocks, with the GIL
        released; ``b""`` means the peer went away; raises ``TimeoutError``
        when ``timeout`` seconds pass first."""
        frame = self.endpoint.recv(max, timeout)
        if frame is None:
            raise TimeoutError(f"no frame within {timeout} s")
        return bytes(frame)

    def recv_nowait(self) -> bytes | None:
        """A frame if one is ready, ``b""`` on hang-up, else None."""
        got = self.endpoint.recv_nowait()
        return None if got is None else bytes(got)

    def fileno(self) -> int:
        """Readable when ``recv`` has a frame (or a hang-up) for you."""
        return int(self.endpoint.fileno())

    def ctl_fileno(self) -> int | None:
        f = getattr(self.endpoint, "ctl_fileno", None)
        return f() if f else None

    @property
    def stats(self) -> Stats:
        s = getattr(self.endpoint, "stats", None)
        return Stats.from_dict(s) if s else Stats()

    @property
    def closed(self) -> bool:
        return bool(getattr(self.endpoint, "closed", False))

    def close(self) -> None:
        self.endpoint.close()

    def __enter__(self) -> "Connection":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __iter__(self) -> Iterator[bytes]:
        """Frames until the peer goes away."""
        while frame := self.recv():
            yield frame

    def __repr__(self) -> str:
        return f"<vdeplug.Connection {self.url!r}{' closed' if self.closed else ''}>"


def open(
    url: str,
    descr: str | None = None,
    mode: int | None = None,
    group: str | None = None,
    port: int | None = None,
) -> Connection:
    """Plug into the network named by ``url`` (a VNL, e.g. ``vxvde://239.1.2.3``,
    ``tap://t0``, ``/tmp/sw``). ``mode``/``group`` apply to sockets we create;
    ``descr`` is shown by switches. Malformed URLs raise ``VNLError``."""
    plugin, target = resolve(url)
    args = OpenArgs(descr=descr if descr is not None else "vdeplug:", mode=mode, group=group, port=port)
    return Connection(plugin.open(target, args), url)

"""The user-facing ``Connection``: one plugged-in endpoint with
send/recv/fileno/close and counters. Frames move in Rust; this only wraps."""

from __future__ import annotations

import atexit
from collections.abc import Iterable, Iterator, Mapping

from . import _core
from ._record import field, fields, record
from .registry import OpenArgs, resolve

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

ETH_BUFSIZE: int = _core.ETH_BUFSIZE
_MAX_BATCH: int = _core.MAX_BATCH

# Threads blocked in a Rust wait return before the interpreter finalizes
# (a daemon thread in recv() would otherwise abort the process at exit).
atexit.register(_core._finalize)


def _frame(frame: Any) -> bytes:
    """A frame argument as bytes: any bytes-like object, never an int
    (``bytes(1500)`` is 1500 zero bytes) or a str."""
    if isinstance(frame, bytes):
        return frame
    if isinstance(frame, (int, str)):
        raise TypeError(f"a frame must be bytes-like, not {type(frame).__name__}")
    return bytes(memoryview(frame))


@record(frozen=True)
class Stats:
    """An endpoint's counters: frames and bytes each way, frames dropped as
    malformed or unsendable, and the transport's own counters in ``extra``."""

    frames_in: int = 0
    bytes_in: int = 0
    frames_out: int = 0
    bytes_out: int = 0
    drops_in: int = 0
    drops_out: int = 0
    #: transport-specific counters, e.g. vxvde's unicast_out / multicast_out /
    #: peer_floods_out (floods to unicast peers, without multicast)
    extra: Mapping[str, int] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: Mapping[str, int]) -> Stats:
        names = {f.name for f in fields(cls)} - {"extra"}
        return cls(**{k: v for k, v in d.items() if k in names}, extra={k: v for k, v in d.items() if k not in names})


class Connection:
    """A plug into a virtual network. Use as a context manager."""

    def __init__(self, endpoint: Any, url: str = "") -> None:
        self.endpoint = endpoint
        self.url = url

    def send(self, frame: bytes) -> int:
        """Send one Ethernet frame (no FCS). Returns its length, or 0 when it
        was dropped (shorter than 14 bytes, oversized, or no room now).
        Raises ``TypeError`` for anything but a bytes-like object."""
        return int(self.endpoint.send(_frame(frame)))

    def recv(self, max: int = ETH_BUFSIZE, timeout: float | None = None) -> bytes:
        """The next frame (at most ``max`` bytes of it). Blocks, with the GIL
        released; ``b""`` means the peer hung up, which only transports with
        a connection can tell (vde://, switch ports, cmd://, stdio,
        seqpacket://): datagram ones (ptp://, udp://, vxlan://, vxvde://) and
        tap:// never do, so give those a timeout. Raises ``TimeoutError``
        when ``timeout`` seconds pass first (``None`` or ``math.inf``: wait
        forever; negative or NaN: ``ValueError``)."""
        if max < 1:
            raise ValueError("max must be at least 1")
        frame = self.endpoint.recv(max, timeout)
        if frame is None:
            raise TimeoutError(f"no frame within {timeout} s")
        return bytes(frame)

    def recv_nowait(self) -> bytes | None:
        """A frame if one is ready, ``b""`` on hang-up, else None."""
        got = self.endpoint.recv_nowait()
        return None if got is None else bytes(got)

    def recv_many(self, n: int = 64, timeout: float | None = None) -> list[bytes]:
        """Up to ``n`` frames, as many as are ready, in one batched receive
        (Rust recvmmsg, 64 per system call): for moving frames at high rates
        from Python. Blocks for the first one; ``[]`` means the peer hung up
        (see ``recv``); raises ``TimeoutError`` when ``timeout`` seconds pass
        first.

        >>> import vdeplug
        >>> a, b = vdeplug.open("udp://127.0.0.1:47001->127.0.0.1:47002"), vdeplug.open("udp://127.0.0.1:47002->127.0.0.1:47001")
        >>> a.send_many([bytes([255] * 6 + [2] * 6 + [8, 0] + [i] * 46) for i in range(3)])
        3
        >>> [f[14] for f in b.recv_many(10, timeout=1)]
        [0, 1, 2]
        >>> a.close(); b.close()
        """
        many = getattr(self.endpoint, "recv_many", None)
        if many is None:  # a third-party Python endpoint
            first = self.recv(timeout=timeout)
            frames = [first] if first else []
            while first and len(frames) < n and (f := self.recv_nowait()):
                frames.append(f)
            return frames
        got = many(n, timeout)
        if got is None:
            raise TimeoutError(f"no frame within {timeout} s")
        frames = [bytes(f) for f in got]
        # One receive takes at most 64: more while the last one came back full.
        while frames and len(frames) < n and len(got) == min(n - len(frames) + len(got), _MAX_BATCH):
            got = many(n - len(frames), 0)
            if not got:
                break
            frames.extend(bytes(f) for f in got)
        return frames

    def send_many(self, frames: Iterable[bytes]) -> int:
        """Send frames with batched system calls (sendmmsg, UDP GSO).
        Returns how many went out; the rest were dropped and counted."""
        batch = [_frame(f) for f in frames]
        many = getattr(self.endpoint, "send_many", None)
        if many is None:
            return sum(1 for f in batch if self.endpoint.send(f))
        return int(many(batch))

    def fileno(self) -> int:
        """Readable when ``recv`` has a frame (or a hang-up) for you."""
        return int(self.endpoint.fileno())

    def ctl_fileno(self) -> int | None:
        """The control fd (readable when the peer hangs up), if the transport has one."""
        f = getattr(self.endpoint, "ctl_fileno", None)
        return f() if f else None

    def wirefilter(self, command: str) -> str:
        """Run one of wirefilter's console commands on a ``wirefilter://``
        connection (``"delay 20"``, ``"loss LR5"``, ``"bandwidth 125000"``,
        ``"showinfo"``); it applies from the next frame. Returns the answer
        as the ``mgmt=`` socket gives it (without the prompt). Raises
        ``ValueError`` when the command fails (the answer's last line, e.g.
        ``1022 Invalid argument``) or no wirefilter is on this connection."""
        if "\n" in command:
            raise ValueError("one command at a time (no newline)")
        run = getattr(self.endpoint, "command", None)
        answer = run(command) if run else None
        if answer is None:
            raise ValueError(f"no wirefilter:// on {self.url!r}")
        last = answer.rstrip("\n").rsplit("\n", 1)[-1]
        if last and not last.startswith("1000"):
            raise ValueError(f"{command!r}: {last}")
        return str(answer)

    @property
    def stats(self) -> Stats:
        s = getattr(self.endpoint, "stats", None)
        return Stats.from_dict(s) if s else Stats()

    @property
    def closed(self) -> bool:
        return bool(getattr(self.endpoint, "closed", False))

    def close(self) -> None:
        """Unplug: sockets this connection created are removed, commands stopped."""
        self.endpoint.close()

    def __enter__(self) -> Connection:
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

"""myplugin://address/myarg=value — a third-party plugin written in Python:
a loopback that returns every frame it is sent, with ``myarg`` appended to
its payload, so a test can see the option arrived."""

from __future__ import annotations

import os
from collections import deque

from vdeplug import Option, Plugin


class LoopEndpoint:
    def __init__(self, address: str, myarg: str) -> None:
        self.address, self.myarg = address, myarg
        self.queue: deque[bytes] = deque()
        self.rfd, self.wfd = os.pipe()

    def send(self, frame: bytes) -> int:
        self.queue.append(frame + self.myarg.encode())
        os.write(self.wfd, b"x")
        return len(frame)

    def recv_nowait(self) -> bytes | None:
        if not self.queue:
            return None
        os.read(self.rfd, 1)
        return self.queue.popleft()

    def recv(self, max: int = 9234, timeout: float | None = None) -> bytes | None:
        import select

        if not self.queue and not select.select([self.rfd], [], [], timeout)[0]:
            return None
        got = self.recv_nowait()
        return got[:max] if got is not None else None

    def fileno(self) -> int:
        return self.rfd

    def close(self) -> None:
        os.close(self.rfd)
        os.close(self.wfd)


class MyPlugin(Plugin):
    scheme = "myplugin"
    syntax = "net"
    options = (Option("myarg", str, ""),)

    def open(self, target, args):
        return LoopEndpoint(target.address, target["myarg"])

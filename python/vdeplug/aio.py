"""asyncio face of ``Connection``: ``await vdeplug.aopen(url)``.

Receiving never blocks the event loop: a frame that is ready is taken at
once (``recv_nowait``), otherwise the loop waits on the connection's fd
(``add_reader``). Sending may have to wait for room (a full peer queue, a
full pipe), so it runs on one worker thread per connection, which keeps
the frames in order; the Rust send releases the GIL meanwhile.

>>> import asyncio, vdeplug
>>> async def demo():
...     a = await vdeplug.aopen("udp://127.0.0.1:47011->127.0.0.1:47012")
...     b = await vdeplug.aopen("udp://127.0.0.1:47012->127.0.0.1:47011")
...     async with a, b:
...         await a.send(bytes([255] * 6 + [2] * 6 + [8, 0]) + b"hi" * 23)
...         frame = await b.recv(timeout=1)
...     return frame[14:16]
>>> asyncio.run(demo())
b'hi'
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from .connection import Connection, Stats, _frame
from .connection import open as _open


class AsyncConnection:
    """A ``Connection`` for asyncio code. Many can share one loop."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self._sender: ThreadPoolExecutor | None = None
        self._reading = asyncio.Lock()

    @property
    def url(self) -> str:
        return self.conn.url

    @property
    def stats(self) -> Stats:
        return self.conn.stats

    async def _readable(self) -> None:
        """Until the data fd (or the control fd: hang-up) is readable."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()

        def ready() -> None:
            if not fut.done():
                fut.set_result(None)

        fds = [self.conn.fileno()]
        ctl = self.conn.ctl_fileno()
        if ctl is not None:
            fds.append(ctl)
        for fd in fds:
            loop.add_reader(fd, ready)
        try:
            await fut
        finally:
            for fd in fds:
                loop.remove_reader(fd)

    async def recv(self, timeout: float | None = None) -> bytes:
        """The next frame; ``b""`` when the peer went away. Raises
        ``TimeoutError`` after ``timeout`` seconds."""
        async with self._reading:
            frame = self.conn.recv_nowait()
            if frame is not None:
                return frame
            try:
                return await asyncio.wait_for(self._next(), timeout)
            except asyncio.TimeoutError:  # not yet the builtin before 3.11
                raise TimeoutError(f"no frame within {timeout} s") from None

    async def _next(self) -> bytes:
        while (frame := self.conn.recv_nowait()) is None:
            await self._readable()
        return frame

    async def recv_many(self, n: int = 64, timeout: float | None = None) -> list[bytes]:
        """Up to ``n`` ready frames (at least one); ``[]`` when the peer went away."""
        first = await self.recv(timeout)
        if not first:
            return []
        frames = [first]
        if n > 1:
            try:
                frames.extend(self.conn.recv_many(n - 1, timeout=0))
            except TimeoutError:
                pass  # nothing more ready
        return frames

    def _executor(self) -> ThreadPoolExecutor:
        if self._sender is None:
            self._sender = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"vdeplug-send {self.url}")
        return self._sender

    async def send(self, frame: bytes) -> int:
        """Send one frame; its length, or 0 when it was dropped (counted)."""
        loop = asyncio.get_running_loop()
        data = _frame(frame)  # a TypeError here, not in the worker
        return await loop.run_in_executor(self._executor(), self.conn.send, data)

    async def send_many(self, frames: Iterable[bytes]) -> int:
        """Send frames in batches; how many went out."""
        loop = asyncio.get_running_loop()
        batch = [_frame(f) for f in frames]
        return await loop.run_in_executor(self._executor(), self.conn.send_many, batch)

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._frames()

    async def _frames(self) -> AsyncIterator[bytes]:
        while frame := await self.recv():
            yield frame

    async def aclose(self) -> None:
        """Wait for pending sends, then close the connection."""
        if self._sender is not None:
            self._sender.shutdown(wait=True)
            self._sender = None
        self.conn.close()

    async def __aenter__(self) -> AsyncConnection:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"<vdeplug.AsyncConnection {self.url!r}>"


async def aopen(url: str, **kwargs: Any) -> AsyncConnection:
    """``vdeplug.open`` for asyncio: opening (which may connect to a switch
    or wait for a ptp peer's probe) runs in a thread."""
    return AsyncConnection(await asyncio.to_thread(_open, url, **kwargs))

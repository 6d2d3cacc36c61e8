"""Protocols for type checkers and plugin authors (``vdeplug.registry.Endpoint``),
kept out of the start-up path: importing typing costs ~8 ms."""

from __future__ import annotations

from typing import Protocol, runtime_checkable


@runtime_checkable
class Endpoint(Protocol):
    """What a plugin's ``open`` returns: a ``vdeplug._core.Endpoint`` for
    built-ins, or any Python object with these methods."""

    def recv(self, max: int = ..., timeout: float | None = None) -> bytes | None: ...
    def recv_nowait(self) -> bytes | None: ...
    def send(self, frame: bytes) -> int: ...
    def fileno(self) -> int: ...
    def close(self) -> None: ...

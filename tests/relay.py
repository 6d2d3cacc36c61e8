"""A UDP relay between two ends on loopback (a man in the middle for the
tests of agno:// and seal://): records what it forwards, and can hold it
back or inject datagrams."""

from __future__ import annotations

import socket
import threading
import time

from conftest import free_udp_port


class Relay:
    """A UDP relay between two ends on loopback that records what it
    forwards, and can hold it back or inject datagrams."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.05)
        self.port = self.sock.getsockname()[1]
        self.a, self.b = free_udp_port(), free_udp_port()
        self.seen: list[tuple[int, bytes, float]] = []  # (source port, datagram, time)
        self.hold = False
        self.stop = False
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def vnl(self, side: str) -> str:
        """The udp:// VNL of end "a" or "b"."""
        port = self.a if side == "a" else self.b
        return f"udp://127.0.0.1:{port}->127.0.0.1:{self.port}"

    def run(self) -> None:
        while not self.stop:
            try:
                data, (_, port) = self.sock.recvfrom(65536)
            except (TimeoutError, OSError):
                continue
            self.seen.append((port, data, time.time()))
            if not self.hold and port in (self.a, self.b):
                self.sock.sendto(data, ("127.0.0.1", self.b if port == self.a else self.a))

    def sent_by(self, side: str) -> list[bytes]:
        port = self.a if side == "a" else self.b
        return [d for p, d, _ in self.seen if p == port]

    def inject(self, data: bytes, side: str) -> None:
        self.sock.sendto(data, ("127.0.0.1", self.a if side == "a" else self.b))

    def close(self) -> None:
        self.stop = True
        self.thread.join(2)
        self.sock.close()

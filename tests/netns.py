"""Network namespaces for tests: hosts on a private bridged LAN, built with
the public ``vdeplug.lab`` (``Lab.lan``) and removed by it. Nothing leaves
these namespaces."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from vdeplug.lab import Host, Lab, can_build

HERE = Path(__file__).parent

needs_netns = pytest.mark.skipif(can_build() is not None, reason=can_build() or "")


class Lan:
    """``n`` hosts (vdeplug.lab Hosts: ``netns``, ``ip4``, ``ip6``, ``run``,
    ``popen``, ``ping``…) with eth0 on one bridge (``bridge``: its netns)."""

    def __init__(self, n: int, multicast: bool = True, mtu: int | None = None) -> None:
        self.lab = Lab()
        try:
            self.hosts = self.lab.lan(n, multicast=multicast, mtu=mtu)
        except BaseException:
            self.lab.close()
            raise
        self.bridge = self.lab.bridge or ""

    def destroy(self) -> None:
        self.lab.close()


class Agent:
    """A Python process inside a namespace driving vdeplug connections over
    JSON lines (tests/netns_agent.py)."""

    def __init__(self, host: Host) -> None:
        self.p = host.popen(sys.executable, str(HERE / "netns_agent.py"), stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def call(self, **req: Any) -> Any:
        assert self.p.stdin and self.p.stdout
        self.p.stdin.write(json.dumps(req) + "\n")
        self.p.stdin.flush()
        line = self.p.stdout.readline()
        if not line:
            err = self.p.stderr.read() if self.p.stderr else ""
            raise RuntimeError(f"agent died: {err}")
        resp = json.loads(line)
        if "error" in resp:
            raise RuntimeError(resp["error"])
        return resp["result"]

    def open(self, url: str) -> int:
        return int(self.call(op="open", url=url))

    def send(self, cid: int, frame: bytes) -> int:
        return int(self.call(op="send", id=cid, frame=frame.hex()))

    def recv(self, cid: int, timeout: float = 2.0) -> bytes | None:
        r = self.call(op="recv", id=cid, timeout=timeout)
        return None if r is None else bytes.fromhex(r)

    def stats(self, cid: int) -> dict[str, int]:
        return dict(self.call(op="stats", id=cid))

    def close(self, cid: int) -> None:
        self.call(op="close", id=cid)


@pytest.fixture
def lan_factory():
    lans: list[Lan] = []

    def make(n: int, multicast: bool = True, mtu: int | None = None) -> Lan:
        lan = Lan(n, multicast, mtu)
        lans.append(lan)
        return lan

    yield make
    for lan in lans:
        lan.destroy()

"""Runs inside a test namespace: JSON-line commands on stdin drive vdeplug
connections (open/send/recv/stats/close), answers on stdout."""

from __future__ import annotations

import json
import sys

import vdeplug


def main() -> None:
    conns: dict[int, vdeplug.Connection] = {}
    for line in sys.stdin:
        req = json.loads(line)
        try:
            op = req["op"]
            if op == "open":
                cid = len(conns) + 1
                conns[cid] = vdeplug.open(req["url"])
                result: object = cid
            elif op == "send":
                result = conns[req["id"]].send(bytes.fromhex(req["frame"]))
            elif op == "recv":
                try:
                    result = conns[req["id"]].recv(timeout=req["timeout"]).hex()
                except TimeoutError:
                    result = None
            elif op == "stats":
                s = conns[req["id"]].stats
                result = {**{k: getattr(s, k) for k in ("frames_in", "frames_out", "drops_in", "drops_out")}, **s.extra}
            elif op == "close":
                conns.pop(req["id"]).close()
                result = None
            else:
                raise ValueError(f"bad op {op}")
            print(json.dumps({"result": result}), flush=True)
        except Exception as e:  # reported to the test, which fails with it
            print(json.dumps({"error": f"{type(e).__name__}: {e}"}), flush=True)


if __name__ == "__main__":
    main()

"""The attacker of the sealed-overlay test (run in its own namespace):
joins the vxvde group, records sealed datagrams, then sends tampered,
replayed, wrong-key and forged-sender copies of them to the group as fast
as it can for SECONDS. Prints how many of each it sent, and how many
datagrams came back to it unicast (`stolen`: frames an overlay sent to
the attacker because a forged datagram taught it a MAC lives there).

python3 seal_attacker.py GROUP PORT SECONDS
"""

import os
import socket
import struct
import sys
import time


def main() -> None:
    group, port, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    rx.bind((group, port))
    rx.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, struct.pack("4s4s", socket.inet_aton(group), socket.inet_aton("0.0.0.0")))
    rx.settimeout(10)
    seen: list[bytes] = []
    while len(seen) < 50:
        d = rx.recv(65536)
        if len(d) > 8 + 60 and d[8 + 12 : 8 + 14] == b"\x88\xb6":
            seen.append(d)
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tx.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 1)
    tx.setblocking(False)
    sent = {"tampered": 0, "replayed": 0, "wrong_key": 0, "forged": 0, "stolen": 0}
    end = time.monotonic() + seconds
    k = 0
    while time.monotonic() < end:
        d = bytearray(seen[k % len(seen)])
        kind = ("tampered", "replayed", "wrong_key", "forged")[k % 4]
        if kind == "tampered":
            d[8 + 50] ^= 0x20
        elif kind == "wrong_key":
            d[8 + 15 : 8 + 19] = os.urandom(4)
        elif kind == "forged":
            d[8 + 19 : 8 + 35] = os.urandom(16)
        try:
            tx.sendto(bytes(d), (group, port))
            sent[kind] += 1
        except BlockingIOError:
            time.sleep(0.001)
        k += 1
        while True:
            try:
                tx.recv(65536)
                sent["stolen"] += 1
            except OSError:
                break
    time.sleep(1)
    tx.setblocking(True)
    tx.settimeout(0.5)
    try:
        while True:
            tx.recv(65536)
            sent["stolen"] += 1
    except OSError:
        pass
    print(" ".join(f"{a}={b}" for a, b in sent.items()), flush=True)


if __name__ == "__main__":
    main()

"""UDP probe for the wirefilter accuracy tests (run inside a namespace).

python3 wf_udp.py recv ADDR PORT IDLE     # prints JSON: seqs received, bytes, first/last arrival
python3 wf_udp.py send ADDR PORT COUNT SIZE RATE  # COUNT datagrams of SIZE bytes at RATE bytes/s (0: flat out)
"""

import json
import socket
import struct
import sys
import time


def main() -> None:
    mode, addr, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    if mode == "recv":
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
        s.bind((addr, port))
        print("ready", flush=True)
        idle = float(sys.argv[4])
        seqs, nbytes, first, last = [], 0, 0.0, 0.0
        s.settimeout(30)
        while True:
            try:
                d = s.recv(65536)
            except socket.timeout:  # TimeoutError from Python 3.10
                break
            now = time.monotonic()
            if not seqs:
                first = now
            seqs.append(struct.unpack(">I", d[:4])[0])
            nbytes += len(d)
            last = now
            s.settimeout(idle)
        print(json.dumps({"seqs": seqs, "bytes": nbytes, "first": first, "last": last}))
    else:
        count, size, rate = int(sys.argv[4]), int(sys.argv[5]), float(sys.argv[6])
        t0 = time.monotonic()
        for i in range(count):
            if rate:
                wait = t0 + i * size / rate - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
            s.sendto(struct.pack(">I", i) + bytes(size - 4), (addr, port))


main()

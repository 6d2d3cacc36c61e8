"""A checksummed TCP transfer for the offload tests (run inside a namespace).

python3 tcp_xfer.py serve ADDR PORT          # prints "<bytes> <sha256>" of what it got
python3 tcp_xfer.py send ADDR PORT NBYTES SEED  # prints "<bytes> <sha256>" of what it sent
"""

import hashlib
import random
import socket
import sys


def main() -> None:
    mode, addr, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    h, n = hashlib.sha256(), 0
    if mode == "serve":
        family = socket.AF_INET6 if ":" in addr else socket.AF_INET
        with socket.create_server((addr, port), family=family) as s:
            s.settimeout(60)
            c, _ = s.accept()
            c.settimeout(60)
            while True:
                d = c.recv(1 << 20)
                if not d:
                    break
                h.update(d)
                n += len(d)
    else:
        total, rng = int(sys.argv[4]), random.Random(int(sys.argv[5]))
        block = bytes(rng.getrandbits(8) for _ in range(1 << 16))
        with socket.create_connection((addr, port), timeout=60) as c:
            while n < total:
                # Vary the data so a misplaced segment cannot look right.
                d = block[n % 997 :] + block[: n % 997]
                d = d[: total - n]
                c.sendall(d)
                h.update(d)
                n += len(d)
    print(n, h.hexdigest(), flush=True)


if __name__ == "__main__":
    main()

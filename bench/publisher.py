"""A fast MQTT 3.1.1 QoS 1 load generator, run as its own process by the broker benches.

    python bench/publisher.py HOST PORT PREFIX COUNT SERIES [RATE]

Publishes COUNT single-reading JSON messages ``{"value": V, "ts": MS}`` over SERIES topics
``PREFIX/site{S}/dev{D}/cod`` (round robin), QoS 1, at RATE messages/s paced in 10 ms steps
(0 or absent: as fast as the socket takes them). The packets are encoded up front and written
in large chunks, so the publisher is not the bottleneck (a C ``mosquitto_pub -l`` per topic
would need one process per series). Prints, once the broker has acknowledged every
message (PUBACKs counted): ``START END ACKED``, the wall-clock times of its first send and
of the broker's last acknowledgement (``time.time()``, comparable with the bench's on the
same machine) and the count.
"""

from __future__ import annotations

import socket
import sys
import threading
import time


def _remaining(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _string(s: str) -> bytes:
    raw = s.encode()
    return len(raw).to_bytes(2, "big") + raw


def _publish(topic: str, payload: bytes, mid: int) -> bytes:
    body = _string(topic) + mid.to_bytes(2, "big") + payload
    return b"\x32" + _remaining(len(body)) + body


def main() -> None:
    host, port, prefix = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    count, series = int(sys.argv[4]), int(sys.argv[5])
    rate = float(sys.argv[6]) if len(sys.argv) > 6 else 0.0
    topics = [f"{prefix}/site{s % 10}/dev{s}/cod" for s in range(series)]
    base_ms = int(time.time() * 1000) - count
    packets = [
        _publish(topics[i % series], b'{"value": %d, "ts": %d}' % (i % 997, base_ms + i), i % 65535 + 1)
        for i in range(count)
    ]
    sock = socket.create_connection((host, port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    connect = b"\x00\x04MQTT\x04\x02\x00\x3c" + _string(f"bench-pub-{prefix}")
    sock.sendall(b"\x10" + _remaining(len(connect)) + connect)
    if sock.recv(4)[:1] != b"\x20":
        raise SystemExit("no CONNACK")
    acked = 0
    done = threading.Event()

    def read_acks() -> None:
        nonlocal acked
        pending = b""
        while acked < count:
            data = sock.recv(65536)
            if not data:
                break
            pending += data
            whole = len(pending) // 4  # PUBACKs are 4 bytes each; nothing else comes on this connection
            acked += whole
            pending = pending[whole * 4 :]
        done.set()

    reader = threading.Thread(target=read_acks, daemon=True)
    reader.start()
    start = time.perf_counter()
    start_wall = time.time()
    step = 0.01
    chunk = max(1, int(rate * step)) if rate else 2000
    for first in range(0, count, chunk):
        sock.sendall(b"".join(packets[first : first + chunk]))
        if rate:
            ahead = start + (first + chunk) / rate - time.perf_counter()
            if ahead > 0:
                time.sleep(ahead)  # pacing of a load generator
    done.wait(600)
    end_wall = time.time()  # the broker has taken the last one
    print(f"{start_wall:.6f} {end_wall:.6f} {acked}", flush=True)
    sock.sendall(b"\xe0\x00")
    sock.close()


if __name__ == "__main__":
    main()

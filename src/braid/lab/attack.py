"""Handshake floods for the lab's attack tests: junk initiations, or well-formed ones (valid
mac1) from keys the gateway does not know, sent at a fixed rate to a gateway's listener.

    python -m braid.lab.attack HOST:PORT KIND RATE SECONDS [GATEWAY_PUBLIC_KEY [CLIENT_KEY]]

KIND: "junk" (random bytes after the initiation type: fails mac1), "unknown-key" (needs
the gateway's public key) or "handshakes" (a real client's initiations, each new, as fast
as RATE: needs the gateway's public key and the client's private key). Prints one JSON
line: datagrams and bytes sent.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time

from braid.config import decode_key, parse_hostport
from braid.core import noise, wire
from braid.core.cookie import with_macs
from braid.core.handshake import PROLOGUE, InitPayload

DISTINCT = 256  # different messages cycled through


def messages(kind: str, gateway_public: bytes | None, client_private: bytes | None = None,
             count: int = DISTINCT) -> list[bytes]:
    if kind == "handshakes":
        if gateway_public is None or client_private is None:
            raise ValueError("handshakes needs the gateway's public key and the client's private key")
        wall = time.time_ns() // 1000
        out = []
        for i in range(count):  # each a fresh initiation: strictly increasing timestamps
            payload = InitPayload(wall + i, 7, 0, ("l0",)).encode()
            e, s, p, _ = noise.initiator_write(client_private, gateway_public, os.urandom(32),
                                               payload, PROLOGUE)
            out.append(with_macs(wire.HandshakeInit(i, e, s, p).encode_body(), gateway_public, None))
        return out
    if kind == "junk":
        return [bytes([wire.HANDSHAKE_INIT]) + os.urandom(180) for _ in range(DISTINCT)]
    if kind != "unknown-key" or gateway_public is None:
        raise ValueError("kind is junk or unknown-key (with the gateway's public key)")
    out = []
    for i in range(DISTINCT):
        payload = InitPayload(time.time_ns() // 1000 + i, i, 0, ("x",)).encode()
        e, s, p, _ = noise.initiator_write(os.urandom(32), gateway_public, os.urandom(32), payload,
                                           PROLOGUE)
        out.append(with_macs(wire.HandshakeInit(i, e, s, p).encode_body(), gateway_public, None))
    return out


def flood(target: tuple[str, int], msgs: list[bytes], rate: float, seconds: float) -> dict[str, int]:
    family = socket.AF_INET6 if ":" in target[0] else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    sock.setblocking(False)
    sent = nbytes = 0
    start = time.monotonic()
    end = start + seconds
    while (now := time.monotonic()) < end:
        due = int((now - start) * rate)
        while sent < due:
            msg = msgs[sent % len(msgs)]
            try:
                sock.sendto(msg, target)
                nbytes += len(msg)
            except (BlockingIOError, ConnectionRefusedError):
                pass
            sent += 1
        time.sleep(0.001)
    return {"datagrams": sent, "bytes": nbytes}


def main(argv: list[str]) -> int:
    if len(argv) not in (4, 5, 6):
        print(__doc__, file=sys.stderr)
        return 2
    target = parse_hostport(argv[0])
    public = decode_key(argv[4]) if len(argv) >= 5 else None
    private = decode_key(argv[5]) if len(argv) == 6 else None
    count = int(float(argv[2]) * float(argv[3])) if argv[1] == "handshakes" else DISTINCT
    msgs = messages(argv[1], public, private, count)
    print(json.dumps(flood(target, msgs, float(argv[2]), float(argv[3]))))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

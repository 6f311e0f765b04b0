"""Per-packet classification of inner IP packets: flow bucket and interactive or bulk."""

from __future__ import annotations

import zlib

INTERACTIVE_DSCP = frozenset({46, 48, 56})  # EF, CS6, CS7
SMALL_PACKET = 256  # bytes: TCP pure ACKs, DNS, VoIP frames, game updates
FLOW_BUCKETS = 128  # bulk flows hash into 0..127; interactive ones into 128..255
PROTO_ICMP = 1
PROTO_TCP = 6
PROTO_UDP = 17
PROTO_ICMPV6 = 58


BULK = 0
SMALL = 1  # small packets, TCP pure ACKs among them: skip the queue
INTERACTIVE = 2  # ICMP, DSCP EF/CS6/CS7, small UDP (VoIP, games, DNS): skip the queue and
                 # keep the lowest-latency link's queue short while they flow


def classify(packet: bytes) -> tuple[int, int]:
    """Return (flow bucket, class). Malformed packets land in bucket 0 as bulk."""
    n = len(packet)
    if n < 20:
        return 0, BULK
    version = packet[0] >> 4
    if version == 4:
        ihl = (packet[0] & 0x0F) * 4
        proto = packet[9]
        dscp = packet[1] >> 2
        key = packet[12:20]
        ports = packet[ihl : ihl + 4] if proto in (PROTO_TCP, PROTO_UDP) else b""
        icmp = proto == PROTO_ICMP
    elif version == 6 and n >= 40:
        proto = packet[6]
        dscp = (((packet[0] & 0x0F) << 4) | (packet[1] >> 4)) >> 2
        key = packet[8:40]
        ports = packet[40:44] if proto in (PROTO_TCP, PROTO_UDP) else b""
        icmp = proto == PROTO_ICMPV6
    else:
        return 0, BULK
    bucket = zlib.crc32(ports, zlib.crc32(key, proto)) % FLOW_BUCKETS
    if icmp or dscp in INTERACTIVE_DSCP or (n <= SMALL_PACKET and proto == PROTO_UDP):
        return bucket + FLOW_BUCKETS, INTERACTIVE
    if n <= SMALL_PACKET:
        return bucket + FLOW_BUCKETS, SMALL
    return bucket, BULK


def source_address(packet: bytes) -> bytes | None:
    """The inner source address (4 or 16 bytes), or None if not IPv4/IPv6."""
    if len(packet) >= 20 and packet[0] >> 4 == 4:
        return packet[12:16]
    if len(packet) >= 40 and packet[0] >> 4 == 6:
        return packet[8:24]
    return None


def destination_address(packet: bytes) -> bytes | None:
    if len(packet) >= 20 and packet[0] >> 4 == 4:
        return packet[16:20]
    if len(packet) >= 40 and packet[0] >> 4 == 6:
        return packet[24:40]
    return None

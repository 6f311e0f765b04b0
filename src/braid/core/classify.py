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


def classify(packet: bytes) -> tuple[int, bool]:
    """Return (flow bucket, urgent). Malformed packets land in bucket 0 as bulk."""
    n = len(packet)
    if n < 20:
        return 0, False
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
        return 0, False
    urgent = icmp or dscp in INTERACTIVE_DSCP or n <= SMALL_PACKET
    bucket = zlib.crc32(ports, zlib.crc32(key, proto)) % FLOW_BUCKETS
    return (bucket + FLOW_BUCKETS if urgent else bucket), urgent


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

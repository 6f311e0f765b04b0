"""Small builders shared by tests."""

from __future__ import annotations

import ipaddress
import struct


def udp_packet(seq: int, src: str = "10.77.0.2", dst: str = "10.77.0.1", size: int = 1200,
               sport: int = 1000, dport: int = 2000, dscp: int = 0) -> bytes:
    """An IPv4/UDP packet carrying `seq` in its first payload bytes (checksums left zero)."""
    s, d = ipaddress.ip_address(src).packed, ipaddress.ip_address(dst).packed
    header = bytes([0x45, dscp << 2]) + size.to_bytes(2, "big") + bytes(4) + bytes([64, 17, 0, 0]) + s + d
    udp = struct.pack("!HHHH", sport, dport, size - 20, 0)
    return header + udp + seq.to_bytes(4, "big") + bytes(size - 32)


def packet_seq(packet: bytes) -> int:
    return int.from_bytes(packet[28:32], "big")

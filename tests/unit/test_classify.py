import ipaddress
import struct

from braid.core.classify import BULK, FLOW_BUCKETS, INTERACTIVE, SMALL, classify


def _ipv4(proto: int, size: int, dscp: int = 0, sport: int = 1000) -> bytes:
    s, d = ipaddress.ip_address("10.0.0.1").packed, ipaddress.ip_address("10.0.0.2").packed
    head = bytes([0x45, dscp << 2]) + size.to_bytes(2, "big") + bytes(4) + bytes([64, proto, 0, 0]) + s + d
    return head + struct.pack("!HH", sport, 80) + bytes(size - 24)


def _ipv6(next_header: int, size: int) -> bytes:
    head = bytes([0x60, 0, 0, 0]) + (size - 40).to_bytes(2, "big") + bytes([next_header, 64])
    addrs = ipaddress.ip_address("fd00::1").packed + ipaddress.ip_address("fd00::2").packed
    return head + addrs + bytes(size - 40)


def test_classes():
    assert classify(_ipv4(1, 84))[1] == INTERACTIVE  # ping
    assert classify(_ipv4(17, 120))[1] == INTERACTIVE  # VoIP-sized UDP
    assert classify(_ipv4(6, 1400, dscp=46))[1] == INTERACTIVE  # EF, whatever its size
    assert classify(_ipv4(6, 52))[1] == SMALL  # a TCP pure ACK
    assert classify(_ipv4(6, 1400))[1] == BULK
    assert classify(_ipv4(17, 1400))[1] == BULK
    assert classify(_ipv6(58, 104))[1] == INTERACTIVE  # ICMPv6
    assert classify(_ipv6(6, 1400))[1] == BULK
    assert classify(b"\x00" * 10) == (0, BULK)


def test_flow_buckets_are_stable_and_separate_urgent_from_bulk():
    a1, a2 = classify(_ipv4(6, 1400, sport=1)), classify(_ipv4(6, 1400, sport=1))
    assert a1 == a2 and a1[0] < FLOW_BUCKETS
    assert classify(_ipv4(6, 52, sport=1))[0] >= FLOW_BUCKETS
    buckets = {classify(_ipv4(6, 1400, sport=p))[0] for p in range(200)}
    assert len(buckets) > 50

import ipaddress
import struct

from braid.core.classify import BULK, FLOW_BUCKETS, INTERACTIVE, RESENT, SMALL, classify


def _ipv4(proto: int, size: int, dscp: int = 0, sport: int = 1000) -> bytes:
    s, d = ipaddress.ip_address("10.0.0.1").packed, ipaddress.ip_address("10.0.0.2").packed
    head = bytes([0x45, dscp << 2]) + size.to_bytes(2, "big") + bytes(4) + bytes([64, proto, 0, 0]) + s + d
    return head + struct.pack("!HH", sport, 80) + bytes(size - 24)


def _tcp(size: int, seq: int, sport: int = 7000) -> bytes:
    """An IPv4 TCP segment of `size` bytes (20 of IP, 20 of TCP header) starting at `seq`."""
    p = bytearray(_ipv4(6, size, sport=sport))
    p[24:28] = seq.to_bytes(4, "big")
    p[32] = 5 << 4  # data offset: 20 bytes of TCP header
    return bytes(p)


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


def test_link_scoped_ipv6_is_recognised_and_nothing_else():
    import ipaddress

    from braid.core.classify import link_scoped_v6

    def v6(src: str, dst: str) -> bytes:
        return (bytes([0x60, 0, 0, 0, 0, 0, 58, 1]) + ipaddress.ip_address(src).packed
                + ipaddress.ip_address(dst).packed)

    assert link_scoped_v6(v6("fe80::1", "fd77::1"))  # an MLD report's source
    assert link_scoped_v6(v6("fd77::2", "ff02::16"))  # link-scope multicast
    assert link_scoped_v6(v6("::", "ff02::2"))  # a router solicitation before an address
    assert not link_scoped_v6(v6("fd77::2", "fd77::1"))
    assert not link_scoped_v6(v6("2001:db8::2", "ff0e::1"))  # global multicast
    assert not link_scoped_v6(bytes([0x45]) + bytes(39))


def test_one_flow_takes_one_lane_whatever_its_packet_sizes():
    """A bulk UDP transfer (QUIC) sends short datagrams when its window is full: they must
    not skip the queue and overtake its earlier full-size ones."""
    from braid.core.classify import FlowClassifier

    fc = FlowClassifier()
    lanes = []
    t = 0.0
    for i in range(2000):  # ~12 Mbit/s, every 16th datagram short
        size = 120 if i % 16 == 15 else 1350
        lanes.append(fc.classify(_ipv4(17, size, sport=4433), t))
        t += 0.0009
    settled = lanes[10:]
    assert len(set(settled)) == 1 and settled[0][1] == BULK


def test_a_voip_flow_is_interactive_in_every_packet_and_a_transfer_beside_it_is_not():
    from braid.core.classify import FlowClassifier

    fc = FlowClassifier()
    voip, bulk = set(), set()
    t = 0.0
    for i in range(1000):
        t += 0.001
        bulk.add(fc.classify(_ipv4(17, 1400, sport=5000), t)[1] if i > 20 else BULK)
        if i % 20 == 0:  # 50 packets/s of 160 bytes: 64 kbit/s
            voip.add(fc.classify(_ipv4(17, 160, sport=6000), t))
    assert len(voip) == 1 and next(iter(voip))[1] == INTERACTIVE
    assert bulk == {BULK}


def test_tcp_pure_acks_skip_the_queue_and_a_bulk_tcp_flow_stays_bulk():
    from braid.core.classify import FlowClassifier

    fc = FlowClassifier()
    assert fc.classify(_tcp(40, 0), 0.0)[1] == SMALL  # no payload
    seq, kinds = 0, []
    for i in range(1, 400):
        size = 1400 if i % 10 else 200
        kinds.append(fc.classify(_tcp(size, seq), i * 0.0005)[1])
        seq += size - 40
    assert set(kinds[5:]) == {BULK}  # its short segments queue behind its earlier ones


def test_a_bulk_tcp_segment_below_the_flows_highest_sequence_is_a_retransmission():
    from braid.core.classify import FlowClassifier

    fc = FlowClassifier()
    seq = (1 << 32) - 50_000  # the sequence space wraps during the flow
    sent = []
    for i in range(100):
        assert fc.classify(_tcp(1400, seq), i * 0.0005)[1] == BULK
        sent.append(seq)
        seq = (seq + 1360) % (1 << 32)
    for old in (sent[3], sent[60], sent[-1]):  # before and after the wrap, and the latest
        assert fc.classify(_tcp(1400, old), 0.06)[1] == RESENT
    assert fc.classify(_tcp(1400, seq), 0.061)[1] == BULK  # new data again
    assert fc.classify(_tcp(1400, sent[10], sport=7001), 0.062)[1] != RESENT  # another flow


def test_the_flow_table_is_bounded():
    from braid.core.classify import FlowClassifier

    fc = FlowClassifier(max_flows=64)
    for port in range(1000):
        fc.classify(_ipv4(17, 100, sport=port), port * 0.001)
    assert len(fc) <= 64

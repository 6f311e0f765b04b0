"""Classification of inner IP packets: flow bucket, and interactive or bulk per flow."""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass

INTERACTIVE_DSCP = frozenset({46, 48, 56})  # EF, CS6, CS7
SMALL_PACKET = 256  # bytes: TCP pure ACKs, DNS, VoIP frames, game updates
FLOW_BUCKETS = 128  # bulk flows hash into 0..127; interactive ones into 128..255
PROTO_ICMP = 1
PROTO_TCP = 6
PROTO_UDP = 17
PROTO_ICMPV6 = 58
# a flow is interactive while its mean packet size is at most this and its rate below
# INTERACTIVE_RATE (it turns back from bulk below half that rate)
SMALL_FLOW_SIZE = 300  # bytes: VoIP frames, game updates, DNS, keystrokes; not a transfer
INTERACTIVE_RATE = 1e6  # bits per second
FLOW_TAU = 0.5  # seconds over which a flow's rate is weighted
MAX_FLOWS = 4096


BULK = 0
SMALL = 1  # small packets, TCP pure ACKs among them: skip the queue
INTERACTIVE = 2  # ICMP, DSCP EF/CS6/CS7, small UDP (VoIP, games, DNS): skip the queue and
                 # keep the lowest-latency link's queue short while they flow
RESENT = 3  # bulk, and a TCP segment that carries only sequence space its flow already sent:
            # the inner sender's retransmission (the tunnel queue keeps room for it)
SEQ_SPACE = 1 << 32


def classify(packet: bytes) -> tuple[int, int]:
    """Return (flow bucket, class) of one packet on its own (see FlowClassifier for the
    per-flow decision the bond uses). Malformed packets land in bucket 0 as bulk."""
    facts = _facts(packet)
    if facts is None:
        return 0, BULK
    key, proto, dscp, icmp, _, _ = facts
    bucket = key % FLOW_BUCKETS
    n = len(packet)
    if icmp or dscp in INTERACTIVE_DSCP or (n <= SMALL_PACKET and proto == PROTO_UDP):
        return bucket + FLOW_BUCKETS, INTERACTIVE
    if n <= SMALL_PACKET:
        return bucket + FLOW_BUCKETS, SMALL
    return bucket, BULK


def _facts(packet: bytes) -> tuple[int, int, int, bool, bool, int] | None:
    """(5-tuple hash, protocol, DSCP, ICMP?, TCP without payload?, offset of the transport
    header), None if malformed."""
    n = len(packet)
    if n < 20:
        return None
    version = packet[0] >> 4
    if version == 4:
        ihl = (packet[0] & 0x0F) * 4
        proto = packet[9]
        dscp = packet[1] >> 2
        key = packet[12:20]
        l4 = ihl
        icmp = proto == PROTO_ICMP
    elif version == 6 and n >= 40:
        proto = packet[6]
        dscp = (((packet[0] & 0x0F) << 4) | (packet[1] >> 4)) >> 2
        key = packet[8:40]
        l4 = 40
        icmp = proto == PROTO_ICMPV6
    else:
        return None
    ports = packet[l4 : l4 + 4] if proto in (PROTO_TCP, PROTO_UDP) else b""
    pure_ack = proto == PROTO_TCP and n >= l4 + 13 and n - l4 - (packet[l4 + 12] >> 4) * 4 <= 0
    return zlib.crc32(ports, zlib.crc32(key, proto)), proto, dscp, icmp, pure_ack, l4


def tcp_sequence_end(packet: bytes, l4: int) -> int | None:
    """The sequence number just past a TCP segment's payload, or None if it carries none
    (or its header is cut short)."""
    if len(packet) < l4 + 20:
        return None
    payload = len(packet) - l4 - (packet[l4 + 12] >> 4) * 4
    if payload <= 0:
        return None
    return (int.from_bytes(packet[l4 + 4:l4 + 8], "big") + payload) % SEQ_SPACE


@dataclass(slots=True)
class _Flow:
    rate: float  # bytes per second, exponentially weighted over FLOW_TAU
    size: float  # mean packet size, weighted over the last ~8 packets
    at: float
    bulk: bool = False
    tcp_end: int = -1  # TCP: the highest sequence end sent so far (-1: none yet)


class FlowClassifier:
    """Interactive or bulk per flow (5-tuple), by its behaviour, never per packet: every
    packet of a flow takes the same lane, so none overtakes an earlier one of its flow (a
    QUIC transfer's short datagrams passing its full ones read as loss). A flow is
    interactive while its packets are small on average and its rate is low (VoIP, games,
    DNS, SSH); it turns bulk when either grows, and back only when both are low again.
    ICMP and DSCP EF/CS6/CS7 are interactive whatever their rate; TCP segments without
    payload (pure ACKs) skip the queue as before: they carry no sequence space to reorder.
    At most MAX_FLOWS flows are remembered (the oldest forgotten first)."""

    def __init__(self, max_flows: int = MAX_FLOWS) -> None:
        self.max_flows = max_flows
        self._flows: dict[int, _Flow] = {}

    def __len__(self) -> int:
        return len(self._flows)

    def classify(self, packet: bytes, now: float) -> tuple[int, int]:
        facts = _facts(packet)
        if facts is None:
            return 0, BULK
        key, proto, dscp, icmp, pure_ack, l4 = facts
        bucket = key % FLOW_BUCKETS
        if icmp or dscp in INTERACTIVE_DSCP:
            return bucket + FLOW_BUCKETS, INTERACTIVE
        if pure_ack:
            return bucket + FLOW_BUCKETS, SMALL
        n = len(packet)
        flow = self._flows.get(key)
        if flow is None:
            if len(self._flows) >= self.max_flows:
                del self._flows[next(iter(self._flows))]
            flow = self._flows[key] = _Flow(n / FLOW_TAU, float(n), now)
        else:
            dt = now - flow.at
            decay = math.exp(-dt / FLOW_TAU) if dt > 0 else 1.0
            flow.rate = flow.rate * decay + n / FLOW_TAU
            flow.size += (n - flow.size) / 8
            flow.at = now
        if flow.bulk:
            flow.bulk = not (flow.size <= SMALL_FLOW_SIZE and flow.rate * 8 < INTERACTIVE_RATE / 2)
        else:
            flow.bulk = flow.size > SMALL_FLOW_SIZE or flow.rate * 8 >= INTERACTIVE_RATE
        # every TCP segment raises its flow's sequence end, bulk or not yet
        resent = proto == PROTO_TCP and self._retransmitted(flow, packet, l4)
        if flow.bulk:
            return bucket, RESENT if resent else BULK
        return bucket + FLOW_BUCKETS, INTERACTIVE if proto == PROTO_UDP else SMALL

    @staticmethod
    def _retransmitted(flow: _Flow, packet: bytes, l4: int) -> bool:
        """Whether a TCP segment ends at or below the flow's highest sequence end so far
        (which it raises otherwise)."""
        end = tcp_sequence_end(packet, l4)
        if end is None:
            return False
        if flow.tcp_end >= 0:
            ahead = (end - flow.tcp_end) % SEQ_SPACE
            if ahead == 0 or ahead >= SEQ_SPACE // 2:
                return True
        flow.tcp_end = end
        return False


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


def link_scoped_v6(packet: bytes) -> bool:
    """An IPv6 packet that must never leave its link: from a link-local source (fe80::/10:
    the kernel's own MLD reports and router solicitations on the TUN) or to a link-local or
    link-scope multicast destination (fe80::/10, ff02::/16). Dropped by braid on purpose,
    counted apart from spoofed sources."""
    if len(packet) < 40 or packet[0] >> 4 != 6:
        return False
    src, dst = packet[8], packet[24]
    return ((src == 0xFE and packet[9] & 0xC0 == 0x80) or (dst == 0xFE and packet[25] & 0xC0 == 0x80)
            or (dst == 0xFF and packet[25] & 0x0F == 0x02))

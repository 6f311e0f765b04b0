"""braid wire format: every byte layout on the wire, encoded and decoded here only.

docs/protocol.md mirrors this module. All integers are big-endian unless noted.

Outer datagrams (UDP payload):
  HANDSHAKE_INIT  type(1)=1 sender_index(4) ephemeral(32) static_sealed(48) payload_sealed(n+16)
                  mac1(16) mac2(16)
  HANDSHAKE_RESP  type(1)=2 sender_index(4) receiver_index(4) ephemeral(32) payload_sealed(4+16)
                  mac1(16) mac2(16)
  TRANSPORT       type(1)=3 receiver_index(4) link_id(1) counter(6) ciphertext(>=16)
  COOKIE_REPLY    type(1)=4 receiver_index(4) nonce(24) cookie_sealed(16+16)
mac1/mac2 and the cookie reply are WireGuard's (core/cookie.py).
The transport header (12 bytes) is the AEAD associated data; the nonce is
0x000000 || link_id || counter as 8 bytes little-endian (Noise ChaChaPoly layout).

Transport plaintext:  timestamp_us(4) then frames; a DATA/UNORDERED frame, if present, is last
and its payload runs to the end. The payload is an IP packet (first byte 0x4_ or 0x6_) or a
fragment of one: tag(1) = last<<5 | index (always < 0x40), then a piece. The fragments of
a packet take consecutive seqs (index 0 first) and share its flow_seq.
  DATA      0x01 flow(1) flow_seq(2) seq(4) packet...
  UNORDERED 0x02 flow(1) flow_seq(2) seq(4) packet...   (sent outside its link's queue order)
  PROBE     0x03 head(4)
  FEEDBACK  0x04 link(1) rx_packets(4) rx_bytes(4) echo_ts(4) echo_hold_us(4) rx_time_us(4)
                 owd_min_us(4) highest_counter(6)
  NACK      0x05 link(1) count(1) counter(6) * count
  PAD       0x06 zero bytes to the end of the datagram
  CHALLENGE 0x08 token(8)           the gateway asks: does the address this went to receive?
  ECHO      0x09 token(8)           yes: the token of a CHALLENGE that arrived
  HEARD     0x07 known(4) up(4) standby(4)   bit i: link i was ever up / is up (heard) now
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Final

HANDSHAKE_INIT: Final = 1
HANDSHAKE_RESP: Final = 2
TRANSPORT: Final = 3
COOKIE_REPLY: Final = 4

KEY_LEN: Final = 32
TAG_LEN: Final = 16
TIMESTAMP_LEN: Final = 8  # handshake payload: wall clock, microseconds since the epoch

INIT_PAYLOAD_MIN: Final = TIMESTAMP_LEN
MACS_LEN: Final = 32  # mac1 and mac2 end every handshake message
INIT_FIXED_LEN: Final = 1 + 4 + KEY_LEN + (KEY_LEN + TAG_LEN)
INIT_MAX_LEN: Final = 512
RESP_PAYLOAD_LEN: Final = 4  # the responder's instance id
RESP_LEN: Final = 1 + 4 + 4 + KEY_LEN + RESP_PAYLOAD_LEN + TAG_LEN + MACS_LEN
COOKIE_REPLY_LEN: Final = 1 + 4 + 24 + 16 + TAG_LEN  # 61

TRANSPORT_HEADER: Final = struct.Struct("!BIB6s")  # type, receiver index, link id, counter
TRANSPORT_HEADER_LEN: Final = TRANSPORT_HEADER.size  # 12
COUNTER_MAX: Final = (1 << 48) - 1

INNER_TS: Final = struct.Struct("!I")
INNER_TS_LEN: Final = INNER_TS.size

FRAME_DATA: Final = 0x01
FRAME_UNORDERED: Final = 0x02  # a resend, or an urgent packet that passed the queue
FRAME_PROBE: Final = 0x03
FRAME_FEEDBACK: Final = 0x04
FRAME_NACK: Final = 0x05
FRAME_PAD: Final = 0x06  # the rest of the datagram is padding
FRAME_HEARD: Final = 0x07  # which of the peer's links this end hears: per-direction health
FRAME_CHALLENGE: Final = 0x08  # address validation: echo this token
FRAME_ECHO: Final = 0x09  # the token of a CHALLENGE received
TOKEN: Final = struct.Struct("!B8s")

DATA_HEADER: Final = struct.Struct("!BBHI")  # type, flow, flow_seq, seq
DATA_HEADER_LEN: Final = DATA_HEADER.size  # 8
PROBE: Final = struct.Struct("!BI")
FEEDBACK: Final = struct.Struct("!BBIIIIIi6s")
HEARD: Final = struct.Struct("!BIII")
NACK_HEAD: Final = struct.Struct("!BBB")
NACK_MAX: Final = 32

FRAGMENT_TAG_END: Final = 0x40  # a DATA payload starting below this is a fragment
FRAGMENT_LAST: Final = 0x20
FRAGMENT_INDEX: Final = 0x1F
MAX_FRAGMENTS: Final = 32
DEFAULT_FRAGMENTS: Final = 6  # the TUN MTU is this many datagrams' worth (see tun_mtu)

# Bytes added around an inner IP packet inside the outer UDP payload.
DATA_OVERHEAD: Final = TRANSPORT_HEADER_LEN + TAG_LEN + INNER_TS_LEN + DATA_HEADER_LEN  # 40
UDP_HEADER: Final = 8
IPV4_HEADER: Final = 20
IPV6_HEADER: Final = 40


class WireError(ValueError):
    """The only exception decoding raises: the datagram is malformed."""


def whole_mtu(link_mtu: int, outer_ipv6: bool) -> int:
    """Largest inner packet carried whole in one datagram that fits link_mtu unfragmented."""
    ip = IPV6_HEADER if outer_ipv6 else IPV4_HEADER
    return link_mtu - ip - UDP_HEADER - DATA_OVERHEAD


def tun_mtu(link_mtu: int, outer_ipv6: bool, fragments: int = DEFAULT_FRAGMENTS) -> int:
    """The inner MTU: `fragments` full fragments (one datagram each). Larger inner packets
    carry their IP and TCP headers, and the inner TCP's per-packet costs, fewer times per
    byte: the tunnel's overhead falls from about 4.5 % of a 1500-byte link to about 1 %."""
    whole = whole_mtu(link_mtu, outer_ipv6)
    return whole if fragments <= 1 else fragments * (whole - 1)


def split(packet: bytes, room: int) -> list[bytes]:
    """Fragment payloads (tag + piece, each at most `room` bytes) for a packet larger than
    `room`, in near-equal pieces. Raises WireError past MAX_FRAGMENTS."""
    count = fragments_needed(len(packet), room)
    if count > MAX_FRAGMENTS:
        raise WireError(f"packet of {len(packet)} bytes needs more than {MAX_FRAGMENTS} fragments")
    piece = -(-len(packet) // count)
    return [fragment(i, i == count - 1, packet[i * piece:(i + 1) * piece]) for i in range(count)]


def fragments_needed(length: int, room: int) -> int:
    """How many fragments a packet of `length` bytes takes in payloads of `room` bytes."""
    return -(-length // (room - 1))


def fragment(index: int, last: bool, piece: bytes) -> bytes:
    """One fragment payload: its tag, then its piece of the packet (pieces may differ in size)."""
    return bytes(((FRAGMENT_LAST if last else 0) | index,)) + piece


def fragment_tag(payload: bytes) -> tuple[int, bool] | None:
    """(index, last) if a DATA payload is a fragment, else None (it is a whole IP packet)."""
    if not payload or payload[0] >= FRAGMENT_TAG_END:
        return None
    return payload[0] & FRAGMENT_INDEX, bool(payload[0] & FRAGMENT_LAST)


def _u48(raw: bytes) -> int:
    return int.from_bytes(raw, "big")


def _b48(value: int) -> bytes:
    return value.to_bytes(6, "big")


# ---------------------------------------------------------------- outer datagrams


@dataclass(frozen=True, slots=True)
class HandshakeInit:
    sender_index: int
    ephemeral: bytes
    static_sealed: bytes
    payload_sealed: bytes

    def encode_body(self) -> bytes:
        """Everything before mac1 (cookie.with_macs appends the macs)."""
        return (
            struct.pack("!BI", HANDSHAKE_INIT, self.sender_index)
            + self.ephemeral
            + self.static_sealed
            + self.payload_sealed
        )


@dataclass(frozen=True, slots=True)
class HandshakeResp:
    sender_index: int
    receiver_index: int
    ephemeral: bytes
    payload_sealed: bytes

    def encode_body(self) -> bytes:
        """Everything before mac1 (cookie.with_macs appends the macs)."""
        return (
            struct.pack("!BII", HANDSHAKE_RESP, self.sender_index, self.receiver_index)
            + self.ephemeral
            + self.payload_sealed
        )


@dataclass(frozen=True, slots=True)
class CookieReply:
    receiver_index: int  # the sender index of the initiation it answers
    nonce: bytes
    cookie_sealed: bytes

    def encode(self) -> bytes:
        return struct.pack("!BI", COOKIE_REPLY, self.receiver_index) + self.nonce + self.cookie_sealed


@dataclass(frozen=True, slots=True)
class TransportHeader:
    receiver_index: int
    link_id: int
    counter: int

    def encode(self) -> bytes:
        return encode_transport_header(self.receiver_index, self.link_id, self.counter)


def encode_transport_header(receiver_index: int, link_id: int, counter: int) -> bytes:
    return TRANSPORT_HEADER.pack(TRANSPORT, receiver_index, link_id, _b48(counter))


Outer = HandshakeInit | HandshakeResp | TransportHeader | CookieReply


def decode_outer(data: bytes) -> Outer:
    """Decode the cleartext part of a datagram. Raises WireError only."""
    if not data:
        raise WireError("empty datagram")
    kind = data[0]
    if kind == TRANSPORT:
        if len(data) < TRANSPORT_HEADER_LEN + TAG_LEN:
            raise WireError("transport datagram too short")
        _, index, link, counter = TRANSPORT_HEADER.unpack_from(data)
        return TransportHeader(index, link, _u48(counter))
    if kind == HANDSHAKE_INIT:
        if len(data) < INIT_FIXED_LEN + INIT_PAYLOAD_MIN + TAG_LEN + MACS_LEN or len(data) > INIT_MAX_LEN:
            raise WireError("handshake initiation has a bad length")
        (index,) = struct.unpack_from("!I", data, 1)
        return HandshakeInit(index, data[5:37], data[37:85], data[85:-MACS_LEN])
    if kind == HANDSHAKE_RESP:
        if len(data) != RESP_LEN:
            raise WireError("handshake response has a bad length")
        index, receiver = struct.unpack_from("!II", data, 1)
        return HandshakeResp(index, receiver, data[9:41], data[41:-MACS_LEN])
    if kind == COOKIE_REPLY:
        if len(data) != COOKIE_REPLY_LEN:
            raise WireError("cookie reply has a bad length")
        (receiver,) = struct.unpack_from("!I", data, 1)
        return CookieReply(receiver, data[5:29], data[29:])
    raise WireError(f"unknown datagram type {kind}")


# ---------------------------------------------------------------- transport frames


@dataclass(frozen=True, slots=True)
class Data:
    flow: int
    flow_seq: int
    seq: int
    packet: bytes
    unordered: bool = False  # does not tell the receiver that earlier seqs on its link were sent


@dataclass(frozen=True, slots=True)
class Probe:
    head: int  # sender's next global sequence number when this was sent


@dataclass(frozen=True, slots=True)
class Feedback:
    link: int
    rx_packets: int  # cumulative, mod 2**32
    rx_bytes: int  # cumulative, mod 2**32
    echo_ts: int  # latest sender timestamp seen on that link
    echo_hold_us: int  # time between that arrival and this feedback
    rx_time_us: int  # receiver clock when sent, mod 2**32
    owd_min_us: int  # min (receiver clock - sender ts) over the interval, signed 32 bit
    highest_counter: int


@dataclass(frozen=True, slots=True)
class Nack:
    link: int
    counters: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Pad:
    """Filler that keeps a new link busy while its capacity is measured (bond warm-up)."""
    length: int  # zero bytes after the type byte, to the end of the datagram


@dataclass(frozen=True, slots=True)
class Heard:
    """The receiver's view of each link's incoming direction, sent on every link so that
    the sender learns of a link whose one direction died over the others."""
    known: int  # bit i: link i has been up (heard enough) since this end started
    up: int  # bit i: link i is heard now (its receive health is up)
    standby: int = 0  # bit i: link i is a backup on standby (no traffic, rare probes)


@dataclass(frozen=True, slots=True)
class Challenge:
    token: bytes  # 8 random bytes, sent to an address the gateway has not validated


@dataclass(frozen=True, slots=True)
class Echo:
    token: bytes


Frame = Data | Probe | Feedback | Nack | Pad | Heard | Challenge | Echo


def encode_data_header(flow: int, flow_seq: int, seq: int, unordered: bool = False) -> bytes:
    kind = FRAME_UNORDERED if unordered else FRAME_DATA
    return DATA_HEADER.pack(kind, flow, flow_seq & 0xFFFF, seq & 0xFFFFFFFF)


def encode_frame(frame: Frame) -> bytes:
    if isinstance(frame, Data):
        return encode_data_header(frame.flow, frame.flow_seq, frame.seq, frame.unordered) + frame.packet
    if isinstance(frame, Probe):
        return PROBE.pack(FRAME_PROBE, frame.head & 0xFFFFFFFF)
    if isinstance(frame, Feedback):
        return FEEDBACK.pack(
            FRAME_FEEDBACK,
            frame.link,
            frame.rx_packets & 0xFFFFFFFF,
            frame.rx_bytes & 0xFFFFFFFF,
            frame.echo_ts & 0xFFFFFFFF,
            min(frame.echo_hold_us, 0xFFFFFFFF),
            frame.rx_time_us & 0xFFFFFFFF,
            max(-(1 << 31), min(frame.owd_min_us, (1 << 31) - 1)),
            _b48(frame.highest_counter),
        )
    if isinstance(frame, Nack):
        counters = frame.counters[:NACK_MAX]
        return NACK_HEAD.pack(FRAME_NACK, frame.link, len(counters)) + b"".join(
            _b48(c) for c in counters
        )
    if isinstance(frame, Pad):
        return bytes([FRAME_PAD]) + bytes(frame.length)
    if isinstance(frame, Challenge | Echo):
        kind = FRAME_CHALLENGE if isinstance(frame, Challenge) else FRAME_ECHO
        return TOKEN.pack(kind, frame.token)
    if isinstance(frame, Heard):
        return HEARD.pack(FRAME_HEARD, frame.known & 0xFFFFFFFF, frame.up & 0xFFFFFFFF,
                          frame.standby & 0xFFFFFFFF)
    raise TypeError(f"not a frame: {frame!r}")


def encode_plaintext(ts_us: int, frames: list[Frame]) -> bytes:
    return INNER_TS.pack(ts_us & 0xFFFFFFFF) + b"".join(encode_frame(f) for f in frames)


def decode_plaintext(plain: bytes) -> tuple[int, list[Frame]]:
    """Split a transport plaintext into its timestamp and frames. Raises WireError only."""
    if len(plain) < INNER_TS_LEN:
        raise WireError("transport plaintext too short")
    (ts,) = INNER_TS.unpack_from(plain)
    frames: list[Frame] = []
    pos = INNER_TS_LEN
    end = len(plain)
    while pos < end:
        kind = plain[pos]
        if kind in (FRAME_DATA, FRAME_UNORDERED):
            if end - pos < DATA_HEADER_LEN + 1:
                raise WireError("data frame too short")
            _, flow, flow_seq, seq = DATA_HEADER.unpack_from(plain, pos)
            packet = plain[pos + DATA_HEADER_LEN :]
            frames.append(Data(flow, flow_seq, seq, packet, kind == FRAME_UNORDERED))
            return ts, frames
        if kind == FRAME_PROBE:
            if end - pos < PROBE.size:
                raise WireError("probe frame too short")
            frames.append(Probe(PROBE.unpack_from(plain, pos)[1]))
            pos += PROBE.size
        elif kind == FRAME_FEEDBACK:
            if end - pos < FEEDBACK.size:
                raise WireError("feedback frame too short")
            _, link, pk, by, echo, hold, rxt, owd, hi = FEEDBACK.unpack_from(plain, pos)
            frames.append(Feedback(link, pk, by, echo, hold, rxt, owd, _u48(hi)))
            pos += FEEDBACK.size
        elif kind == FRAME_NACK:
            if end - pos < NACK_HEAD.size:
                raise WireError("nack frame too short")
            _, link, count = NACK_HEAD.unpack_from(plain, pos)
            pos += NACK_HEAD.size
            if count > NACK_MAX or end - pos < 6 * count:
                raise WireError("nack frame has a bad count")
            counters = tuple(_u48(plain[pos + 6 * i : pos + 6 * i + 6]) for i in range(count))
            frames.append(Nack(link, counters))
            pos += 6 * count
        elif kind in (FRAME_CHALLENGE, FRAME_ECHO):
            if end - pos < TOKEN.size:
                raise WireError("token frame too short")
            token = TOKEN.unpack_from(plain, pos)[1]
            frames.append(Challenge(token) if kind == FRAME_CHALLENGE else Echo(token))
            pos += TOKEN.size
        elif kind == FRAME_HEARD:
            if end - pos < HEARD.size:
                raise WireError("heard frame too short")
            _, known, up, standby = HEARD.unpack_from(plain, pos)
            frames.append(Heard(known, up, standby))
            pos += HEARD.size
        elif kind == FRAME_PAD:
            frames.append(Pad(end - pos - 1))
            return ts, frames
        else:
            raise WireError(f"unknown frame type {kind}")
    return ts, frames

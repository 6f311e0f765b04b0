import pytest
from hypothesis import given
from hypothesis import strategies as st

from braid.core import wire


def test_transport_header_golden_bytes():
    hdr = wire.encode_transport_header(0x01020304, 7, 0x0A0B0C0D0E0F)
    assert hdr == bytes.fromhex("03" "01020304" "07" "0a0b0c0d0e0f")
    decoded = wire.decode_outer(hdr + bytes(16))
    assert decoded == wire.TransportHeader(0x01020304, 7, 0x0A0B0C0D0E0F)


def test_data_frame_golden_bytes():
    plain = wire.encode_plaintext(0x11223344, [wire.Data(5, 0x0102, 0x0A0B0C0D, b"\x45pkt")])
    assert plain == bytes.fromhex("11223344" "01" "05" "0102" "0a0b0c0d") + b"\x45pkt"


def test_feedback_golden_bytes():
    fb = wire.Feedback(1, 2, 3, 4, 5, 6, -7, 8)
    raw = wire.encode_frame(fb)
    assert raw == bytes.fromhex("04" "01" "00000002" "00000003" "00000004" "00000005" "00000006"
                                "fffffff9" "000000000008")


def test_pad_frame_golden_bytes():
    plain = wire.encode_plaintext(0x11223344, [wire.Probe(7), wire.Pad(3)])
    assert plain == bytes.fromhex("11223344" "03" "00000007" "06" "000000")
    assert wire.decode_plaintext(plain)[1] == [wire.Probe(7), wire.Pad(3)]


def test_heard_frame_golden_bytes():
    plain = wire.encode_plaintext(0x11223344, [wire.Heard(0b111, 0b101, 0b010)])
    assert plain == bytes.fromhex("11223344" "07" "00000007" "00000005" "00000002")
    assert wire.decode_plaintext(plain)[1] == [wire.Heard(7, 5, 2)]


def test_overhead_and_tun_mtu_formula():
    # outer IPv4 20 + UDP 8 + header 12 + tag 16 + timestamp 4 + data header 8 = 68
    assert wire.DATA_OVERHEAD == 40
    assert wire.whole_mtu(1500, outer_ipv6=False) == 1500 - 68
    assert wire.whole_mtu(1500, outer_ipv6=True) == 1500 - 88
    # the TUN MTU is a whole number of full fragments (each: one tag byte + a piece)
    assert wire.tun_mtu(1500, outer_ipv6=False, fragments=1) == 1432
    assert wire.tun_mtu(1500, outer_ipv6=False, fragments=6) == 6 * 1431
    assert len(wire.split(bytes(6 * 1431), 1432)) == 6


@given(st.binary(min_size=1, max_size=40_000), st.integers(100, 1500))
def test_fragments_fit_their_room_and_join_back(packet, room):
    if len(packet) > wire.MAX_FRAGMENTS * (room - 1):
        with pytest.raises(wire.WireError):
            wire.split(packet, room)
        return
    pieces = wire.split(packet, room)
    assert all(len(p) <= room for p in pieces)
    tags = [wire.fragment_tag(p) for p in pieces]
    assert tags == [(i, i == len(pieces) - 1) for i in range(len(pieces))]
    assert b"".join(p[1:] for p in pieces) == packet


def test_an_ip_packet_is_never_read_as_a_fragment():
    assert wire.fragment_tag(bytes([0x45]) + bytes(19)) is None
    assert wire.fragment_tag(bytes([0x60]) + bytes(39)) is None


frames = st.one_of(
    st.builds(wire.Probe, st.integers(0, 2**32 - 1)),
    st.builds(wire.Feedback, st.integers(0, 255), st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1),
              st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1),
              st.integers(-(2**31), 2**31 - 1), st.integers(0, 2**48 - 1)),
    st.builds(wire.Heard, st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1)),
    st.builds(wire.Nack, st.integers(0, 255),
              st.lists(st.integers(0, 2**48 - 1), min_size=0, max_size=wire.NACK_MAX).map(tuple)),
)


@given(st.integers(0, 2**32 - 1), st.lists(frames, max_size=5),
       st.one_of(st.none(), st.builds(wire.Data, st.integers(0, 255), st.integers(0, 2**16 - 1),
                                      st.integers(0, 2**32 - 1), st.binary(min_size=1, max_size=64),
                                      st.booleans()),
                 st.builds(wire.Pad, st.integers(0, 1400))))
def test_plaintext_round_trip(ts, control, data):
    all_frames = [*control, *([data] if data else [])]
    assert wire.decode_plaintext(wire.encode_plaintext(ts, all_frames)) == (ts, all_frames)


@pytest.mark.parametrize("raw", [b"", b"\x03", b"\x01" + bytes(20), b"\x02" + bytes(10), b"\x09abc"])
def test_decode_outer_rejects_malformed(raw):
    with pytest.raises(wire.WireError):
        wire.decode_outer(raw)

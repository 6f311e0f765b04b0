"""The reorder buffer against a naive model: nothing lost, nothing duplicated, order kept
per flow when nothing is given up, and no flow waits for another flow's gap."""

from hypothesis import given
from hypothesis import strategies as st

from braid.core.reorder import ReorderBuffer


@given(st.lists(st.integers(0, 3), max_size=120), st.randoms())
def test_every_packet_delivered_once_and_in_order_without_timeouts(flows, rnd):
    counts: dict[int, int] = {}
    packets = []
    for flow in flows:
        fseq = counts.get(flow, 0)
        counts[flow] = fseq + 1
        packets.append((flow, fseq))
    rest = [p for p in packets if p[1] != 0]
    rnd.shuffle(rest)
    buf = ReorderBuffer()
    out = []
    for flow, fseq in [p for p in packets if p[1] == 0] + rest:  # a flow starts at its first packet
        out += buf.push(flow, fseq, 0, f"{flow}:{fseq}".encode(), 0.0)
    assert sorted(out) == sorted(f"{f}:{s}".encode() for f, s in packets)
    for flow in counts:
        seqs = [int(p.split(b":")[1]) for p in out if int(p.split(b":")[0]) == flow]
        assert seqs == sorted(seqs)
    assert buf.held == 0 and buf.held_bytes == 0


def test_what_a_peer_can_pin_behind_gaps_is_capped_in_bytes():
    buf = ReorderBuffer(max_bytes=100_000)
    for flow in range(8):
        buf.push(flow, 0, 0, b"x", 0.0)
        for i in range(2, 200):  # every flow misses fseq 1 and piles 8 KB packets behind it
            buf.push(flow, i, i, bytes(8000), 0.0)
            assert buf.held_bytes <= 100_000
    assert buf.overflow > 0


@given(st.integers(1, 30), st.integers(1, 30))
def test_a_gap_in_one_flow_does_not_hold_another(n_a, n_b):
    buf = ReorderBuffer()
    assert buf.push(1, 0, 0, b"a0", 0.0) == [b"a0"]
    assert buf.push(2, 0, 1, b"b0", 0.0) == [b"b0"]
    for i in range(2, n_a + 2):  # flow 1 misses fseq 1
        assert buf.push(1, i, 10 + i, b"a", 0.0) == []
    for i in range(1, n_b + 1):
        assert buf.push(2, i, 100 + i, b"b%d" % i, 0.0) == [b"b%d" % i]
    assert buf.held == n_a


def test_gap_released_when_every_link_sent_past_it_or_at_its_deadline():
    buf = ReorderBuffer()
    buf.push(1, 0, 0, b"0", 0.0)
    assert buf.push(1, 2, 2, b"2", 1.0) == []
    assert buf.release(1.001, lost=lambda seq: False, timeout=0.05) == []
    assert buf.release(1.002, lost=lambda seq: seq <= 2, timeout=0.05) == [b"2"]
    assert buf.gaps_lost == 1
    assert buf.push(1, 4, 4, b"4", 2.0) == []
    assert buf.next_deadline(0.05) == 2.05
    assert buf.release(2.05, lost=lambda seq: False, timeout=0.05) == [b"4"]
    assert buf.gaps_timed_out == 1
    assert buf.push(1, 1, 1, b"late", 2.1) == [b"late"]  # late beats lost
    assert buf.late == 1

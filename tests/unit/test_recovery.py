"""core/recovery.py through its public API, with literal times (aioquic's test_recovery
style): the gap -> NACK rule and its limits, NACK handling, the send history."""

from braid.core import wire
from braid.core.recovery import NACK_BURST, NACK_RATE, Recovery
from braid.core.timers import NACK_HOLD_MARGIN, NACK_HOLD_RTTS, RESEND_AGE


def _recovery() -> Recovery:
    return Recovery([0, 1], 0.0, {"nacks_limited": 0, "nacks_received": 0})


def _sent(rec: Recovery, link: int, counters: range, t: float = 0.0) -> None:
    for c in counters:
        rec.history.record(link, c, t, 1, c, 100 + c, b"p%d" % c)


def test_a_gap_names_what_is_missing_and_no_gap_names_nothing():
    rec = _recovery()
    assert rec.on_gap(0, -1, 0, 0.0) is None  # the first datagram: nothing known yet
    assert rec.on_gap(0, 4, 5, 0.0) is None
    assert rec.on_gap(0, 4, 8, 0.0) == wire.Nack(0, (5, 6, 7))
    far = rec.on_gap(1, 10, 100, 0.0)
    assert far is not None and far.counters == tuple(range(100 - wire.NACK_MAX, 100))


def test_nacks_are_rate_limited_and_the_bucket_refills():
    rec = _recovery()
    sent = sum(rec.on_gap(0, 2 * i, 2 * i + 2, 0.0) is not None for i in range(1000))
    assert sent == NACK_BURST and rec.stats["nacks_limited"] == 1000 - NACK_BURST
    assert rec.on_gap(0, 5000, 5002, 0.0) is None
    assert rec.on_gap(0, 5000, 5002, 1.0 / NACK_RATE) is not None  # one token back


def test_a_nacked_packet_is_resent_once_and_only_while_fresh():
    rec = _recovery()
    _sent(rec, 0, range(10))
    items = rec.on_nack(wire.Nack(0, (3, 4, 99)), 0.5, (0, 1))  # 99 was never sent
    assert [(flow, fseq, seq, packet, unordered) for flow, fseq, seq, packet, unordered in items] == [
        (1, 3, 103, b"p3", True), (1, 4, 104, b"p4", True)]
    assert rec.on_nack(wire.Nack(0, (3,)), 0.5, (0, 2)) == []  # resent already
    assert rec.on_nack(wire.Nack(0, (5,)), RESEND_AGE + 0.1, (0, 3)) == []  # too old to be worth it
    assert rec.stats["nacks_received"] == 3


def test_one_datagram_of_nacks_is_honoured_up_to_nack_max_counters():
    rec = _recovery()
    _sent(rec, 0, range(200))
    taken = [rec.on_nack(wire.Nack(0, tuple(range(k * 32, k * 32 + 32))), 0.1, (1, 7))
             for k in range(5)]  # five frames in one datagram
    assert sum(len(t) for t in taken) == wire.NACK_MAX
    assert len(rec.on_nack(wire.Nack(0, (180,)), 0.1, (1, 8))) == 1  # the next datagram


def test_a_failed_link_leaves_what_the_peer_has_not_acknowledged():
    rec = _recovery()
    _sent(rec, 1, range(20))
    rec.history.acknowledge(1, 14)
    assert [item.seq for item in rec.history.take_unacknowledged(1, 0.2)] == [115, 116, 117, 118, 119]
    assert rec.history.take_unacknowledged(1, 0.2) == []  # taken once


def test_a_nack_holds_gaps_for_a_round_trip_of_its_links():
    rec = _recovery()
    assert not rec.holding(0.0)
    rec.hold_for(0.040, 1.0)
    end = 1.0 + NACK_HOLD_RTTS * 0.040 + NACK_HOLD_MARGIN
    assert rec.holding(end - 0.001) and not rec.holding(end + 0.001)
    rec.hold_for(0.010, 1.0)  # a shorter hold does not cut a longer one
    assert rec.hold_until == end

"""The reorder buffer's limit follows what really arrives, within fixed bounds."""

from braid.core import wire
from braid.core.receiver import RATE_WINDOW, Receiver
from braid.core.reorder import MAX_HELD_BYTES, MAX_HELD_PACKETS, MIN_HELD_BYTES, MIN_HELD_PACKETS


def _stats() -> dict[str, int]:
    return dict.fromkeys(("duplicates", "reassembled", "fragments_expired", "bad_frames",
                          "tun_out"), 0)


def _feed(rx: Receiver, start: float, seconds: float, bytes_per_s: float, seq: int) -> int:
    """1000-byte packets of one flow, in order, at `bytes_per_s`, with a timer tick each ms."""
    t, sent, step = start, 0.0, 0.001
    while t < start + seconds:
        sent += bytes_per_s * step
        while sent >= 1000:
            rx.on_data(wire.Data(1, seq & 0xFFFF, seq, b"\x45" + bytes(999)), t)
            seq += 1
            sent -= 1000
        rx.on_timer(t)
        t += step
    return seq


def test_limit_is_the_floor_until_data_arrives():
    rx = Receiver(_stats(), hold_max=1.0)
    for i in range(100):
        rx.on_timer(i * 0.01)
    assert rx.reorder.max_bytes == MIN_HELD_BYTES
    assert rx.reorder.max_held == MIN_HELD_PACKETS


def test_limit_follows_the_receive_rate_and_falls_back_after_the_window():
    rx = Receiver(_stats(), hold_max=1.0)
    seq = _feed(rx, 0.0, 1.0, 5e6, 0)  # 40 Mbit/s = 5 MB/s
    assert 9.5e6 <= rx.reorder.max_bytes <= 10.5e6  # 2 x 5 MB/s x 1 s
    assert rx.reorder.max_held == min(MAX_HELD_PACKETS, rx.reorder.max_bytes >> 10)
    _feed(rx, 1.0, RATE_WINDOW + 0.5, 0.0, seq)  # silence for longer than the window
    assert rx.reorder.max_bytes == MIN_HELD_BYTES


def test_limit_never_exceeds_the_ceiling_whatever_arrives():
    rx = Receiver(_stats(), hold_max=1.0)
    _feed(rx, 0.0, 0.5, 100e6, 0)  # 800 Mbit/s
    assert rx.reorder.max_bytes == MAX_HELD_BYTES
    assert rx.reorder.max_held == MAX_HELD_PACKETS


def test_a_gap_holding_more_than_the_limit_is_given_up_not_grown():
    rx = Receiver(_stats(), hold_max=1.0)
    for i in range(200):
        rx.on_timer(i * 0.001)
    rx.on_data(wire.Data(1, 0, 0, b"\x45" + bytes(999), False), 0.2)
    # fseq 1 is missing: everything behind it is held, up to the 1 MiB floor
    for i in range(2, 1200):
        rx.on_data(wire.Data(1, i, i, b"\x45" + bytes(999), False), 0.2)
    assert rx.reorder.held_bytes <= MIN_HELD_BYTES
    assert rx.reorder.overflow >= 1
    assert len(rx.delivered) > 1000  # released past the gap, not lost

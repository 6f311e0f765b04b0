"""The replay windows against a naive model that remembers everything."""

from hypothesis import given
from hypothesis import strategies as st

from braid.core.replay import ReplayWindow, SeqFilter


@given(st.lists(st.integers(0, 400), max_size=300))
def test_replay_window_matches_naive_model(counters):
    window = ReplayWindow(size=64)
    seen: set[int] = set()
    highest = -1
    for c in counters:
        expected = c not in seen and c > highest - 64
        assert window.check(c) == expected
        assert window.commit(c) == expected
        if expected:
            seen.add(c)
            highest = max(highest, c)


@given(st.lists(st.integers(0, 400), max_size=300))
def test_check_alone_never_moves_the_window(counters):
    window = ReplayWindow(size=64)
    for c in counters:
        window.check(c)
    assert window.highest == -1


@given(st.integers(0, 2**32 - 1), st.lists(st.integers(-100, 100), max_size=200))
def test_seq_filter_matches_naive_model_across_wrap(base, offsets):
    filt = SeqFilter(size=128)
    seen: set[int] = set()
    highest = None
    for off in offsets:
        seq = (base + off) % 2**32
        expected = True if highest is None else off not in seen and off > highest - 128
        assert filt.first_time(seq) == expected
        if expected:
            seen.add(off)
            highest = off if highest is None else max(highest, off)

"""Sliding windows: anti-replay over AEAD counters, duplicate filter over sequence numbers."""

from __future__ import annotations

SEQ_MOD = 1 << 32
SEQ_HALF = 1 << 31


def seq_diff(a: int, b: int) -> int:
    """a - b in 32-bit serial arithmetic, as a signed number."""
    d = (a - b) & (SEQ_MOD - 1)
    return d - SEQ_MOD if d >= SEQ_HALF else d


class ReplayWindow:
    """Accept each counter at most once; accept reordering within `size` of the highest.

    Call `check` before authenticating (cheap reject), `commit` after the AEAD tag verified,
    so a forged datagram can never move the window (RFC 6479 style, as in WireGuard).
    """

    __slots__ = ("_bits", "_highest", "size")

    def __init__(self, size: int = 4096) -> None:
        self.size = size
        self._highest = -1
        self._bits = 0  # bit i set: counter (highest - i) seen

    @property
    def highest(self) -> int:
        return self._highest

    def check(self, counter: int) -> bool:
        if counter > self._highest:
            return True
        offset = self._highest - counter
        if offset >= self.size:
            return False
        return not (self._bits >> offset) & 1

    def commit(self, counter: int) -> bool:
        """Record counter; False if it was a replay or too old."""
        if counter > self._highest:
            shift = counter - self._highest
            self._bits = ((self._bits << shift) | 1) & ((1 << self.size) - 1) if shift < self.size else 1
            self._highest = counter
            return True
        offset = self._highest - counter
        if offset >= self.size or (self._bits >> offset) & 1:
            return False
        self._bits |= 1 << offset
        return True


class SeqFilter:
    """Duplicate filter over 32-bit wrapping sequence numbers (the same packet sent twice)."""

    __slots__ = ("_bits", "_highest", "size")

    def __init__(self, size: int = 8192) -> None:
        self.size = size
        self._highest: int | None = None
        self._bits = 0

    def first_time(self, seq: int) -> bool:
        """True the first time seq is seen within the window; old and repeated seqs are False."""
        if self._highest is None:
            self._highest, self._bits = seq, 1
            return True
        d = seq_diff(seq, self._highest)
        if d > 0:
            self._bits = ((self._bits << d) | 1) & ((1 << self.size) - 1) if d < self.size else 1
            self._highest = seq
            return True
        offset = -d
        if offset >= self.size or (self._bits >> offset) & 1:
            return False
        self._bits |= 1 << offset
        return True

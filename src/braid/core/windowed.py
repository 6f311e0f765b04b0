"""Windowed extremes of timestamped samples (monotonic deques, O(1) amortized)."""

from __future__ import annotations

from collections import deque


class WindowedMax:
    """Max of (time, value) samples over a sliding window (monotonic deque)."""

    __slots__ = ("_q", "window")

    def __init__(self, window: float) -> None:
        self.window = window
        self._q: deque[tuple[float, float]] = deque()

    def update(self, now: float, value: float) -> None:
        q = self._q
        while q and q[-1][1] <= value:
            q.pop()
        q.append((now, value))
        while q[0][0] < now - self.window:
            q.popleft()

    def get(self, default: float) -> float:
        return self._q[0][1] if self._q else default

    def current(self, now: float, default: float) -> float:
        """The max of the samples still inside the window at `now` (`default` if none is)."""
        q = self._q
        while q and q[0][0] < now - self.window:
            q.popleft()
        return q[0][1] if q else default

    def reset(self, now: float, value: float) -> None:
        """Forget every sample: the quantity is known to be `value` now."""
        self._q.clear()
        self._q.append((now, value))


class WindowedMin(WindowedMax):
    def update(self, now: float, value: float) -> None:
        super().update(now, -value)

    def get(self, default: float) -> float:
        return -self._q[0][1] if self._q else default

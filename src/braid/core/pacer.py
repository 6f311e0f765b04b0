"""One link's pacing clock: datagrams leave at the estimator's pacing rate (its `rate`,
refreshed by the link on each receiver report), each taking its time on the clock; the
bytes queued for the link say when its backlog will have left (what the scheduler
predicts arrivals from)."""

from __future__ import annotations


class Pacer:
    __slots__ = ("clock", "queued", "rate")

    def __init__(self, now: float, rate: float) -> None:
        self.clock = now  # when the link is free to take its next datagram
        self.rate = rate  # bits per second
        self.queued = 0  # bytes waiting in the tunnel for this link

    def __repr__(self) -> str:
        return f"Pacer(clock={self.clock:.6f} rate={self.rate / 1e6:.2f}M queued={self.queued}B)"

    def take(self, size: int, now: float) -> None:
        """A datagram of `size` wire bytes leaves now, or when the link is free."""
        self.clock = max(self.clock, now) + size * 8 / self.rate

    def backlog_end(self, now: float) -> float:
        """When everything queued for the link will have left, at the pacing rate."""
        start = self.clock if self.clock > now else now
        return start + self.queued * 8 / self.rate

    def restart(self, now: float) -> None:
        """The link (or its send direction) starts again: nothing is owed from before."""
        self.clock = now

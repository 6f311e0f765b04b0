"""Throughput per link over the last ten one-second slices."""

from __future__ import annotations

import itertools
from collections import deque

SLICE = 1.0
SLICES = 10


class Throughput:
    """Feed cumulative byte counters once per slice; read current/average/max bit rates."""

    def __init__(self) -> None:
        self._marks: dict[str, deque[tuple[float, int]]] = {}

    def sample(self, now: float, counters: dict[str, int]) -> None:
        """Series exist only for the counters given: a link or client gone is forgotten."""
        for key in [k for k in self._marks if k not in counters]:
            del self._marks[key]
        for key, value in counters.items():
            marks = self._marks.setdefault(key, deque(maxlen=SLICES + 1))
            marks.append((now, value))

    def rates(self, key: str) -> dict[str, float]:
        marks = list(self._marks.get(key, ()))
        slices = [(b1 - b0) * 8 / (t1 - t0) for (t0, b0), (t1, b1) in itertools.pairwise(marks)
                  if t1 > t0]
        if not slices:
            return {"current_bps": 0.0, "avg_bps": 0.0, "max_bps": 0.0}
        return {"current_bps": slices[-1], "avg_bps": sum(slices) / len(slices), "max_bps": max(slices)}

"""Monthly data caps on metered links: bytes counted per cap period (a calendar month from a
reset day), and a link over its cap acts as a backup until the next period starts.

Pure bookkeeping: the caller passes the bytes seen and today's date, and keeps `state()`
across restarts (a month's count must survive a reboot).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any

MB = 1_000_000


def period_start(today: date, reset_day: int) -> date:
    """The first day of the cap period `today` falls in."""
    if today.day >= reset_day:
        return today.replace(day=reset_day)
    if today.month == 1:
        return date(today.year - 1, 12, reset_day)
    return date(today.year, today.month - 1, reset_day)


def next_period(start: date) -> date:
    if start.month == 12:
        return date(start.year + 1, 1, start.day)
    return date(start.year, start.month + 1, start.day)


@dataclass
class Cap:
    limit_mb: int
    reset_day: int
    start: date
    used: int = 0  # bytes, both directions, as this end counts them on the wire

    @property
    def over(self) -> bool:
        return self.used >= self.limit_mb * MB

    def view(self) -> dict[str, Any]:
        return {"limit_mb": self.limit_mb, "used_mb": round(self.used / MB, 1),
                "period_start": self.start.isoformat(), "until": next_period(self.start).isoformat(),
                "over": self.over}


class Caps:
    def __init__(self, specs: dict[str, tuple[int, int]], saved: dict[str, Any], today: date) -> None:
        """`specs`: link name -> (cap in MB, reset day); `saved`: what `state()` returned in an
        earlier run (counts of another period, or of links no longer capped, are dropped)."""
        self.caps: dict[str, Cap] = {}
        self.configure(specs, saved, today)

    def configure(self, specs: dict[str, tuple[int, int]], saved: dict[str, Any], today: date) -> None:
        caps = {}
        for name, (limit, day) in specs.items():
            start = period_start(today, day)
            cap = Cap(limit, day, start)
            old = self.caps.get(name)
            entry = saved.get(name)
            if old is not None and old.start == start:
                cap.used = old.used
            elif isinstance(entry, dict) and entry.get("period_start") == start.isoformat():
                cap.used = max(0, int(entry.get("used", 0)))
            caps[name] = cap
        self.caps = caps

    def account(self, name: str, nbytes: int, today: date) -> list[str]:
        """Count bytes carried on a link; returns event lines (cap reached, new period)."""
        cap = self.caps.get(name)
        if cap is None:
            return []
        events = []
        start = period_start(today, cap.reset_day)
        if start != cap.start:
            if cap.over:
                events.append(f"link {name}: a new cap period from {start.isoformat()}: "
                              "in use again")
            cap.start, cap.used = start, 0
        was_over = cap.over
        cap.used += max(0, nbytes)
        if cap.over and not was_over:
            events.append(f"link {name}: monthly cap of {cap.limit_mb} MB reached "
                          f"({cap.used / MB:.0f} MB since {cap.start.isoformat()}): a backup "
                          f"until {next_period(cap.start).isoformat()}")
        return events

    def over(self, name: str) -> bool:
        cap = self.caps.get(name)
        return cap is not None and cap.over

    def state(self) -> dict[str, Any]:
        return {name: {"period_start": cap.start.isoformat(), "used": cap.used}
                for name, cap in self.caps.items()}

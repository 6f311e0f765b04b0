"""Schedulers: which link carries the next packet.

A scheduler sees the links with their cached pacing rate, path delay and backlog
(`backlog_end`: when everything already queued for the link will have left) and picks
one. It owns no I/O. Chosen by name from `SCHEDULERS` (config key `scheduler`).
"""

from __future__ import annotations

from typing import Protocol

from .estimator import FULL_PACKET_BITS
from .link import Link


class Scheduler(Protocol):
    name: str

    def pick(self, links: list[Link], size: int, now: float) -> Link: ...


def candidates(links: list[Link]) -> list[Link]:
    """Usable links; if none is, the one heard from most recently (it is the likeliest to
    work); if none was ever heard, every link."""
    usable = [link for link in links if link.usable]
    if usable:
        return usable
    latest = max(links, key=lambda link: link.last_heard)
    return [latest] if latest.last_heard >= 0 else links


def assign(link: Link, size: int) -> None:
    """Count one more packet queued for the link (its backlog_end moves accordingly)."""
    link.queued_bytes += size


class EarliestArrival:
    """Each packet goes where it is predicted to arrive first:
    max(now, bytes already queued on the link / its pacing rate) + size / rate
    + the link's one-way delay (with its measured standing queue). A slow link is used
    exactly when the fast links' queues are deep enough that it delivers sooner (the
    BLEST/ECF condition falls out of the prediction).
    """

    name = "earliest-arrival"

    def pick(self, links: list[Link], size: int, now: float) -> Link:
        best = links[0]
        best_arrival = float("inf")
        bits = size * 8
        for link in candidates(links):
            arrival = link.backlog_end(now) + bits / link.pace_rate + link.path_delay
            if arrival < best_arrival:
                best, best_arrival = link, arrival
        return best


def pick_urgent(links: list[Link], size: int, now: float, handed_ahead: float,
                loss_penalty: float = 0.0) -> Link:
    """For a packet that skips the tunnel queue: it waits only behind what the link already
    holds (packets are handed to a link `handed_ahead` seconds before their paced time, plus
    the one in progress), so compare delay plus that, not the tunnel queue. `loss_penalty`
    (seconds per unit of loss probability) steers packets that must not be lost again, such
    as resends, away from lossy links."""
    best = links[0]
    best_arrival = float("inf")
    bits = size * 8
    for link in candidates(links):
        backlog = link.tx_clock - now
        held = handed_ahead + FULL_PACKET_BITS / link.pace_rate
        backlog = 0.0 if backlog < 0 else min(backlog, held)
        arrival = backlog + bits / link.pace_rate + link.path_delay + link.loss * loss_penalty
        if arrival < best_arrival:
            best, best_arrival = link, arrival
    return best


def nack_targets(links: list[Link], gap_link: Link) -> list[Link]:
    """Where a NACK goes: the two lowest-delay usable links (a NACK lost on a lossy link
    would cost a timeout), or the link the gap is on if none is usable."""
    usable = sorted((lk for lk in links if lk.usable), key=lambda lk: lk.path_delay)
    return usable[:2] or [gap_link]


class RoundRobin:
    """Every usable link in turn, whatever its rate (MLVPN-like; for comparison only)."""

    name = "round-robin"

    def __init__(self) -> None:
        self._turn = 0

    def pick(self, links: list[Link], size: int, now: float) -> Link:
        cands = candidates(links)
        self._turn += 1
        return cands[self._turn % len(cands)]


SCHEDULERS: dict[str, type[EarliestArrival] | type[RoundRobin]] = {
    EarliestArrival.name: EarliestArrival,
    RoundRobin.name: RoundRobin,
}


def make_scheduler(name: str) -> Scheduler:
    try:
        return SCHEDULERS[name]()
    except KeyError:
        raise ValueError(f"unknown scheduler {name!r} (known: {', '.join(SCHEDULERS)})") from None

"""Which link carries each datagram.

`LinkChoice` is the one place a link is chosen for any datagram the sender sends, in the
spirit of Linux MPTCP's single get_subflow hook with its reinject flag: a bulk packet
asking into a tunnel queue (with the far-link rule), the later pieces of one, a stopped
link's queued packets, urgent packets, realtime duplicates, resends, and where NACKs go.
For queued bulk it asks a scheduler, which sees the links with their cached pacing rate,
path delay and backlog (`Pacer.backlog_end`: when everything already queued for the link will
have left) and picks one; schedulers are chosen by name from `SCHEDULERS` (config key
`scheduler`). Feedback and HEARD reports ride whatever leaves on their own link.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import Protocol

from .estimator import FULL_PACKET_BITS
from .link import Link
from .timers import BULK_LINKS_REFRESH, LINK_BACKLOG, UNKNOWN_RTT

# a link whose delay alone is more than the queue limit above the nearest link's is "far"
# (a satellite, a slow 3G): it carries bulk only while the near links have less than this
# share of the capacity, since every flow it carries waits at the receiver for its packets;
# once in use, it stays until they have FAR_SHARE + FAR_HYSTERESIS (estimates wander by a
# few %: two equal links sat on the boundary and the far one came and went)
FAR_SHARE = 0.75
FAR_HYSTERESIS = 0.05
RESEND_LOSS_PENALTY = 0.2  # seconds of predicted delay per unit of loss, for resends


class Scheduler(Protocol):
    name: str

    def pick(self, links: list[Link], size: int, now: float) -> Link: ...


def candidates(links: list[Link]) -> list[Link]:
    """Usable links; if none is, the one heard from most recently (it is the likeliest to
    work); if none was ever heard, every link."""
    usable = [link for link in links if link.usable]
    if usable:
        return usable
    latest = max(links, key=lambda link: link.health.last_heard)
    return [latest] if latest.health.last_heard >= 0 else links


def assign(link: Link, size: int) -> None:
    """Count one more packet queued for the link (its backlog_end moves accordingly)."""
    link.pacer.queued += size


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
            pacer = link.pacer
            arrival = pacer.backlog_end(now) + bits / pacer.rate + link.path_delay
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
        pacer = link.pacer
        backlog = pacer.clock - now
        held = handed_ahead + FULL_PACKET_BITS / pacer.rate
        backlog = 0.0 if backlog < 0 else min(backlog, held)
        arrival = backlog + bits / pacer.rate + link.path_delay + link.path.loss * loss_penalty
        if arrival < best_arrival:
            best, best_arrival = link, arrival
    return best


def nack_targets(links: list[Link], gap_link: Link) -> list[Link]:
    """Where a NACK goes: the two lowest-delay usable links (a NACK lost on a lossy link
    would cost a timeout), or the link the gap is on if none is usable."""
    usable = sorted((lk for lk in links if lk.usable), key=lambda lk: lk.path_delay)
    return usable[:2] or [gap_link]


def nack_rtt(targets: list[Link]) -> float:
    """The slower round trip of the links a NACK goes on (UNKNOWN_RTT if none has one yet)."""
    return max((lk.path.srtt for lk in targets if lk.path.srtt is not None), default=UNKNOWN_RTT)


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


class Purpose(enum.Enum):
    """What a datagram is, for LinkChoice.choose."""
    PIECE = "piece"  # a later fragment of a packet admitted to a queue: never refused
    REQUEUE = "requeue"  # a packet queued on a link that stopped, moved to another queue
    URGENT = "urgent"  # skips the tunnel queue (interactive, or a flow's small packets)
    DUPLICATE = "duplicate"  # a realtime copy of an urgent packet: on another link
    RESEND = "resend"  # reinjected (NACKed, or its link failed): away from lossy links


class LinkChoice:
    """The links of one tunnel end, and which of them each datagram takes. `has_room`: the
    sender's judgement of whether a link's tunnel queue takes one more packet."""

    def __init__(self, scheduler: Scheduler, has_room: Callable[[Link, float], bool],
                 queue_limit: float) -> None:
        self.scheduler = scheduler
        self._has_room = has_room
        self.queue_limit = queue_limit
        self._far_in_use = False  # far links take bulk (see FAR_SHARE)
        self.set_links([])

    def set_links(self, links: list[Link]) -> None:
        self.links = links
        self._bulk_links = links
        self._spill_links: list[Link] = []
        self._bulk_links_at = -1.0

    def choose(self, purpose: Purpose, size: int, now: float, first: Link | None = None) -> Link:
        """The link for a datagram of `size` wire bytes (`first`: the link a DUPLICATE's
        original took)."""
        if purpose is Purpose.PIECE:
            return self.scheduler.pick(self._bulk_candidates(now)[0], size, now)
        if purpose is Purpose.REQUEUE:
            return self.scheduler.pick(self.links, size, now)
        if purpose is Purpose.DUPLICATE:
            others = [lk for lk in self.links if lk is not first and lk.usable]
            if not others and first is not None:
                return first  # the only link: random losses rarely take two datagrams in a row
            return pick_urgent(others or self.links, size, now, LINK_BACKLOG)
        if purpose is Purpose.RESEND:
            return pick_urgent(self.links, size, now, LINK_BACKLOG, loss_penalty=RESEND_LOSS_PENALTY)
        return pick_urgent(self.links, size, now, LINK_BACKLOG)

    def admit(self, size: int, now: float,
              has_room: Callable[[Link, float], bool] | None = None) -> Link | None:
        """The earliest arrival among the links with room: a full link's packet goes to the
        next best (a satellite behind a full 4G link adds capacity, not loss), and only when
        all of those are full to a far link not yet measured. None when every link is full:
        the packet is dropped, and the inner flow slows down. `has_room`: another judgement
        of room than the sender's usual one (more, for a retransmission)."""
        room = has_room or self._has_room
        links, spill = self._bulk_candidates(now)
        for group in (links, spill):
            open_links = [lk for lk in group if lk.usable and room(lk, now)]
            if open_links:
                return self.scheduler.pick(open_links, size, now)
        if any(lk.usable for lk in self.links):
            return None
        link = self.scheduler.pick(self.links, size, now)  # none usable: the likeliest
        return link if room(link, now) else None

    def _bulk_candidates(self, now: float) -> tuple[list[Link], list[Link]]:
        """The links bulk packets may take, and those they may spill onto when all of these
        are full. A far link (its delay alone more than the queue limit above the nearest
        link's) holds every flow it carries at the receiver for its extra delay: it is a
        candidate only while the near links have less than FAR_SHARE of the capacity
        (with hysteresis), and until it has measured its own, it takes spill only (see
        docs/tuning.md for the cases that set the rule)."""
        if now - self._bulk_links_at < BULK_LINKS_REFRESH:
            return self._bulk_links, self._spill_links
        self._bulk_links_at = now
        usable = [lk for lk in self.links if lk.usable]
        links, spill = self.links, []
        if len(usable) > 1:
            reach = min(lk.path.one_way_delay() for lk in usable) + self.queue_limit
            far = [lk for lk in usable if lk.path.one_way_delay() > reach]
            unproven = [lk for lk in far if not lk.est.proven]
            near = sum(lk.est.capacity() for lk in usable if lk.path.one_way_delay() <= reach)
            # a far link kept off measures nothing more: judge it by what it proved lately,
            # or one low estimate (a cut, a dip) would keep it off for good
            far_cap = sum(lk.peak_capacity() for lk in far if lk.est.proven)
            share = FAR_SHARE + (FAR_HYSTERESIS if self._far_in_use else 0.0)
            near_dominates = near >= share * (near + far_cap)
            self._far_in_use = bool(far) and not near_dominates
            kept_off = far if near_dominates else unproven
            links = [lk for lk in self.links if lk not in kept_off]
            spill = unproven
        self._bulk_links, self._spill_links = links, spill
        return links, spill

    def nack_targets(self, gap_link: Link) -> list[Link]:
        return nack_targets(self.links, gap_link)

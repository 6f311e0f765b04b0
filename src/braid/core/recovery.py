"""Local recovery inside the tunnel, without I/O or link choice (the bond sends, the
scheduler chooses links):
- `SendHistory`: what each link recently carried, by the link's packet number (which new
  keys do not restart: core/session.py). A NACK names numbers the receiver never got, a
  failed link leaves its unacknowledged ones; either way the packets are taken out (once)
  to be sent again on another link.
- `Recovery`: that history, plus the receive side's gap rule (a gap in a link's packet
  numbers -> the NACK to send, rate-limited) and how long a NACKed gap holds the reorder
  buffer."""

from __future__ import annotations

from collections import deque
from typing import NamedTuple

from . import wire
from .timers import NACK_HOLD_MARGIN, NACK_HOLD_RTTS, RESEND_AGE

RING_SIZE = 4096  # recently sent data packets remembered per link
# NACKs this end sends per second at most (a peer skipping counters must not make it send
# more than it receives): 1 % loss at 500 Mbit/s is about 450 gaps a second
NACK_RATE, NACK_BURST = 1000.0, 200.0

def nack_hold(rtt: float) -> float:
    """How long gaps wait after a NACK that went out on links whose slower round trip is `rtt`."""
    return NACK_HOLD_RTTS * rtt + NACK_HOLD_MARGIN


class Item(NamedTuple):
    """A data packet taken out to be sent again (or moved to another link's queue)."""

    flow: int
    fseq: int  # its flow's sequence number
    seq: int  # the tunnel's
    packet: bytes
    unordered: bool  # sent outside a link's queue order: it says nothing of lower seqs


class _Sent:
    __slots__ = ("flow", "fseq", "packet", "resent", "seq", "t")

    def __init__(self, t: float, flow: int, fseq: int, seq: int, packet: bytes) -> None:
        self.t, self.flow, self.fseq, self.seq, self.packet = t, flow, fseq, seq, packet
        self.resent = False

    def take(self) -> Item:
        self.resent = True
        return Item(self.flow, self.fseq, self.seq, self.packet, True)


class SendHistory:
    def __init__(self, link_ids: list[int]) -> None:
        self._sent: dict[int, dict[int, _Sent]] = {i: {} for i in link_ids}
        self._order: dict[int, deque[int]] = {i: deque() for i in link_ids}
        self._acked: dict[int, int] = dict.fromkeys(link_ids, -1)

    def record(self, link_id: int, counter: int, now: float, flow: int, fseq: int, seq: int,
               packet: bytes) -> None:
        sent, order = self._sent[link_id], self._order[link_id]
        sent[counter] = _Sent(now, flow, fseq, seq, packet)
        order.append(counter)
        # at most RING_SIZE, none past RESEND_AGE (new keys no longer clear it: a slow flow's
        # packets would sit there for hours)
        while len(order) > RING_SIZE or now - sent[order[0]].t >= RESEND_AGE:
            sent.pop(order.popleft(), None)

    def acknowledge(self, link_id: int, highest_counter: int) -> None:
        if link_id in self._acked and highest_counter > self._acked[link_id]:
            self._acked[link_id] = highest_counter

    def take_named(self, link_id: int, counters: tuple[int, ...], now: float) -> list[Item]:
        """The packets a NACK names, each at most once, if still fresh."""
        sent = self._sent.get(link_id, {})
        out = []
        for c in counters:
            e = sent.get(c)
            if e is not None and not e.resent and now - e.t < RESEND_AGE:
                out.append(e.take())
        return out

    def take_unacknowledged(self, link_id: int, now: float) -> list[Item]:
        """Everything the link carried after what its receiver last acknowledged."""
        acked = self._acked[link_id]
        return [e.take() for c, e in self._sent[link_id].items()
                if c > acked and not e.resent and now - e.t < RESEND_AGE]

    def add_link(self, link_id: int) -> None:
        self._sent.setdefault(link_id, {})
        self._order.setdefault(link_id, deque())
        self._acked.setdefault(link_id, -1)

    def drop_link(self, link_id: int) -> None:
        for table in (self._sent, self._order, self._acked):
            table.pop(link_id, None)


class Recovery:
    """The sender's history and the receiver's NACK rule of one tunnel end."""

    def __init__(self, link_ids: list[int], now: float, stats: dict[str, int]) -> None:
        """`stats`: the bond's counters (nacks_limited, nacks_received), updated here."""
        self.history = SendHistory(link_ids)
        self.stats = stats
        self.hold_until = 0.0  # gaps are not given up before (a NACK's resends may come)
        self._tokens, self._tokens_at = NACK_BURST, now
        self._honoured = 0  # NACKed counters honoured from the datagram being read
        self._datagram: tuple[int, int] | None = None  # (link id, counter) of that datagram

    def on_gap(self, link_id: int, highest: int, counter: int, now: float) -> wire.Nack | None:
        """A datagram with `counter` arrived on a link whose highest so far was `highest`:
        the NACK naming what is missing (at most NACK_MAX, the most recent), or None (no
        gap, or over the rate limit)."""
        if highest < 0 or counter <= highest + 1:
            return None
        self._tokens = min(NACK_BURST, self._tokens + (now - self._tokens_at) * NACK_RATE)
        self._tokens_at = now
        if self._tokens < 1.0:
            self.stats["nacks_limited"] += 1
            return None
        self._tokens -= 1.0
        return wire.Nack(link_id, tuple(range(max(highest + 1, counter - wire.NACK_MAX), counter)))

    def hold_for(self, rtt: float, now: float) -> None:
        """A NACK went out on links whose slower round trip is `rtt`: hold gaps that long."""
        self.hold_until = max(self.hold_until, now + nack_hold(rtt))

    def holding(self, now: float) -> bool:
        return now < self.hold_until

    def on_nack(self, nack: wire.Nack, now: float, datagram: tuple[int, int]) -> list[Item]:
        """What a NACK names that was sent and not resent yet: at most NACK_MAX counters per
        datagram (`datagram`: the link id and counter of the one it came in), however many
        NACK frames it carries."""
        if datagram != self._datagram:
            self._datagram, self._honoured = datagram, 0
        self.stats["nacks_received"] += 1
        counters = nack.counters[:max(0, wire.NACK_MAX - self._honoured)]
        self._honoured += len(counters)
        return self.history.take_named(nack.link, counters, now)

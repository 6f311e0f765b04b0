"""What each link recently carried, by AEAD counter, for local recovery inside the tunnel:
a NACK names counters the receiver never got, a failed link leaves its unacknowledged
counters; either way the packets are taken out (once) to be sent again on another link."""

from __future__ import annotations

from collections import deque

from .timers import RESEND_AGE

RING_SIZE = 4096  # recently sent data packets remembered per link

Item = tuple[int, int, int, bytes, bool]  # flow, flow_seq, seq, packet, unordered


class _Sent:
    __slots__ = ("flow", "fseq", "packet", "resent", "seq", "t")

    def __init__(self, t: float, flow: int, fseq: int, seq: int, packet: bytes) -> None:
        self.t, self.flow, self.fseq, self.seq, self.packet = t, flow, fseq, seq, packet
        self.resent = False

    def take(self) -> Item:
        self.resent = True
        return (self.flow, self.fseq, self.seq, self.packet, True)


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
        if len(order) > RING_SIZE:
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

    def forget(self) -> None:
        """New keys restart the counters: the history no longer matches them."""
        for link_id in self._sent:
            self._sent[link_id].clear()
            self._order[link_id].clear()
            self._acked[link_id] = -1

"""The send side of a bond: numbering, admission to a link's tunnel queue, fragment
cutting, each queue's pump at its link's pacing rate, warm-up padding, urgent packets and
their realtime duplicates, resends, and moving a stopped link's queue to the others.

Fragments: an inner packet larger than one datagram carries is cut into fragments, each
its own datagram (own seq, scheduled, recovered and deduplicated like a packet); the
receiver joins them before the per-flow reorder buffer, which sees whole packets only.

Every datagram leaves through `send(link, plaintext, now, data) -> counter` (the bond
counts it on the link and hands it to the session to seal); the receiver reports and
HEARD reports owed on a link ride along through `control_for(link, now, room)`.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from . import wire
from .classify import BULK, INTERACTIVE, RESENT, FlowClassifier
from .estimator import RESERVED_DATAGRAM_TIME
from .link import Link
from .recovery import Item, SendHistory, nack_hold
from .replay import SEQ_MOD
from .scheduler import LinkChoice, Purpose, Scheduler, assign, nack_rtt, nack_targets
from .timers import INTERACTIVE_HOLD, LINK_BACKLOG, RECOVERY_ROOM_HOLD
from .windowed import WindowedMax

DEFAULT_QUEUE_LIMIT = 0.050  # seconds of paced backlog a link's tunnel queue may hold
RECOVERY_ROOM_MAX = 4  # ... while the peer recovers losses, up to this many times more
STARTUP_QUEUE_PACKETS = 64
# an inner TCP's retransmission is taken while a link's queue holds less than this many
# times the room new packets get (lost again, it costs its flow a retransmission timeout)
RESENT_ROOM = 2.0
RESERVE_NOISE_MAX = 0.001  # seconds of idle delay noise above which a link is not reserved
# realtime protection: an interactive packet (classify.INTERACTIVE: VoIP, games, DNS, ICMP,
# DSCP EF) is sent twice while the link it takes loses more than this share of datagrams
DUPLICATE_LOSS = 0.005


def copies_on(link: Link) -> bool:
    """Whether realtime packets and NACKed resends that take this link are copied on
    another (it loses more than DUPLICATE_LOSS); `braid status` shows the same test."""
    return link.path.loss > DUPLICATE_LOSS

MIN_DATA_ROOM = 256  # bytes: the shortest bulk datagram payload (its overhead is 68 more)

Send = Callable[[Link, bytes, float, bool], int]
ControlFor = Callable[[Link, float, int], bytes]


@dataclass(slots=True)
class Queued:
    """A data packet (or fragment) waiting in a link's tunnel queue."""
    size: int  # bytes on the wire
    flow: int
    fseq: int  # its flow's sequence number
    seq: int  # the tunnel's
    packet: bytes
    unordered: bool  # a resend: sent outside the link's queue order (see _send_data)

    def item(self) -> Item:
        return Item(self.flow, self.fseq, self.seq, self.packet, self.unordered)


class Framing:
    """Bytes on the wire around a transport plaintext (outer IP and UDP headers, the
    transport header and the AEAD tag)."""

    def __init__(self, outer_ipv6: bool) -> None:
        self.outer_ipv6 = outer_ipv6
        self._overhead = ((wire.IPV6_HEADER if outer_ipv6 else wire.IPV4_HEADER) + wire.UDP_HEADER
                          + wire.TRANSPORT_HEADER_LEN + wire.TAG_LEN)

    def wire_size(self, plain_len: int) -> int:
        return plain_len + self._overhead

    def data_size(self, payload_len: int) -> int:
        """Bytes on the wire of a datagram carrying a DATA payload of this length alone."""
        return self.wire_size(payload_len + wire.INNER_TS_LEN + wire.DATA_HEADER_LEN)

    def max_plain(self, mtu: int) -> int:
        return mtu - self._overhead

    def whole_max(self, links: list[Link]) -> int:
        """The largest packet carried whole on every link: a fragment fits any link it is
        moved to by a resend or a failover."""
        return min(wire.whole_mtu(link.config.mtu, self.outer_ipv6) for link in links)


class Sender:
    def __init__(self, links: list[Link], scheduler: Scheduler, framing: Framing, history: SendHistory,
                 stats: dict[str, int], send: Send, control_for: ControlFor, *,
                 queue_limit: float = DEFAULT_QUEUE_LIMIT) -> None:
        self.choice = LinkChoice(scheduler, self._has_room, queue_limit)
        self.framing = framing
        self.history = history
        self.stats = stats
        self.send = send
        self.control_for = control_for
        self.queue_limit = queue_limit
        self._recovery_room = WindowedMax(RECOVERY_ROOM_HOLD)
        self.next_seq = 0
        self._flow_seq = [0] * 256
        self._classifier = FlowClassifier()
        self._interactive_until = -1.0
        self._reserved: Link | None = None
        self._queues: dict[int, deque[Queued]] = {}  # per link, in send order
        self.set_links(links)

    def set_links(self, links: list[Link]) -> None:
        """The bond's links changed (a link that goes away has its queue taken first)."""
        ids = {link.id for link in links}
        for link_id in [i for i in self._queues if i not in ids]:
            del self._queues[link_id]
        for link in links:
            self._queues.setdefault(link.id, deque())
        self.links = links
        self._by_id = {link.id: link for link in links}
        self._whole_max = self.framing.whole_max(links)
        self.choice.set_links(links)
        if self._reserved is not None and self._reserved not in links:
            self._reserved = None

    def take_queue(self, link: Link) -> list[Item]:
        """Empty a link's tunnel queue (it stopped): its packets, in their order."""
        queued = [q.item() for q in self._queues[link.id]]
        self._queues[link.id].clear()
        link.pacer.queued = 0
        return queued

    def backlogged(self, link: Link) -> bool:
        return bool(self._queues[link.id])

    def head(self, link: Link) -> int:
        """Every seq below this that was assigned to the link has been sent on it."""
        queue = self._queues[link.id]
        return queue[0].seq if queue else self.next_seq

    def queue_length(self) -> int:
        return sum(len(q) for q in self._queues.values())

    def on_tun_packet(self, packet: bytes, now: float) -> None:
        self.stats["tun_in"] += 1
        flow, klass = self._classifier.classify(packet, now)
        if klass == INTERACTIVE:
            self._interactive_until = now + INTERACTIVE_HOLD
        if wire.fragments_needed(len(packet), self._whole_max) > wire.MAX_FRAGMENTS:
            self.stats["too_big"] += 1
        elif klass in (BULK, RESENT):
            self._bulk(packet, flow, now, klass == RESENT)
        else:
            self._urgent(packet, flow, klass == INTERACTIVE, now)

    def _urgent(self, packet: bytes, flow: int, interactive: bool, now: float) -> None:
        """Ahead of every queued bulk packet, on the link where it arrives first (and once
        more on another while that link loses interactive packets)."""
        pieces = [packet]
        if len(packet) > self._whole_max:
            pieces = wire.split(packet, self._whole_max)
            self.stats["fragmented"] += 1
        fseq = self._take_fseq(flow)
        for payload in pieces:
            size = self.framing.data_size(len(payload))
            link = self.choice.choose(Purpose.URGENT, size, now)
            self.stats["urgent"] += 1
            link.pacer.take(size, now)
            seq = self._take_seq()
            self._send_data(link, flow, fseq, seq, payload, True, now)
            if interactive and copies_on(link):
                self._duplicate(link, flow, fseq, seq, payload, size, now)

    def _bulk(self, packet: bytes, flow: int, now: float, resent: bool = False) -> None:
        """Into the tunnel queue of the link the choice admits it to, cut into fragments if
        it is larger than a datagram; dropped when every link's queue is full (an inner
        TCP's retransmission, `resent`, when they hold RESENT_ROOM times that). Numbers are
        taken only once the tunnel has accepted the packet: a dropped packet must leave no
        gap in its flow's or the global sequence, or the receiver would hold the flow until
        every link (the slowest, sparsest too) showed the gap was never sent."""
        full = self.framing.data_size(min(len(packet), self._whole_max))
        link = self.choice.admit(full, now)
        if link is None and resent:
            link = self.choice.admit(full, now, self._has_resent_room)
            if link is not None:
                self.stats["resent_kept"] += 1
        if link is None:
            self.stats["queue_drops"] += 1
            return
        fseq = self._take_fseq(flow)
        room = self._room(link)
        if len(packet) <= room:
            size = self.framing.data_size(len(packet))
            self._enqueue(link, Queued(size, flow, fseq, self._take_seq(), packet, False), now)
            return
        self.stats["fragmented"] += 1
        # cut piece by piece, each to the room of the link it goes to (so a slow reserved
        # link gets short ones), keeping within MAX_FRAGMENTS; later pieces of an accepted
        # packet are never refused
        pos, index, total = 0, 0, len(packet)
        while True:
            room = max(room, -(-(total - pos) // (wire.MAX_FRAGMENTS - index)) + 1)
            end = pos + room - 1
            payload = wire.fragment(index, end >= total, packet[pos:end])
            size = self.framing.data_size(len(payload))
            self._enqueue(link, Queued(size, flow, fseq, self._take_seq(), payload, False), now)
            if end >= total:
                return
            pos, index = end, index + 1
            link = self.choice.choose(Purpose.PIECE, full, now)
            room = self._room(link)

    def _room(self, link: Link) -> int:
        """DATA payload bytes for bulk on a link: on a slow reserved link, no more than it
        sends in RESERVED_DATAGRAM_TIME, since an interactive packet waits behind the one in
        flight and about one queued (12 ms each at 1 Mbit/s for full datagrams)."""
        if not link.est.reserved:
            return self._whole_max
        fits = int(link.est.capacity() * RESERVED_DATAGRAM_TIME / 8) - self.framing.data_size(0)
        return min(self._whole_max, max(MIN_DATA_ROOM, fits))

    def _take_fseq(self, flow: int) -> int:
        fseq = self._flow_seq[flow]
        self._flow_seq[flow] = (fseq + 1) & 0xFFFF
        return fseq

    def _take_seq(self) -> int:
        seq = self.next_seq
        self.next_seq = (seq + 1) & (SEQ_MOD - 1)
        return seq

    def queue_room(self, now: float) -> float:
        """Seconds of paced backlog each link's tunnel queue may hold now: `queue_limit`, or
        while the peer recovers losses, the burst its recovery sends (see note_recovery)."""
        return max(self.queue_limit, self._recovery_room.current(now, 0.0))

    def note_recovery(self, now: float) -> None:
        """The peer NACKed a gap: it holds the flows behind it for up to NACK_HOLD_RTTS round
        trips of its NACK links, and once the resend fills it the inner senders answer the
        whole hold at once (the held packets' ACKs come together), a burst of up to that long
        at the bond's rate. With the tunnel queue at `queue_limit` that burst was dropped, and
        a lossy link's every repaired loss became a loss for the inner flow all the same
        (LTE + LEO: queue drops matched the inner TCP's retransmits). The larger room lasts
        RECOVERY_ROOM_HOLD after the last NACK, so that a lossy link's room does not shrink
        between two losses under a standing queue, which drops in a row what it held."""
        if not self.links:
            return
        hold = nack_hold(nack_rtt(nack_targets(self.links, self.links[0])))
        self._recovery_room.update(now, min(hold, RECOVERY_ROOM_MAX * self.queue_limit))

    def _has_room(self, link: Link, now: float) -> bool:
        """The link's tunnel queue is under `queue_room` of paced time. While its estimate is
        still ramping up, time at that estimate understates the room: a few packets more."""
        return (link.pacer.backlog_end(now) - now <= self.queue_room(now)
                or (link.est.startup and len(self._queues[link.id]) < STARTUP_QUEUE_PACKETS))

    def _has_resent_room(self, link: Link, now: float) -> bool:
        return link.pacer.backlog_end(now) - now <= RESENT_ROOM * self.queue_room(now)

    def _enqueue(self, link: Link, queued: Queued, now: float) -> None:
        """Queue a packet on a link and hand what its pacing allows to the socket."""
        assign(link, queued.size)
        self._queues[link.id].append(queued)
        self.pump(link, now)

    def pump(self, link: Link, now: float) -> None:
        """Hand packets to the link at its pacing rate (up to LINK_BACKLOG ahead)."""
        queue = self._queues[link.id]
        limit = now + LINK_BACKLOG
        pacer = link.pacer
        while queue and pacer.clock <= limit:
            q = queue.popleft()
            pacer.queued -= q.size
            pacer.take(q.size, now)
            self._send_data(link, q.flow, q.fseq, q.seq, q.packet, q.unordered, now)
        warming = not queue and link.warming(now)
        while warming and pacer.clock <= limit:
            pacer.take(self._send_pad(link, now), now)
        link.on_backlog(now, bool(queue) or warming)

    def _send_pad(self, link: Link, now: float) -> int:
        """A datagram of padding as long as a bulk one (feedback owed rides along); returns
        its size on the wire."""
        room = wire.DATA_HEADER_LEN + self._room(link)
        control = self.control_for(link, now, room - 1)
        frames = control + wire.encode_frame(wire.Pad(room - len(control) - 1))
        if self.send(link, frames, now, True) >= 0:
            link.health.on_sent_expecting_answer(now, data=True)
        self.stats["warmup_datagrams"] += 1
        return self.framing.wire_size(wire.INNER_TS_LEN + len(frames))

    def _send_data(self, link: Link, flow: int, fseq: int, seq: int, packet: bytes,
                   unordered: bool, now: float) -> None:
        """`unordered`: sent outside the link's queue order (urgent or resent), so it must not
        tell the receiver that every lower seq assigned to this link has been sent."""
        body = wire.encode_data_header(flow, fseq, seq, unordered) + packet
        room = self.framing.max_plain(link.config.mtu) - wire.INNER_TS_LEN - len(body)
        number = self.send(link, self.control_for(link, now, room) + body, now, True)
        if number < 0:
            return
        link.health.on_sent_expecting_answer(now, data=True)
        self.history.record(link.id, number, now, flow, fseq, seq, packet)

    def _duplicate(self, first: Link, flow: int, fseq: int, seq: int, payload: bytes, size: int,
                   now: float) -> None:
        """Realtime protection: a copy of an interactive packet whose link is lossy, on the
        next-best usable link (or the same one if it is the only one: random losses rarely
        take two datagrams in a row). Same numbers: the receiver keeps whichever copy
        arrives first and counts the other as a duplicate. A NACK recovers a loss a round
        trip later, too late for a voice frame."""
        link = self.choice.choose(Purpose.DUPLICATE, size, now, first=first)
        link.pacer.take(size, now)
        self._send_data(link, flow, fseq, seq, payload, True, now)
        self.stats["duplicated"] += 1
        self.stats["duplicated_bytes"] += size

    def resend(self, items: list[Item], now: float, copies: bool = False) -> None:
        """Put packets at the head of a link's queue and send. They pass the queue, so the
        link is chosen as for urgent packets: by delay plus what the link already holds.
        `copies` (NACKed packets): one whose link loses more than DUPLICATE_LOSS also goes
        on the next-best link, as a realtime packet's copy does. A resend has already cost
        its flow a round trip; lost again, its gap times out and the inner transport takes
        it for congestion (about one resend in a hundred on a 1 %-loss link)."""
        batches: dict[int, list[Queued]] = {}
        for item in items:
            size = self.framing.data_size(len(item.packet))
            link = self.choice.choose(Purpose.RESEND, size, now)
            assign(link, size)
            batches.setdefault(link.id, []).append(Queued(size, *item))
            if copies and copies_on(link):
                other = self.choice.choose(Purpose.DUPLICATE, size, now, first=link)
                if other is not link:
                    assign(other, size)
                    batches.setdefault(other.id, []).append(Queued(size, *item))
                    self.stats["resend_copies"] += 1
                    self.stats["resend_copy_bytes"] += size
        # in their own order, ahead of the queue: a failover resends hundreds of packets, and
        # putting each at the head in turn sent the oldest, which the receiver waits on, last
        for link_id, batch in batches.items():
            self._queues[link_id].extendleft(reversed(batch))
            self.pump(self._by_id[link_id], now)
        self.stats["resent"] += len(items)

    def requeue(self, items: list[Item], now: float) -> None:
        """Queued packets of a link that stopped (or went away), in their order, onto the
        links the scheduler picks for them now."""
        for item in items:
            size = self.framing.data_size(len(item.packet))
            self._enqueue(self.choice.choose(Purpose.REQUEUE, size, now), Queued(size, *item), now)

    def reserve(self, now: float) -> None:
        """While interactive traffic flows, the lowest-latency usable link, if its delay is
        steady, is paced just under its estimate so its bottleneck queue stays near empty."""
        want = None
        if now < self._interactive_until:
            usable = [lk for lk in self.links if lk.usable and lk.path.srtt is not None]
            if len(usable) > 1:
                want = min(usable, key=lambda lk: lk.path.lowest_rtt() or 1.0)
                if want.est.delay_noise > RESERVE_NOISE_MAX:
                    # a jittery link cannot promise low delay anyway, and the queue of about
                    # a packet a reserved link is held to cannot be told from its jitter
                    want = None
        if want is not self._reserved:
            for link in self.links:
                link.set_reserved(link is want)
            self._reserved = want


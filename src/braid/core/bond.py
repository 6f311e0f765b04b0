"""The multipath data plane of one tunnel (one client <-> gateway pair), without crypto.

Send side: classify -> number (global seq, per-flow seq) -> tunnel queue -> scheduler
picks a link -> plaintext handed to `transmit(link_id, plaintext) -> counter` (the
session seals it). Receive side: plaintext frames -> feedback to estimators, probes to
cover tracking, data to the duplicate filter and the per-flow reorder buffer -> `delivered`.
Local recovery: a per-link counter gap makes the receiver send a NACK; the sender resends
those packets on the best link. A link turning suspect has its unacknowledged recent
packets resent on the others.
Warm-up: a link that comes up unmeasured is kept busy with padding (while data leaves it
idle) until its first startup has measured its capacity, or WARMUP_TIME passes; the first
transfer then finds every link's rate already known instead of ramping from a guess.
Fragments: an inner packet larger than one datagram carries is cut into fragments, each
its own datagram (own seq, scheduled, recovered and deduplicated like a packet); the
receiver joins them before the per-flow reorder buffer, which sees whole packets only.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from . import wire
from .classify import BULK, INTERACTIVE, FlowClassifier
from .estimator import RESERVED_DATAGRAM_TIME
from .events import LinkStateChanged
from .link import (
    BACKUP,
    Health,
    Link,
    LinkConfig,
)
from .receiver import Receiver
from .recovery import Item, Recovery
from .reorder import ReorderBuffer
from .replay import SEQ_MOD, seq_diff
from .scheduler import assign, make_scheduler, nack_targets, pick_urgent
from .timers import (
    BULK_LINKS_REFRESH,
    FEEDBACK_INTERVAL,
    HEARD_INTERVAL,
    IDLE_AFTER,
    IDLE_GRACE,
    INTERACTIVE_HOLD,
    LIVE_WINDOW,
    PROBE_INTERVAL,
    REORDER_MARGIN,
    REORDER_TIMEOUT_MAX,
    REORDER_TIMEOUT_MIN,
    REPORT_STALE,
    UNKNOWN_RTT,
    WARMUP_TIME,
)

DEFAULT_QUEUE_LIMIT = 0.050  # seconds of paced backlog a link's tunnel queue may hold
STARTUP_QUEUE_PACKETS = 64
RESEND_LOSS_PENALTY = 0.2  # seconds of predicted delay per unit of loss, for resends
RESERVE_NOISE_MAX = 0.001  # seconds of idle delay noise above which a link is not reserved
LINK_BACKLOG = 0.002  # seconds ahead of its paced time a packet may be handed to the socket
# a link whose delay alone is more than the queue limit above the nearest link's is "far"
# (a satellite, a slow 3G): it carries bulk only while the near links have less than this
# share of the capacity, since every flow it carries waits at the receiver for its packets;
# once in use, it stays until they have FAR_SHARE + FAR_HYSTERESIS (estimates wander by a
# few %: two equal links sat on the boundary and the far one came and went)
FAR_SHARE = 0.75
FAR_HYSTERESIS = 0.05
# realtime protection: an interactive packet (classify.INTERACTIVE: VoIP, games, DNS, ICMP,
# DSCP EF) is sent twice while the link it takes loses more than this share of datagrams
DUPLICATE_LOSS = 0.005
MIN_DATA_ROOM = 256  # bytes: the shortest bulk datagram payload (its overhead is 68 more)

Transmit = Callable[[int, bytes], int]


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
        return (self.flow, self.fseq, self.seq, self.packet, self.unordered)


def _stamp(now: float) -> bytes:
    """The sender's timestamp that opens every transport plaintext."""
    return wire.INNER_TS.pack(int(now * 1e6) & 0xFFFFFFFF)


MAX_ECHOES = 8  # ECHO tokens held between two looks by the session


class Bond:
    def __init__(self, links: list[LinkConfig], now: float, transmit: Transmit, *,
                 scheduler: str = "earliest-arrival", queue_limit: float = DEFAULT_QUEUE_LIMIT,
                 outer_ipv6: bool = False, warmup: bool = True, decides_standby: bool = True) -> None:
        """`decides_standby`: this end (the client) puts backup links on standby from their
        roles; the other end (the gateway) follows what its peer's HEARD reports say."""
        self.links = [Link(c, now) for c in links]
        self._decides_standby = decides_standby
        self._last_data = now  # data sent or received on any link, last
        self._was_idle = False
        self._by_id = {link.id: link for link in self.links}
        self.transmit = transmit
        self.scheduler = make_scheduler(scheduler)
        self.queue_limit = queue_limit
        self.warmup = warmup
        self._outer_ipv6 = outer_ipv6
        self._ip_overhead = (wire.IPV6_HEADER if outer_ipv6 else wire.IPV4_HEADER) + wire.UDP_HEADER
        self._sealing = wire.TRANSPORT_HEADER_LEN + wire.TAG_LEN
        # the largest packet carried whole on every link: a fragment fits any link it is
        # moved to by a resend or a failover
        self._whole_max = min(wire.whole_mtu(link.config.mtu, outer_ipv6) for link in self.links)
        self.events: deque[LinkStateChanged] = deque()  # pulled by the core's next_event
        self.next_seq = 0
        self._flow_seq = [0] * 256
        self._queues: dict[int, deque[Queued]] = {  # per link, in send order
            link.id: deque() for link in self.links}
        self._interactive_until = -1.0
        self._reserved: Link | None = None
        self._bulk_links = self.links
        self._spill_links: list[Link] = []
        self._bulk_links_at = -1.0
        self._far_in_use = False  # far links take bulk (see FAR_SHARE)
        self._now = now
        self._classifier = FlowClassifier()
        self.echoes: list[bytes] = []  # ECHO tokens received, for the session's address check
        self._report_ts: int | None = None  # the peer's timestamp on the newest HEARD report
        self._report_at = -1.0
        self.stats = dict.fromkeys(
            ("tun_in", "tun_out", "queue_drops", "duplicates", "resent", "nacks_sent",
             "nacks_received", "bad_frames", "urgent", "fragmented", "reassembled",
             "fragments_expired", "too_big", "warmup_datagrams", "nacks_limited", "duplicated"), 0)
        self.rx = Receiver(self.stats, REORDER_TIMEOUT_MAX)  # dedup, reassembly, reordering: -> rx.delivered
        self.recovery = Recovery([link.id for link in self.links], now, self.stats)
        self._history = self.recovery.history
        self.delivered = self.rx.delivered

    def set_links(self, configs: list[LinkConfig], now: float) -> tuple[list[str], list[str]]:
        """Links added, removed or given a new role while the tunnel runs (a reload): the
        links that stay keep their state; a removed link's queue and unacknowledged packets
        move to the others, as in a failover. Returns the names added and removed."""
        wanted = {c.link_id: c for c in configs}
        gone = [lk for lk in self.links
                if lk.id not in wanted or wanted[lk.id].name != lk.name]
        kept = {lk.id: lk for lk in self.links if lk not in gone}
        moved: list[Item] = []
        resend: list[Item] = []
        for link in gone:  # taken first: a new link may reuse the id
            moved += [q.item() for q in self._queues.pop(link.id)]
            resend += self._history.take_unacknowledged(link.id, now)
            self._history.drop_link(link.id)
        added: list[str] = []
        links: list[Link] = []
        for c in sorted(configs, key=lambda c: c.link_id):
            old = kept.get(c.link_id)
            if old is None:
                old = Link(c, now)
                self._queues[c.link_id] = deque()
                self._history.add_link(c.link_id)
                added.append(c.name)
            elif old.config != c:
                old.config, old.role = c, c.role
            links.append(old)
        self.links = links
        self._by_id = {link.id: link for link in links}
        self._whole_max = min(wire.whole_mtu(link.config.mtu, self._outer_ipv6) for link in links)
        self._bulk_links_at = -1.0
        if self._reserved in gone:
            self._reserved = None
        if resend:
            self._resend(resend, now)
        self._requeue(moved, now)
        self._update_modes(now)
        return added, [link.name for link in gone]

    @property
    def reorder(self) -> ReorderBuffer:
        return self.rx.reorder

    # ------------------------------------------------------------------ helpers

    def link(self, link_id: int) -> Link | None:
        return self._by_id.get(link_id)

    def wire_size(self, plain_len: int) -> int:
        return plain_len + self._sealing + self._ip_overhead

    def _data_size(self, payload_len: int) -> int:
        """Bytes on the wire of a datagram carrying a DATA payload of this length alone."""
        return self.wire_size(payload_len + wire.INNER_TS_LEN + wire.DATA_HEADER_LEN)

    def _max_plain(self, link: Link) -> int:
        return link.config.mtu - self._ip_overhead - self._sealing

    def _control_for(self, link: Link, now: float, room: int) -> bytes:
        """Feedback owed on this link and the HEARD report, if due and they fit in `room`."""
        out = b""
        if room >= wire.FEEDBACK.size and link.report.due(now):
            out = wire.encode_frame(link.report.feedback(link.id, now))
        if room - len(out) >= wire.HEARD.size and now >= link.last_heard_report_tx + HEARD_INTERVAL:
            out += self._heard_report(link, now)
        return out

    def _heard_report(self, link: Link, now: float) -> bytes:
        """Which links this end hears, sent on `link` (on every link in turn, so that it
        reaches the peer over whichever still works)."""
        link.last_heard_report_tx = now
        known = up = standby = 0
        for lk in self.links:
            if lk.ever_up:
                known |= 1 << lk.id
            # heard lately, not "receive health up": that also falls when answers to what this
            # end sent come late (behind the peer's queue on a satellite), which says nothing
            # about the direction the report is about
            if lk.last_heard >= 0 and now - lk.last_heard < lk.heard_window():
                up |= 1 << lk.id
            if lk.standby:
                standby |= 1 << lk.id
        return wire.encode_frame(wire.Heard(known, up, standby))

    def _send(self, link: Link, plaintext: bytes, now: float, data: bool) -> int:
        counter = self.transmit(link.id, plaintext)
        if counter < 0:  # not sent (no keys, or no address with budget): nothing is counted, or
            return counter  # the estimator would read it as lost
        link.on_sent(self.wire_size(len(plaintext)), now, data)
        if data:
            self._last_data = now
        return counter

    def _send_control(self, link: Link, frames: bytes, now: float) -> None:
        self._send(link, _stamp(now) + frames, now, data=False)

    # ------------------------------------------------------------------ send side

    def on_tun_packet(self, packet: bytes, now: float) -> None:
        self._now = now
        self.stats["tun_in"] += 1
        flow, klass = self._classifier.classify(packet, now)
        urgent = klass != BULK
        if klass == INTERACTIVE:
            self._interactive_until = now + INTERACTIVE_HOLD
        if wire.fragments_needed(len(packet), self._whole_max) > wire.MAX_FRAGMENTS:
            self.stats["too_big"] += 1
            return
        if urgent:  # ahead of every queued bulk packet
            pieces = [packet]
            if len(packet) > self._whole_max:
                pieces = wire.split(packet, self._whole_max)
                self.stats["fragmented"] += 1
            fseq = self._take_fseq(flow)
            for payload in pieces:
                size = self._data_size(len(payload))
                link = pick_urgent(self.links, size, now, LINK_BACKLOG)
                self.stats["urgent"] += 1
                link.take_pace(size, now)
                seq = self._take_seq()
                self._send_data(link, flow, fseq, seq, payload, True, now)
                if klass == INTERACTIVE and link.loss > DUPLICATE_LOSS:
                    self._duplicate(link, flow, fseq, seq, payload, size, now)
            return
        # numbers are taken only once the tunnel has accepted the packet: a dropped packet
        # must leave no gap in its flow's or the global sequence, or the receiver would hold
        # the flow until every link (the slowest, sparsest too) showed the gap was never sent
        full = self._data_size(min(len(packet), self._whole_max))
        admitted = self._admit(full, now)
        if admitted is None:
            self.stats["queue_drops"] += 1
            return
        link = admitted
        fseq = self._take_fseq(flow)
        room = self._room(link)
        if len(packet) <= room:
            size = self._data_size(len(packet))
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
            size = self._data_size(len(payload))
            self._enqueue(link, Queued(size, flow, fseq, self._take_seq(), payload, False), now)
            if end >= total:
                return
            pos, index = end, index + 1
            link = self.scheduler.pick(self._bulk_candidates(now)[0], full, now)
            room = self._room(link)

    def _room(self, link: Link) -> int:
        """DATA payload bytes for bulk on a link: on a slow reserved link, no more than it
        sends in RESERVED_DATAGRAM_TIME, since an interactive packet waits behind the one in
        flight and about one queued (12 ms each at 1 Mbit/s for full datagrams)."""
        if not link.reserved:
            return self._whole_max
        fits = int(link.capacity() * RESERVED_DATAGRAM_TIME / 8) - self._data_size(0)
        return min(self._whole_max, max(MIN_DATA_ROOM, fits))

    def _take_fseq(self, flow: int) -> int:
        fseq = self._flow_seq[flow]
        self._flow_seq[flow] = (fseq + 1) & 0xFFFF
        return fseq

    def _take_seq(self) -> int:
        seq = self.next_seq
        self.next_seq = (seq + 1) & (SEQ_MOD - 1)
        return seq

    def _admit(self, size: int, now: float) -> Link | None:
        """The earliest arrival among the links with room: a full link's packet goes to the
        next best (a satellite behind a full 4G link adds capacity, not loss), and only when
        all of those are full to a far link not yet measured. None when every link is full:
        the packet is dropped, and the inner flow slows down."""
        links, spill = self._bulk_candidates(now)
        for group in (links, spill):
            open_links = [lk for lk in group if lk.usable and self._has_room(lk, now)]
            if open_links:
                return self.scheduler.pick(open_links, size, now)
        if any(lk.usable for lk in self.links):
            return None
        link = self.scheduler.pick(self.links, size, now)  # none usable: the likeliest
        return link if self._has_room(link, now) else None

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
            reach = min(lk.one_way_delay() for lk in usable) + self.queue_limit
            far = [lk for lk in usable if lk.one_way_delay() > reach]
            unproven = [lk for lk in far if not lk.proven]
            near = sum(lk.capacity() for lk in usable if lk.one_way_delay() <= reach)
            # a far link kept off measures nothing more: judge it by what it proved lately,
            # or one low estimate (a cut, a dip) would keep it off for good
            far_cap = sum(lk.peak_capacity() for lk in far if lk.proven)
            share = FAR_SHARE + (FAR_HYSTERESIS if self._far_in_use else 0.0)
            near_dominates = near >= share * (near + far_cap)
            self._far_in_use = bool(far) and not near_dominates
            kept_off = far if near_dominates else unproven
            links = [lk for lk in self.links if lk not in kept_off]
            spill = unproven
        self._bulk_links, self._spill_links = links, spill
        return links, spill

    def _has_room(self, link: Link, now: float) -> bool:
        """The link's tunnel queue is under `queue_limit` of paced time. While its estimate is
        still ramping up, time at that estimate understates the room: a few packets more."""
        return (link.backlog_end(now) - now <= self.queue_limit
                or (link.startup and len(self._queues[link.id]) < STARTUP_QUEUE_PACKETS))

    def _enqueue(self, link: Link, queued: Queued, now: float) -> None:
        """Queue a packet on a link and hand what its pacing allows to the socket."""
        assign(link, queued.size)
        self._queues[link.id].append(queued)
        self._pump(link, now)

    def _pump(self, link: Link, now: float) -> None:
        """Hand packets to the link at its pacing rate (up to LINK_BACKLOG ahead)."""
        queue = self._queues[link.id]
        limit = now + LINK_BACKLOG
        while queue and link.tx_clock <= limit:
            q = queue.popleft()
            link.queued_bytes -= q.size
            link.take_pace(q.size, now)
            self._send_data(link, q.flow, q.fseq, q.seq, q.packet, q.unordered, now)
        warming = not queue and link.warming(now)
        while warming and link.tx_clock <= limit:
            size = self._send_pad(link, now)
            link.take_pace(size, now)
        link.on_backlog(now, bool(queue) or warming)

    def _send_pad(self, link: Link, now: float) -> int:
        """A datagram of padding as long as a bulk one (feedback owed rides along); returns
        its size on the wire."""
        room = wire.DATA_HEADER_LEN + self._room(link)
        control = self._control_for(link, now, room - 1)
        pad = wire.encode_frame(wire.Pad(room - len(control) - 1))
        plaintext = _stamp(now) + control + pad
        if self._send(link, plaintext, now, data=True) >= 0:
            link.on_sent_expecting_answer(now, data=True)
        self.stats["warmup_datagrams"] += 1
        return self.wire_size(len(plaintext))

    def _send_data(self, link: Link, flow: int, fseq: int, seq: int, packet: bytes,
                   unordered: bool, now: float) -> None:
        """`unordered`: sent outside the link's queue order (urgent or resent), so it must not
        tell the receiver that every lower seq assigned to this link has been sent."""
        body = wire.encode_data_header(flow, fseq, seq, unordered) + packet
        room = self._max_plain(link) - wire.INNER_TS_LEN - len(body)
        control = self._control_for(link, now, room)
        plaintext = _stamp(now) + control + body
        counter = self._send(link, plaintext, now, data=True)
        if counter < 0:
            return
        link.on_sent_expecting_answer(now, data=True)
        self._history.record(link.id, counter, now, flow, fseq, seq, packet)

    def _duplicate(self, first: Link, flow: int, fseq: int, seq: int, payload: bytes, size: int,
                   now: float) -> None:
        """Realtime protection: a copy of an interactive packet whose link is lossy, on the
        next-best usable link (or the same one if it is the only one: random losses rarely
        take two datagrams in a row). Same numbers: the receiver keeps whichever copy
        arrives first and counts the other as a duplicate. A NACK recovers a loss a round
        trip later, too late for a voice frame."""
        others = [lk for lk in self.links if lk is not first and lk.usable]
        link = pick_urgent(others, size, now, LINK_BACKLOG) if others else first
        link.take_pace(size, now)
        self._send_data(link, flow, fseq, seq, payload, True, now)
        self.stats["duplicated"] += 1

    def _resend(self, items: list[Item], now: float) -> None:
        """Put packets at the head of a link's queue and send. They pass the queue, so the
        link is chosen as for urgent packets: by delay plus what the link already holds."""
        batches: dict[int, list[Queued]] = {}
        for item in items:
            size = self._data_size(len(item[3]))
            link = pick_urgent(self.links, size, now, LINK_BACKLOG, loss_penalty=RESEND_LOSS_PENALTY)
            assign(link, size)
            batches.setdefault(link.id, []).append(Queued(size, *item))
        # in their own order, ahead of the queue: a failover resends hundreds of packets, and
        # putting each at the head in turn sent the oldest, which the receiver waits on, last
        for link_id, batch in batches.items():
            self._queues[link_id].extendleft(reversed(batch))
            self._pump(self._by_id[link_id], now)
        self.stats["resent"] += len(items)

    def _failover(self, link: Link, now: float) -> None:
        """A link went quiet: move its queue to the others and resend what it carried
        that the peer has not acknowledged."""
        self._update_modes(now)  # a backup takes over before anything is moved
        queued = [q.item() for q in self._queues[link.id]]
        self._queues[link.id].clear()
        link.queued_bytes = 0
        link.tx_clock = now
        for other in self.links:  # they must carry more now: find their capacity quickly
            if other is not link and other.usable:
                other.restart_startup()
        unacked = self._history.take_unacknowledged(link.id, now)
        if unacked:
            self._resend(unacked, now)
        self._requeue(queued, now)

    def _requeue(self, items: list[Item], now: float) -> None:
        """Queued packets of a link that stopped (or went away), in their order, onto the
        links the scheduler picks for them now."""
        for item in items:
            size = self._data_size(len(item[3]))
            self._enqueue(self.scheduler.pick(self.links, size, now), Queued(size, *item), now)

    # ------------------------------------------------------------------ receive side

    def on_plaintext(self, link_id: int, plaintext: bytes, size: int, counter: int,
                     now: float, arrival: float | None = None) -> None:
        """An authenticated datagram's plaintext arrived on a link. `arrival` (<= now): when
        it reached the host, if the kernel stamped it; delays, delivery rates and RTTs are
        measured from it, so time the daemon took to read does not count."""
        link = self._by_id.get(link_id)
        if link is None:
            self.stats["bad_frames"] += 1
            return
        try:
            ts, frames = wire.decode_plaintext(plaintext)
        except wire.WireError:
            self.stats["bad_frames"] += 1
            return
        changed = link.on_heard(now)
        if changed is not None:
            self.events.append(LinkStateChanged(link.name, changed, "rx", "heard again"))
            if changed is Health.UP and self.warmup and not link.proven:
                link.warm_until = now + WARMUP_TIME
        self._now = now
        self._detect_gap(link, counter, now)
        now_us = int((now if arrival is None else arrival) * 1e6)
        # only data and probes are answered with feedback: feedback never answers feedback
        wants = any(isinstance(f, wire.Data | wire.Probe | wire.Pad) for f in frames)
        if frames and isinstance(frames[-1], wire.Data | wire.Pad):
            self._last_data = now  # data or padding arrived: the tunnel is busy
        link.report.on_datagram(now_us / 1e6, now_us, size, ts, counter, wants)
        for frame in frames:
            if isinstance(frame, wire.Data):
                self._on_data(link, frame, now)
            elif isinstance(frame, wire.Feedback):
                self._on_feedback(frame, now, now_us)
            elif isinstance(frame, wire.Probe):
                self._cover(link, frame.head)
            elif isinstance(frame, wire.Nack):
                self._on_nack(frame, now, (link.id, counter))
            elif isinstance(frame, wire.Heard):
                self._on_heard_report(frame, ts, now)
            elif isinstance(frame, wire.Challenge):  # answered at once, on the same link
                self._send_control(link, wire.encode_frame(wire.Echo(frame.token)), now)
            elif isinstance(frame, wire.Echo) and len(self.echoes) < MAX_ECHOES:
                self.echoes.append(frame.token)
        self._release(now)

    def _on_heard_report(self, report: wire.Heard, ts: int, now: float) -> None:
        """The peer says which of our links it hears. Reports travel on every link with
        different delays: one older than the newest taken is ignored."""
        if (self._report_ts is not None and now - self._report_at < REPORT_STALE
                and seq_diff(ts, self._report_ts) <= 0):
            return
        self._report_ts, self._report_at = ts, now
        for link in self.links:
            bit = 1 << link.id
            if not self._decides_standby:
                link.peer_standby = bool(report.standby & bit)
            if not report.known & bit or link.id >= 32:
                continue
            changed = link.on_peer_report(now, bool(report.up & bit))
            if changed is None:
                continue
            cause = "the peer hears it again" if changed is Health.UP else "the peer does not hear it"
            self.events.append(LinkStateChanged(link.name, changed, "tx", cause))
            if changed is Health.SUSPECT and link.health is Health.UP:
                self._failover(link, now)
        if not self._decides_standby:
            self._update_modes(now)

    def _cover(self, link: Link, head: int) -> None:
        if not link.head_known or seq_diff(head, link.head_cover) > 0:
            link.head_cover = head
            link.head_known = True

    def _on_data(self, link: Link, frame: wire.Data, now: float) -> None:
        if not frame.unordered:
            self._cover(link, (frame.seq + 1) & (SEQ_MOD - 1))
        self.rx.on_data(frame, now)

    def _on_feedback(self, fb: wire.Feedback, now: float, now_us: int) -> None:
        link = self._by_id.get(fb.link)
        if link is None:
            return
        link.on_feedback(now, now_us, fb.echo_ts, fb.echo_hold_us, fb.rx_time_us, fb.rx_bytes,
                         fb.rx_packets, fb.owd_min_us, fb.highest_counter)
        if link.on_answered(now) is not None:
            self.events.append(LinkStateChanged(link.name, Health.UP, "tx", "what it sent is answered"))
        self._history.acknowledge(fb.link, fb.highest_counter)

    def _detect_gap(self, link: Link, counter: int, now: float) -> None:
        highest = link.report.highest_counter
        if highest < 0 or counter <= highest + 1:
            return  # no gap (every datagram passes here: the call below is for gaps only)
        nack = self.recovery.on_gap(link.id, highest, counter, now)
        if nack is None:
            return
        targets = nack_targets(self.links, link)
        frame = wire.encode_frame(nack)
        for target in targets:
            self._send_control(target, frame, now)
        self.stats["nacks_sent"] += 1
        # hold the gap for a round trip on the slower of them (the resend may take the other)
        self.recovery.hold_for(max((lk.srtt for lk in targets if lk.srtt is not None),
                                   default=UNKNOWN_RTT), now)

    def _on_nack(self, nack: wire.Nack, now: float, datagram: tuple[int, int]) -> None:
        """Resend what a NACK names, if it was sent and not resent yet."""
        items = self.recovery.on_nack(nack, now, datagram)
        if items:
            self._resend(items, now)

    def _covered(self, seq: int) -> bool:
        if self.recovery.holding(self._now):
            return False
        for link in self.links:
            if (link.head_known and self._now - link.last_heard < LIVE_WINDOW
                    and seq_diff(link.head_cover, seq) <= 0):
                return False
        return True

    def reorder_timeout(self) -> float:
        """How long a gap may hold a flow: the spread of one-way delays across live links."""
        stats = [(lk.report.owd_avg, lk.report.owd_dev) for lk in self.links
                 if lk.report.owd_avg is not None and self._now - lk.last_heard < LIVE_WINDOW]
        spread = 0.0
        if stats:
            hi = max(avg + 3 * dev for avg, dev in stats)
            lo = min(avg - dev for avg, dev in stats)
            spread = (hi - lo) / 1e6
        timeout = min(REORDER_TIMEOUT_MAX, max(REORDER_TIMEOUT_MIN, spread + REORDER_MARGIN))
        if self.recovery.holding(self._now):
            timeout = max(timeout, self.recovery.hold_until - self._now + REORDER_MARGIN)
        return timeout

    def _release(self, now: float) -> None:
        self._now = now
        if self.rx.reorder.held:
            self.rx.release(now, self._covered, self.reorder_timeout())

    # ------------------------------------------------------------------ timers

    def _reserve(self, now: float) -> None:
        """While interactive traffic flows, the lowest-latency usable link, if its delay is
        steady, is paced just under its estimate so its bottleneck queue stays near empty."""
        want = None
        if now < self._interactive_until:
            usable = [lk for lk in self.links if lk.usable and lk.srtt is not None]
            if len(usable) > 1:
                want = min(usable, key=lambda lk: lk.min_rtt.get(lk.srtt or 1.0))
                if want.delay_noise > RESERVE_NOISE_MAX:
                    # a jittery link cannot promise low delay anyway, and the queue of about
                    # a packet a reserved link is held to cannot be told from its jitter
                    want = None
        if want is not self._reserved:
            for link in self.links:
                link.set_reserved(link is want)
            self._reserved = want

    def on_timer(self, now: float) -> None:
        self._now = now
        self._update_modes(now)
        idle = self._was_idle
        self._reserve(now)
        self.rx.on_timer(now)
        for link in self.links:
            self._pump(link, now)
            quiet = now - max(link.last_heard, link.silent_since)
            changed = link.check_silence(now)
            if changed is not None:
                cause = f"nothing heard for {quiet * 1000:.0f} ms"
                self.events.append(LinkStateChanged(link.name, changed, "rx", cause))
                if changed is Health.SUSPECT and link.tx_health is Health.UP:
                    self._failover(link, now)
            if link.check_answer(now) is not None:
                waited = (now - (link.data_unanswered_since or now)) * 1000
                cause = f"nothing it sent was answered for {waited:.0f} ms"
                self.events.append(LinkStateChanged(link.name, Health.SUSPECT, "tx", cause))
                if link.health is Health.UP:
                    self._failover(link, now)
            self._keepalive(link, now, idle)
        self._release(now)

    def _head(self, link: Link) -> int:
        """Every seq below this that was assigned to the link has been sent on it."""
        queue = self._queues[link.id]
        return queue[0].seq if queue else self.next_seq

    def _keepalive(self, link: Link, now: float, idle: bool) -> None:
        """A probe when the link sent nothing for its probe interval. While the tunnel is
        idle or the link on standby, probes expect no quick answer and answers are not sent
        on their own: they ride the next probe (the idle cost, core/link.py)."""
        slow = idle or link.standby
        # the peer turns idle up to a one-way delay later (its last data came later): keep
        # answering at once for a while, or its probes would time out
        quiet_answers = link.standby or (idle and now > self._last_data + IDLE_AFTER + IDLE_GRACE)
        if now >= link.last_tx + link.probe_interval(idle):
            frames = wire.PROBE.pack(wire.FRAME_PROBE, self._head(link))
            frames += self._control_for(link, now, 1 << 16)
            self._send_control(link, frames, now)
            link.last_tx = now  # even if it could not leave: the next try is an interval away
            if not slow:
                link.on_sent_expecting_answer(now, data=False)
        elif not quiet_answers and link.report.due(now):
            self._send_control(link, self._control_for(link, now, 1 << 16), now)

    @property
    def now(self) -> float:
        """The latest time the bond was given."""
        return self._now

    def start_warmup(self, link_id: int, now: float) -> None:
        """(Re)start a link's warm-up from now, if it is still unmeasured: the gateway calls
        it once the link's address is validated, since until then it may send the link only
        3x what it received (a satellite's warm-up was spent at that budget, and the link
        then measured low stayed off bulk as a far link)."""
        link = self._by_id.get(link_id)
        if link is not None and self.warmup and not link.proven and link.usable:
            link.warm_until = now + WARMUP_TIME

    def idle(self, now: float) -> bool:
        """No data sent or received on any link for IDLE_AFTER."""
        return now - self._last_data > IDLE_AFTER

    def _update_modes(self, now: float) -> None:
        """Idle or busy, and which backup links stand by (the client decides from the roles,
        the gateway follows its HEARD reports). Leaving a slow mode restarts silence counting."""
        idle = self.idle(now)
        # a backup stands by while a primary is healthy; at the gateway, "backup" is what the
        # client's reports say, and it stops standing by as soon as no other link is healthy
        backup = [lk.role == BACKUP if self._decides_standby else lk.peer_standby for lk in self.links]
        primary_up = any(lk.healthy for lk, b in zip(self.links, backup, strict=True) if not b)
        for lk, b in zip(self.links, backup, strict=True):
            want = b and primary_up
            if want != lk.standby:
                self._set_standby(lk, want, now)
        if idle != self._was_idle:
            self._was_idle = idle
            if not idle:
                for lk in self.links:
                    lk.quiet_from = now
        for lk in self.links:
            lk.peer_interval = max(PROBE_INTERVAL, lk.probe_interval(idle))

    def _set_standby(self, link: Link, standby: bool, now: float) -> None:
        link.standby = standby
        link.quiet_from = now
        link.awaiting_since = link.data_unanswered_since = None
        if standby:
            cause = "a primary link is usable"
        else:
            cause = "no primary link is usable" if self._decides_standby else "the peer uses it again"
        self.events.append(LinkStateChanged(link.name, link.health, "role",
                                     f"{'standby' if standby else 'active'}: {cause}"))

    def next_deadline(self) -> float:
        deadline = float("inf")
        idle = self.idle(self._now)
        if not idle:  # the moment it turns idle, probing slows down
            deadline = self._last_data + IDLE_AFTER + 0.001
        for link in self.links:
            if self._queues[link.id] or link.warming(self._now):
                deadline = min(deadline, link.tx_clock - LINK_BACKLOG)
            deadline = min(deadline, link.last_tx + link.probe_interval(idle))
            if link.report.pending and not (link.standby or (
                    idle and self._now > self._last_data + IDLE_AFTER + IDLE_GRACE)):
                deadline = min(deadline, link.report.last_sent + FEEDBACK_INTERVAL)
            deadline = min(deadline, link.silence_deadline(self._now), link.answer_deadline())
        if self.rx.reorder.held:
            held_deadline = self.rx.next_deadline(self.reorder_timeout())
            if held_deadline is not None:
                deadline = min(deadline, held_deadline)
        return deadline

    def queue_length(self) -> int:
        return sum(len(q) for q in self._queues.values())

    def on_new_send_keys(self) -> None:
        """Counters restart under new keys: forget the counter-indexed send history."""
        self._history.forget()

    def reset_receive(self) -> None:
        """The peer restarted: its sequence numbers start over."""
        self.rx.reset()
        self._report_ts = None
        for link in self.links:
            link.head_known = False
            link.on_peer_restart()

    def on_new_recv_keys(self) -> None:
        for link in self.links:
            link.on_new_session()

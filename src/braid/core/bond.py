"""The multipath data plane of one tunnel (one client <-> gateway pair), without crypto.

Send side (core/sender.py): classify -> number (global seq, per-flow seq) -> tunnel queue
-> scheduler picks a link -> frames handed to `transmit(link_id, frames) -> packet number`
(the session numbers them per link, and stamps and seals them when the daemon pulls
them). Receive side: plaintext frames -> feedback to estimators, probes to the links' send
frontiers, data to the receiver (core/receiver.py: duplicate filter, fragments, per-flow
reorder buffer) -> `delivered`. Recovery (core/recovery.py): a gap in a link's packet
numbers makes the receiver send a NACK; the sender resends those packets on the best
link. A link turning suspect has its unacknowledged recent packets resent on the others.
Health: each link's two directions (core/health.py) are fed here with what is heard on
it, the peer's receiver reports that answer what was sent on it, and its HEARD reports.
Warm-up: a link that comes up unmeasured is kept busy with padding (while data leaves it
idle) until its first startup has measured its capacity, or WARMUP_TIME passes; the first
transfer then finds every link's rate already known instead of ramping from a guess.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

from . import wire
from .events import LinkStateChanged
from .health import Health
from .link import BACKUP, Link, LinkConfig
from .receiver import Receiver
from .recovery import Item, Recovery
from .reorder import ReorderBuffer
from .replay import SEQ_MOD, seq_diff
from .scheduler import make_scheduler, nack_rtt
from .sender import DEFAULT_QUEUE_LIMIT, Framing, Sender
from .timers import (
    FEEDBACK_INTERVAL,
    HEARD_INTERVAL,
    IDLE_AFTER,
    IDLE_GRACE,
    LINK_BACKLOG,
    LIVE_WINDOW,
    PROBE_INTERVAL,
    REORDER_MARGIN,
    REORDER_TIMEOUT_MAX,
    REORDER_TIMEOUT_MIN,
    REPORT_STALE,
    WARMUP_TIME,
)

Transmit = Callable[[int, bytes], int]


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
        self.warmup = warmup
        self.framing = Framing(outer_ipv6)
        self.events: deque[LinkStateChanged] = deque()  # pulled by the core's next_event
        self._now = now
        self.echoes: list[bytes] = []  # ECHO tokens received, for the session's address check
        self._report_ts: int | None = None  # the peer's timestamp on the newest HEARD report
        self._report_at = -1.0
        self.stats = dict.fromkeys(
            ("tun_in", "tun_out", "queue_drops", "duplicates", "resent", "nacks_sent",
             "nacks_received", "bad_frames", "urgent", "fragmented", "reassembled",
             "fragments_expired", "too_big", "warmup_datagrams", "nacks_limited", "duplicated",
             "duplicated_bytes", "resend_copies", "resend_copy_bytes", "resent_kept"), 0)
        self.rx = Receiver(self.stats, REORDER_TIMEOUT_MAX)  # dedup, reassembly, reordering: -> rx.delivered
        self.recovery = Recovery([link.id for link in self.links], now, self.stats)
        self._history = self.recovery.history
        self.delivered = self.rx.delivered
        self.tx = Sender(self.links, make_scheduler(scheduler), self.framing, self._history, self.stats,
                         self._send, self._control_for, queue_limit=queue_limit)

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
            moved += self.tx.take_queue(link)
            resend += self._history.take_unacknowledged(link.id, now)
            self._history.drop_link(link.id)
        added: list[str] = []
        links: list[Link] = []
        for c in sorted(configs, key=lambda c: c.link_id):
            old = kept.get(c.link_id)
            if old is None:
                old = Link(c, now)
                self._history.add_link(c.link_id)
                added.append(c.name)
            elif old.config != c:
                old.config, old.role = c, c.role
            links.append(old)
        self.links = links
        self._by_id = {link.id: link for link in links}
        self.tx.set_links(links)
        if resend:
            self.tx.resend(resend, now)
        self.tx.requeue(moved, now)
        self._update_modes(now)
        return added, [link.name for link in gone]

    @property
    def reorder(self) -> ReorderBuffer:
        return self.rx.reorder

    # ------------------------------------------------------------------ helpers

    def link(self, link_id: int) -> Link | None:
        return self._by_id.get(link_id)

    def wire_size(self, plain_len: int) -> int:
        return self.framing.wire_size(plain_len)

    def on_tun_packet(self, packet: bytes, now: float) -> None:
        self._now = now
        self.tx.on_tun_packet(packet, now)

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
            if lk.health.ever_up:
                known |= 1 << lk.id
            # heard lately, not "receive health up": that also falls when answers to what this
            # end sent come late (behind the peer's queue on a satellite), which says nothing
            # about the direction the report is about
            if lk.health.heard_lately(now):
                up |= 1 << lk.id
            if lk.standby:
                standby |= 1 << lk.id
        return wire.encode_frame(wire.Heard(known, up, standby))

    def _send(self, link: Link, frames: bytes, now: float, data: bool) -> int:
        """Hand a datagram's frames to the session; returns its packet number, or -1."""
        number = self.transmit(link.id, frames)
        if number < 0:  # not sent (no keys, or no address with budget): nothing is counted, or
            return number  # the estimator would read it as lost
        link.on_sent(self.wire_size(wire.INNER_TS_LEN + len(frames)), now, data, number)
        if data:
            self._last_data = now
        return number

    def _send_control(self, link: Link, frames: bytes, now: float) -> None:
        self._send(link, frames, now, data=False)

    def _failover(self, link: Link, now: float) -> None:
        """A link went quiet: move its queue to the others and resend what it carried
        that the peer has not acknowledged."""
        self._update_modes(now)  # a backup takes over before anything is moved
        queued = self.tx.take_queue(link)
        link.pacer.restart(now)
        for other in self.links:  # they must carry more now: find their capacity quickly
            if other is not link and other.usable:
                other.restart_startup()
        unacked = self._history.take_unacknowledged(link.id, now)
        if unacked:
            self.tx.resend(unacked, now)
        self.tx.requeue(queued, now)

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
        changed = link.health.on_heard(now)
        if changed is not None:
            link.readmit(now)
            self.events.append(LinkStateChanged(link.name, changed, "rx", "heard again"))
            if self.warmup and not link.est.proven:
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
                self._on_sent_below(link, frame.head)
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
            changed = link.health.on_peer_report(now, bool(report.up & bit), link.response_timeout())
            if changed is None:
                continue
            if changed is Health.UP:
                link.readmit(now)
            cause = "the peer hears it again" if changed is Health.UP else "the peer does not hear it"
            self.events.append(LinkStateChanged(link.name, changed, "tx", cause))
            if changed is Health.SUSPECT and link.health.rx is Health.UP:
                self._failover(link, now)
        if not self._decides_standby:
            self._update_modes(now)

    def _on_sent_below(self, link: Link, head: int) -> None:
        if not link.sent_below_known or seq_diff(head, link.sent_below) > 0:
            link.sent_below = head
            link.sent_below_known = True

    def _on_data(self, link: Link, frame: wire.Data, now: float) -> None:
        if not frame.unordered:
            self._on_sent_below(link, (frame.seq + 1) & (SEQ_MOD - 1))
        self.rx.on_data(frame, now)

    def _on_feedback(self, fb: wire.Feedback, now: float, now_us: int) -> None:
        link = self._by_id.get(fb.link)
        if link is None:
            return
        link.on_feedback(fb, now, now_us)
        if link.health.on_answered() is not None:
            link.readmit(now)
            self.events.append(LinkStateChanged(link.name, Health.UP, "tx", "what it sent is answered"))
        self._history.acknowledge(fb.link, fb.highest_counter)

    def _detect_gap(self, link: Link, counter: int, now: float) -> None:
        highest = link.report.highest_counter
        if highest < 0 or counter <= highest + 1:
            return  # no gap (every datagram passes here: the call below is for gaps only)
        link.report.last_gap = now  # the way back lost (or reordered) datagrams: see LinkHealth
        nack = self.recovery.on_gap(link.id, highest, counter, now)
        if nack is None:
            return
        targets = self.tx.choice.nack_targets(link)
        frame = wire.encode_frame(nack)
        for target in targets:
            self._send_control(target, frame, now)
        self.stats["nacks_sent"] += 1
        # hold the gap for a round trip on the slower of them (the resend may take the other)
        self.recovery.hold_for(nack_rtt(targets), now)

    def _on_nack(self, nack: wire.Nack, now: float, datagram: tuple[int, int]) -> None:
        """Resend what a NACK names, if it was sent and not resent yet."""
        items = self.recovery.on_nack(nack, now, datagram)
        self.tx.note_recovery(now)
        if items:
            self.tx.resend(items, now, copies=True)

    def _lost(self, seq: int) -> bool:
        """A gap before `seq` is lost: every live link has sent past it (and no NACK's
        resend is awaited)."""
        if self.recovery.holding(self._now):
            return False
        for link in self.links:
            if (link.sent_below_known and self._now - link.health.last_heard < LIVE_WINDOW
                    and seq_diff(link.sent_below, seq) <= 0):
                return False
        return True

    def reorder_timeout(self) -> float:
        """How long a gap may hold a flow: the spread of one-way delays across live links."""
        stats = [(lk.report.owd_avg, lk.report.owd_dev) for lk in self.links
                 if lk.report.owd_avg is not None and self._now - lk.health.last_heard < LIVE_WINDOW]
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
            self.rx.release(now, self._lost, self.reorder_timeout())

    # ------------------------------------------------------------------ timers

    def on_timer(self, now: float) -> None:
        self._now = now
        self._update_modes(now)
        idle = self._was_idle
        self.tx.reserve(now)
        self.rx.on_timer(now)
        for link in self.links:
            self.tx.pump(link, now)
            health = link.health
            quiet = now - max(health.last_heard, health.silent_since)
            changed = health.check_silence(now, link.response_timeout())
            if changed is not None:
                cause = f"nothing heard for {quiet * 1000:.0f} ms"
                self.events.append(LinkStateChanged(link.name, changed, "rx", cause))
                if changed is Health.SUSPECT and health.tx is Health.UP:
                    self._failover(link, now)
            if link.check_answer(now) is not None:
                waited = (now - (health.data_unanswered_since or now)) * 1000
                cause = f"nothing it sent was answered for {waited:.0f} ms"
                self.events.append(LinkStateChanged(link.name, Health.SUSPECT, "tx", cause))
                if health.rx is Health.UP:
                    self._failover(link, now)
            self._keepalive(link, now, idle)
        self._release(now)

    def _keepalive(self, link: Link, now: float, idle: bool) -> None:
        """A probe when the link sent nothing for its probe interval. While the tunnel is
        idle or the link on standby, probes expect no quick answer and answers are not sent
        on their own: they ride the next probe (the idle cost, core/link.py)."""
        slow = idle or link.standby
        # the peer turns idle up to a one-way delay later (its last data came later): keep
        # answering at once for a while, or its probes would time out
        quiet_answers = link.standby or (idle and now > self._last_data + IDLE_AFTER + IDLE_GRACE)
        if now >= link.last_tx + link.probe_interval(idle):
            frames = wire.PROBE.pack(wire.FRAME_PROBE, self.tx.head(link))
            frames += self._control_for(link, now, 1 << 16)
            self._send_control(link, frames, now)
            link.last_tx = now  # even if it could not leave: the next try is an interval away
            if not slow:
                link.health.on_sent_expecting_answer(now, data=False)
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
        if link is not None and self.warmup and not link.est.proven and link.usable:
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
                    lk.health.quiet_from = now
        for lk in self.links:
            lk.health.peer_interval = max(PROBE_INTERVAL, lk.probe_interval(idle))

    def _set_standby(self, link: Link, standby: bool, now: float) -> None:
        link.standby = standby
        link.health.quiet_from = now
        link.health.forget_awaited()
        if standby:
            cause = "a primary link is usable"
        else:
            cause = "no primary link is usable" if self._decides_standby else "the peer uses it again"
        self.events.append(LinkStateChanged(link.name, link.health.rx, "role",
                                     f"{'standby' if standby else 'active'}: {cause}"))

    def next_deadline(self) -> float:
        deadline = float("inf")
        idle = self.idle(self._now)
        if not idle:  # the moment it turns idle, probing slows down
            deadline = self._last_data + IDLE_AFTER + 0.001
        for link in self.links:
            if self.tx.backlogged(link) or link.warming(self._now):
                deadline = min(deadline, link.pacer.clock - LINK_BACKLOG)
            deadline = min(deadline, link.last_tx + link.probe_interval(idle))
            if link.report.pending and not (link.standby or (
                    idle and self._now > self._last_data + IDLE_AFTER + IDLE_GRACE)):
                deadline = min(deadline, link.report.last_sent + FEEDBACK_INTERVAL)
            deadline = min(deadline, link.silence_deadline(), link.answer_deadline())
        if self.rx.reorder.held:
            held_deadline = self.rx.next_deadline(self.reorder_timeout())
            if held_deadline is not None:
                deadline = min(deadline, held_deadline)
        return deadline

    def queue_length(self) -> int:
        return self.tx.queue_length()

    def reset_receive(self) -> None:
        """The peer restarted (its handshake says so): its sequence numbers start over."""
        self.rx.reset()
        self._report_ts = None
        for link in self.links:
            link.sent_below_known = False
            link.on_peer_restart()

    def restart_numbers(self) -> None:
        """The first datagram of the peer's new life: its packet numbers and report counts
        start over from here."""
        for link in self.links:
            link.restart_numbers()

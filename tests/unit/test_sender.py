"""The send side of a bond on its own (core/sender.py): numbering, admission, fragments,
resends; its links are real Link objects, its socket a recorder."""

from braid.core import wire
from braid.core.estimator import Mode
from braid.core.health import READMIT_GOOD, Health
from braid.core.link import Link, LinkConfig
from braid.core.recovery import Item, SendHistory
from braid.core.scheduler import make_scheduler
from braid.core.sender import RECOVERY_ROOM_MAX, RESENT_ROOM, Framing, Sender
from braid.core.timers import NACK_HOLD_MARGIN, NACK_HOLD_RTTS, RECOVERY_ROOM_HOLD
from tests.helpers import udp_packet


class Wire:
    """What the sender handed to the socket, decoded."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, list[wire.Frame]]] = []

    def __call__(self, link: Link, frames: bytes, now: float, data: bool) -> int:
        self.sent.append((link.name, wire.decode_plaintext(wire.INNER_TS.pack(0) + frames)[1]))
        return len(self.sent) - 1

    def data(self) -> list[tuple[str, wire.Data]]:
        return [(name, f) for name, frames in self.sent for f in frames if isinstance(f, wire.Data)]


def _sender(*rates: float) -> tuple[Sender, list[Link], Wire]:
    links = []
    for i, rate in enumerate(rates):
        link = Link(LinkConfig(f"l{i}", i), 0.0)
        for k in range(READMIT_GOOD):
            link.health.on_heard(0.001 * k)
        link.pacer.rate = rate
        links.append(link)
    out = Wire()
    stats: dict[str, int] = dict.fromkeys(("tun_in", "queue_drops", "urgent", "fragmented", "too_big",
                                           "resent", "duplicated", "duplicated_bytes", "warmup_datagrams",
                                           "resend_copies", "resend_copy_bytes", "resent_kept"), 0)
    history = SendHistory([lk.id for lk in links])
    sender = Sender(links, make_scheduler("earliest-arrival"), Framing(False), history, stats, out,
                    lambda link, now, room: b"")
    return sender, links, out


def _drain(sender: Sender, link: Link, t: float) -> None:
    """Pump the link's queue from `t` until it is empty, at its pacing rate."""
    while sender.backlogged(link):
        sender.pump(link, t)
        t += 0.001


def test_a_packet_the_tunnel_refuses_takes_no_number():
    sender, links, out = _sender(1e6)
    links[0].est.restart_startup()
    t = 0.1
    for n in range(400):  # far more than 50 ms of a 1 Mbit/s link holds
        sender.on_tun_packet(udp_packet(n), t)
    assert sender.stats["queue_drops"] > 0
    admitted = 400 - sender.stats["queue_drops"]
    assert sender.next_seq == admitted  # every admitted packet has one number, no gap
    _drain(sender, links[0], t)
    seqs = [f.seq for _, f in out.data()]
    fseqs = [f.flow_seq for _, f in out.data()]
    assert seqs == list(range(admitted)) and fseqs == list(range(admitted))


def test_a_packet_larger_than_a_datagram_is_cut_into_numbered_fragments_of_one_flow_seq():
    sender, links, out = _sender(100e6, 100e6)
    sender.on_tun_packet(udp_packet(7, size=5000), 0.1)
    for link in links:
        sender.pump(link, 0.2)
    frags = sorted((f for _, f in out.data()), key=lambda f: f.seq)
    assert len(frags) == wire.fragments_needed(5000, sender._whole_max) >= 4
    assert [f.seq for f in frags] == list(range(len(frags)))
    assert {f.flow_seq for f in frags} == {0} and sender.stats["fragmented"] == 1
    last = len(frags) - 1
    assert [wire.fragment_tag(f.packet) for f in frags] == [(i, i == last) for i in range(last + 1)]
    assert b"".join(f.packet[1:] for f in frags) == udp_packet(7, size=5000)


def test_resends_leave_ahead_of_the_queue_in_their_own_order():
    sender, links, out = _sender(10e6)
    for n in range(5):
        sender.on_tun_packet(udp_packet(n), 0.1)
    links[0].pacer.clock = 1.0  # pacing holds the queue back
    sender.resend([Item(0, 100 + k, 1000 + k, bytes(1200), True) for k in range(3)], 0.1)
    _drain(sender, links[0], 1.0)
    seqs = [f.seq for _, f in out.data()]
    first = seqs.index(1000)
    assert seqs[first:first + 3] == [1000, 1001, 1002]
    assert seqs[first + 3:] and all(s < 5 for s in seqs[first + 3:])  # the queue waited behind
    assert sender.stats["resent"] == 3


def test_a_nacked_packet_resent_on_a_lossy_link_is_copied_on_another():
    sender, links, out = _sender(10e6, 10e6)
    links[0].path.loss, links[1].path.loss = 0.01, 0.0  # l0 is lossy
    links[0].path_delay, links[1].path_delay = 0.010, 0.030  # but so much nearer that resends take it
    items = [Item(0, 100 + k, 1000 + k, bytes(1200), True) for k in range(3)]
    sender.resend(items, 0.1, copies=True)
    for link in links:
        _drain(sender, link, 0.1)
    by_link = {name: [f.seq for n, f in out.data() if n == name] for name in ("l0", "l1")}
    assert by_link == {"l0": [1000, 1001, 1002], "l1": [1000, 1001, 1002]}, by_link
    assert sender.stats["resend_copies"] == 3 and sender.stats["resent"] == 3


def test_no_copy_of_a_resend_on_a_clean_link_nor_of_a_failed_links_packets():
    sender, links, out = _sender(10e6, 10e6)
    items = [Item(0, 100 + k, 1000 + k, bytes(1200), True) for k in range(3)]
    sender.resend(items, 0.1, copies=True)  # no link is lossy
    links[0].path.loss = links[1].path.loss = 0.05
    sender.resend([Item(0, 200, 2000, bytes(1200), True)], 0.1)  # failover: no copies
    for link in links:
        _drain(sender, link, 0.1)
    assert sorted(f.seq for _, f in out.data()) == [1000, 1001, 1002, 2000]
    assert sender.stats["resend_copies"] == 0


def test_a_stopped_links_queue_moves_to_the_others_in_order():
    sender, links, out = _sender(10e6, 10e6)
    links[0].pacer.clock = links[1].pacer.clock = 5.0  # nothing leaves yet
    for n in range(20):
        sender.on_tun_packet(udp_packet(n), 0.1)
    moved = sender.take_queue(links[0])
    assert moved and links[0].pacer.queued == 0 and not sender.backlogged(links[0])
    links[0].health.rx = Health.DOWN
    sender.requeue(moved, 0.1)
    _drain(sender, links[1], 5.0)
    carried = [f.seq for name, f in out.data() if name == "l1"]
    assert set(m[2] for m in moved) <= set(carried)


def _cycling_sender(rate: float, srtt: float) -> tuple[Sender, Link]:
    """A sender whose one link has measured its rate and round trip (out of startup)."""
    sender, links, _ = _sender(rate)
    links[0].est._set_mode(Mode.CYCLE)
    links[0].path.srtt = srtt
    return sender, links[0]


def _admitted(sender: Sender, t: float, count: int = 400) -> int:
    before = sender.stats["queue_drops"]
    for n in range(count):
        sender.on_tun_packet(udp_packet(n, size=1200), t)
    return count - (sender.stats["queue_drops"] - before)


def test_while_the_peer_recovers_a_loss_the_tunnel_queue_takes_its_burst_then_shrinks_back():
    """A NACK means the peer holds flows for up to NACK_HOLD_RTTS of its NACK links' round
    trip and then releases them at once: the queue makes room for that long a burst, for
    RECOVERY_ROOM_HOLD after the last NACK, never above RECOVERY_ROOM_MAX x queue_limit."""
    calm_sender, _ = _cycling_sender(2e6, 0.060)
    assert calm_sender.queue_room(1.0) == calm_sender.queue_limit
    calm = _admitted(calm_sender, 1.0)
    sender, link = _cycling_sender(2e6, 0.060)
    sender.note_recovery(1.0)
    hold = NACK_HOLD_RTTS * 0.060 + NACK_HOLD_MARGIN
    assert sender.queue_room(1.0) == hold
    burst = _admitted(sender, 1.0)
    assert burst >= calm * hold / sender.queue_limit * 0.8, (calm, burst)
    assert sender.queue_room(1.0 + RECOVERY_ROOM_HOLD - 0.1) == hold
    assert sender.queue_room(1.0 + RECOVERY_ROOM_HOLD + 0.1) == sender.queue_limit
    link.path.srtt = 2.0  # a GEO link's round trip: capped
    sender.note_recovery(20.0)
    assert sender.queue_room(20.0) == RECOVERY_ROOM_MAX * sender.queue_limit


def _tcp_segment(seq: int, size: int = 1200) -> bytes:
    """An IPv4 TCP segment of the site's (20 bytes of TCP header) starting at `seq`."""
    p = bytearray(udp_packet(0, size=size))
    p[9] = 6  # TCP
    p[24:28] = seq.to_bytes(4, "big")
    p[32] = 5 << 4
    return bytes(p)


def test_a_full_tunnel_queue_still_takes_the_inner_senders_retransmissions_up_to_a_bound():
    """New segments beyond the room are dropped (the inner flow slows down); a retransmission
    is taken until the queue holds RESENT_ROOM times the room, since lost again it costs its
    flow a retransmission timeout."""
    sender, link = _cycling_sender(2e6, 0.060)
    t, seq = 1.0, 0
    for _ in range(100):  # far more than 50 ms of 2 Mbit/s
        sender.on_tun_packet(_tcp_segment(seq), t)
        seq += 1160
    dropped = sender.stats["queue_drops"]
    assert dropped > 0
    queued = link.pacer.backlog_end(t) - t
    assert queued <= sender.queue_room(t) + 0.01
    sender.on_tun_packet(_tcp_segment(seq), t)  # new data: refused
    assert sender.stats["queue_drops"] == dropped + 1
    for old in range(0, 1160 * 40, 1160):  # retransmissions: taken up to the bound
        sender.on_tun_packet(_tcp_segment(old), t)
    kept = sender.stats["resent_kept"]
    assert kept > 0 and sender.stats["queue_drops"] > dropped + 1
    assert link.pacer.backlog_end(t) - t <= RESENT_ROOM * sender.queue_room(t) + 0.01
